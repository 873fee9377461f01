import { describeLockConformance, REDIS, requireServer, uniqueName } from '@cluster/testkit';
import { describe } from 'vitest';
import { createRedisLock } from '../src/lock/index.js';
import { deleteKeysUnder, REDIS_URL } from './helpers/lock-redis.js';

const available = await requireServer(REDIS);

describe.skipIf(!available)('redis lock', () => {
  describeLockConformance({
    name: 'redis',
    backend: () => {
      const keyPrefix = uniqueName('t');
      return {
        create: () => createRedisLock({ url: REDIS_URL, keyPrefix }),
        cleanup: () => deleteKeysUnder(keyPrefix),
      };
    },
  });
});
