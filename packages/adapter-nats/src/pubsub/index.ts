export { createNatsPubSub, type NatsPubSubOptions } from './adapter.js';
