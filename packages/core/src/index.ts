export * from './errors.js';
export * from './hub.js';
export * from './lock/index.js';
export * from './logger.js';
export * from './queue/index.js';
export * from './serializer.js';
