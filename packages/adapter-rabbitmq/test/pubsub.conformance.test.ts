import {
  describePubSubConformance,
  describeSyncConformance,
  RABBITMQ,
  requireServer,
  uniqueName,
} from '@cluster/testkit';
import { describe } from 'vitest';
import { createRabbitPubSub } from '../src/index.js';
import { AMQP_URL, TopologyTracker } from './helpers/rabbit.js';

const available = await requireServer(RABBITMQ);

// A unique prefix per test keeps its exchanges apart; the tracker deletes them afterwards.
const backend = () => {
  const prefix = uniqueName('t');
  const tracker = new TopologyTracker();
  return {
    create: () => tracker.track(createRabbitPubSub({ url: AMQP_URL, prefix })),
    cleanup: async () => {
      await tracker.cleanup();
    },
  };
};

describe.skipIf(!available)('rabbitmq pub/sub', () => {
  describePubSubConformance({ name: 'rabbitmq', backend });
  describeSyncConformance({ name: 'rabbitmq', backend });
});
