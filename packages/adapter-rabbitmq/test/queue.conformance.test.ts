import { describeQueueConformance, RABBITMQ, requireServer, uniqueName } from '@cluster/testkit';
import { describe } from 'vitest';
import { createRabbitQueue } from '../src/index.js';
import { AMQP_URL, TopologyTracker } from './helpers/rabbit.js';

const available = await requireServer(RABBITMQ);

describe.skipIf(!available)('rabbitmq queue', () => {
  describeQueueConformance({
    name: 'rabbitmq',
    // Claims expire after 1 s and are swept every 200 ms; then the broker redelivers.
    redeliveryWithinMs: 3_000,
    timingToleranceMs: 400,
    backend: () => {
      const prefix = uniqueName('tq');
      const tracker = new TopologyTracker();
      return {
        create: () => tracker.track(createRabbitQueue({ url: AMQP_URL, prefix, visibilityTimeout: 1_000 })),
        cleanup: async () => {
          await tracker.cleanup();
        },
      };
    },
  });
});
