export { createNatsCacheStore, type NatsCacheStoreOptions } from './store.js';
