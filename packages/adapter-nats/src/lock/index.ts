export { createNatsLock, type NatsLockOptions } from './kv-lock.js';
