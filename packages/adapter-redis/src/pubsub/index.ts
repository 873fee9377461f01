export { createRedisPubSub, type RedisPubSubOptions } from './adapter.js';
