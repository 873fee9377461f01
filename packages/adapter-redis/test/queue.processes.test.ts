// Forked workers SIGKILLed mid-task and respawned (the testkit's scenario): no task lost, duplicates counted.
import { fileURLToPath } from 'node:url';
import {
  buildForWorkers,
  describeQueueProcessKills,
  REDIS,
  requireServer,
  uniqueName,
  type WorkerBuild,
} from '@cluster/testkit';
import { afterAll, beforeAll } from 'vitest';
import { createRedisQueue } from '../src/index.js';
import { deleteKeys, REDIS_URL } from './helpers/queue-redis.js';

const available = await requireServer(REDIS);
const VISIBILITY = 1_000;
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
  name: 'redis',
  skip: !available,
  workerScript: fileURLToPath(new URL('./fixtures/queue-worker.mjs', import.meta.url)),
  visibilityTimeoutMs: VISIBILITY,
  run: () => {
    const keyPrefix = uniqueName('tqp');
    return {
      env: {
        QUEUE_MODULE: build!.moduleUrl,
        REDIS_URL,
        KEY_PREFIX: keyPrefix,
        VISIBILITY: String(VISIBILITY),
      },
      producer: () => createRedisQueue({ url: REDIS_URL, keyPrefix }),
      cleanup: () => deleteKeys(keyPrefix),
    };
  },
});
