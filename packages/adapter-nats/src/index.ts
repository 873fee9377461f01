export * from './adapters.js';
export * from './cache/index.js';
export * from './connection.js';
export * from './lock/index.js';
export * from './pubsub/index.js';
export * from './queue/index.js';
export * from './subjects.js';
