import {
  describePubSubConformance,
  describeSyncConformance,
  NATS,
  requireServer,
  serverUrl,
  uniqueName,
} from '@cluster/testkit';
import { describe } from 'vitest';
import { createNatsPubSub } from '../src/pubsub/index.js';

const servers = serverUrl(NATS);
const available = await requireServer(NATS);

// Pub/sub keeps no state on the server: a unique subject prefix per test keeps runs apart.
const backend = () => {
  const subjectPrefix = uniqueName('t');
  return { create: () => createNatsPubSub({ servers, subjectPrefix }) };
};

describe.skipIf(!available)('nats pub/sub', () => {
  describePubSubConformance({ name: 'nats', backend });
  describeSyncConformance({ name: 'nats', backend });
});
