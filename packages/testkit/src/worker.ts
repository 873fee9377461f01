// The `@cluster/testkit/worker` entry: what a forked worker process imports. It loads no vitest.
export { type QueueWorkerTask, runQueueWorker } from './queue-worker.js';
