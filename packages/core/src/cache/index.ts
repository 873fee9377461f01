export * from './cache.js';
export * from './cache-manager.js';
export * from './memory.js';
export type * from './types.js';
