import { describeQueueConformance, REDIS, requireServer, uniqueName } from '@cluster/testkit';
import { describe } from 'vitest';
import { createRedisQueue } from '../src/index.js';
import { deleteKeys, REDIS_URL } from './helpers/queue-redis.js';

const available = await requireServer(REDIS);

describe.skipIf(!available)('redis queue', () => {
  describeQueueConformance({
    name: 'redis',
    // Claims expire after 1 s and are reclaimed at a quarter of that, plus one read.
    redeliveryWithinMs: 2_500,
    timingToleranceMs: 400,
    backend: () => {
      const keyPrefix = uniqueName('tq');
      return {
        create: () => createRedisQueue({ url: REDIS_URL, keyPrefix, visibilityTimeout: 1_000 }),
        cleanup: async () => {
          await deleteKeys(keyPrefix);
        },
      };
    },
  });
});
