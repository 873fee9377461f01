import { describePubSubConformance, describeSyncConformance, uniqueName } from '@cluster/testkit';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe } from 'vitest';
import { createRedisPubSub } from '../src/pubsub/index.js';
import {
  type RedisClusterHandle,
  redisBinariesAvailable,
  startRedisCluster,
} from './helpers/redis-server.js';

// A private 3-master Redis Cluster: publishing through one node reaches subscribers on any node
// (classic cluster pub/sub is broadcast), with the subscriber a duplicate of the given Cluster client.
let cluster: RedisClusterHandle;
let client: Cluster;
beforeAll(async () => {
  if (!redisBinariesAvailable) return;
  cluster = await startRedisCluster(3);
  client = new Cluster(cluster.startupNodes, { redisOptions: { commandTimeout: 2_000 } });
  client.on('error', () => {});
}, 60_000);
afterAll(async () => {
  client?.disconnect();
  await cluster?.stop();
});

const backend = () => {
  const keyPrefix = uniqueName('t');
  return { create: () => createRedisPubSub({ client, keyPrefix }) };
};

describe.skipIf(!redisBinariesAvailable)('redis pub/sub on a Redis Cluster', () => {
  describePubSubConformance({ name: 'redis cluster', backend });
  describeSyncConformance({ name: 'redis cluster', backend });
});
