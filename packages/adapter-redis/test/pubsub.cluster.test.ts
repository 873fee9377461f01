import { describePubSubConformance, describeSyncConformance, uniqueName } from '@cluster/testkit';
import { describe } from 'vitest';
import { createRedisPubSub } from '../src/pubsub/index.js';
import { redisBinariesAvailable, usePrivateRedisCluster } from './helpers/redis-server.js';

// A private 3-master Redis Cluster: publishing through one node reaches subscribers on any node
// (classic cluster pub/sub is broadcast), with the subscriber a duplicate of the given Cluster client.
const privateCluster = usePrivateRedisCluster();
const client = () => privateCluster.current()!.client;

const backend = () => {
  const keyPrefix = uniqueName('t');
  return { create: () => createRedisPubSub({ client: client(), keyPrefix }) };
};

describe.skipIf(!redisBinariesAvailable)('redis pub/sub on a Redis Cluster', () => {
  describePubSubConformance({ name: 'redis cluster', backend });
  describeSyncConformance({ name: 'redis cluster', backend });
});
