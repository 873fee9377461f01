import {
  describePubSubConformance,
  describeSyncConformance,
  REDIS,
  requireServer,
  serverUrl,
  uniqueName,
} from '@cluster/testkit';
import { describe } from 'vitest';
import { createRedisPubSub } from '../src/pubsub/index.js';

const url = serverUrl(REDIS);
const available = await requireServer(REDIS);

// Pub/sub keeps no keys: a unique keyPrefix per test keeps its channels apart from every other run.
const backend = () => {
  const keyPrefix = uniqueName('t');
  return { create: () => createRedisPubSub({ url, keyPrefix }) };
};

describe.skipIf(!available)('redis pub/sub', () => {
  describePubSubConformance({ name: 'redis', backend });
  describeSyncConformance({ name: 'redis', backend });
});
