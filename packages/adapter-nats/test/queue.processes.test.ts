// Forked workers SIGKILLed mid-task and respawned (the testkit's scenario): no task lost, duplicates counted.
import { fileURLToPath } from 'node:url';
import {
  buildForWorkers,
  describeQueueProcessKills,
  NATS,
  requireServer,
  uniqueName,
  type WorkerBuild,
} from '@cluster/testkit';
import { afterAll, beforeAll } from 'vitest';
import { createNatsQueue } from '../src/index.js';
import { deleteStreamsWith, NATS_URL } from './helpers/nats.js';

const available = await requireServer(NATS);
const VISIBILITY = 1_000;
let build: WorkerBuild | undefined;

beforeAll(async () => {
  if (available) build = await buildForWorkers({ packageDir: fileURLToPath(new URL('..', import.meta.url)) });
});
afterAll(() => build?.remove());

describeQueueProcessKills({
  name: 'nats',
  skip: !available,
  workerScript: fileURLToPath(new URL('./fixtures/queue-worker.mjs', import.meta.url)),
  visibilityTimeoutMs: VISIBILITY,
  run: () => {
    const subjectPrefix = uniqueName('tqp');
    return {
      env: {
        ADAPTER_MODULE: build!.moduleUrl,
        NATS_URL,
        SUBJECT_PREFIX: subjectPrefix,
        VISIBILITY: String(VISIBILITY),
      },
      producer: () => createNatsQueue({ servers: NATS_URL, subjectPrefix }),
      cleanup: () => deleteStreamsWith(subjectPrefix),
    };
  },
});
