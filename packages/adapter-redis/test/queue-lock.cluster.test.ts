import { describeLockConformance, describeQueueConformance, uniqueName } from '@cluster/testkit';
import { describe } from 'vitest';
import { createRedisLock } from '../src/lock/index.js';
import { createRedisQueue } from '../src/queue/index.js';
import { redisBinariesAvailable, usePrivateRedisCluster } from './helpers/redis-server.js';

// The queue's streams and scripts and the lock's scripts and wake channel on a private 3-master
// Redis Cluster: every multi-key call must stay in one slot, and blocking reads and subscriptions
// must work on connections duplicated from a Cluster client.
const privateCluster = usePrivateRedisCluster();
const client = () => privateCluster.current()!.client;

describe.skipIf(!redisBinariesAvailable)('redis queue and lock on a Redis Cluster', () => {
  describeQueueConformance({
    name: 'redis cluster',
    redeliveryWithinMs: 2_500,
    timingToleranceMs: 400,
    backend: () => {
      const keyPrefix = uniqueName('tq');
      return { create: () => createRedisQueue({ client: client(), keyPrefix, visibilityTimeout: 1_000 }) };
    },
  });
  describeLockConformance({
    name: 'redis cluster',
    backend: () => {
      const keyPrefix = uniqueName('tl');
      return { create: () => createRedisLock({ client: client(), keyPrefix }) };
    },
  });
});
