export { createNatsQueue, type NatsQueueOptions } from './adapter.js';
