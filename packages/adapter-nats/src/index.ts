export * from './connection.js';
export * from './pubsub/index.js';
export * from './subjects.js';
export * from './cache/index.js';
export * from './lock/index.js';
