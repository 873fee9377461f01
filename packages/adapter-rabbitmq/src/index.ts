export * from './adapters.js';
export * from './connection.js';
export * from './pubsub/index.js';
export * from './queue/index.js';
