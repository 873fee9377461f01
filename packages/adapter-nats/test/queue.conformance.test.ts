import { describeQueueConformance, NATS, requireServer, uniqueName } from '@cluster/testkit';
import { describe } from 'vitest';
import { createNatsQueue } from '../src/queue/index.js';
import { deleteStreamsWith, NATS_URL } from './helpers/nats.js';

const available = await requireServer(NATS);

describe.skipIf(!available)('nats queue', () => {
  describeQueueConformance({
    name: 'nats',
    // ack_wait is 1 s here; the server redelivers on its next check after it.
    redeliveryWithinMs: 3_000,
    timingToleranceMs: 400,
    backend: () => {
      const subjectPrefix = uniqueName('tq');
      return {
        create: () => createNatsQueue({ servers: NATS_URL, subjectPrefix, visibilityTimeout: 1_000 }),
        cleanup: async () => {
          await deleteStreamsWith(subjectPrefix);
        },
      };
    },
  });
});
