export { computeBackoffDelay, type EventQueueBackoffOptions } from './backoff.js';
export {
  EventQueue,
  type EventQueueDeadLetter,
  type EventQueueDeadLetters,
  type EventQueueOptions,
  type EventQueuePublishOptions,
  type EventQueueSubscribeOptions,
  type EventQueueTaskContext,
} from './event-queue.js';
export { createMemoryQueue, type MemoryQueueOptions } from './memory.js';
export type * from './types.js';
export * from './validate.js';
