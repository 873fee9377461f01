// Forked workers SIGKILLed mid-task and respawned (the testkit's scenario): no task lost, duplicates counted.
import { fileURLToPath } from 'node:url';
import {
  buildForWorkers,
  describeQueueProcessKills,
  RABBITMQ,
  requireServer,
  uniqueName,
  type WorkerBuild,
} from '@cluster/testkit';
import { afterAll, beforeAll } from 'vitest';
import { createRabbitQueue } from '../src/index.js';
import { AMQP_URL, TopologyTracker } from './helpers/rabbit.js';

const available = await requireServer(RABBITMQ);
/** The claim of a live but stuck worker; a killed worker's tasks come back at once (its connection closes). */
const VISIBILITY = 5_000;
let build: WorkerBuild | undefined;

beforeAll(async () => {
  if (available)
    build = await buildForWorkers({
      packageDir: fileURLToPath(new URL('..', import.meta.url)),
      entry: 'queue/index.ts',
    });
});
afterAll(() => build?.remove());

describeQueueProcessKills({
  name: 'rabbitmq',
  skip: !available,
  workerScript: fileURLToPath(new URL('./fixtures/queue-worker.mjs', import.meta.url)),
  visibilityTimeoutMs: VISIBILITY,
  run: () => {
    const prefix = uniqueName('tqp');
    const tracker = new TopologyTracker();
    return {
      env: { QUEUE_MODULE: build!.moduleUrl, AMQP_URL, PREFIX: prefix, VISIBILITY: String(VISIBILITY) },
      // The producer declares the same queues as the workers: its topology covers the cleanup.
      producer: () => tracker.track(createRabbitQueue({ url: AMQP_URL, prefix })),
      cleanup: () => tracker.cleanup(),
    };
  },
});
