export { createRedisQueue, type RedisQueueOptions } from './adapter.js';
