export { createRedisLock, type RedisLockOptions } from './redis-lock.js';
