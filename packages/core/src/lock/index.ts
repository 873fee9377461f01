export {
  type ExclusiveFn,
  type Lock,
  type LockContext,
  LockManager,
  type LockManagerOptions,
  type LockOptions,
  type Releaser,
} from './lock-manager.js';
export { createMemoryLock, type MemoryLockOptions } from './memory.js';
export type * from './types.js';
