export { createRedisCacheStore, type RedisCacheStoreOptions } from './store.js';
