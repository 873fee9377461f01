export * from './memory.js';
export * from './pubsub-manager.js';
export type * from './types.js';
