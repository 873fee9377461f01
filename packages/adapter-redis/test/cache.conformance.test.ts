import { describeCacheStoreConformance, REDIS, requireServer, serverUrl, uniqueName } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { afterAll, describe } from 'vitest';
import { createRedisCacheStore } from '../src/cache/index.js';
import { deleteKeysUnder } from './helpers/redis-server.js';

const url = serverUrl(REDIS);
const available = await requireServer(REDIS);
const raw = new Redis(url, { lazyConnect: true });
afterAll(() => raw.disconnect());

describe.skipIf(!available)('redis cache store', () => {
  describeCacheStoreConformance({
    name: 'redis',
    backend: () => {
      const keyPrefix = uniqueName('t');
      return {
        create: () => createRedisCacheStore({ url, keyPrefix }),
        cleanup: () => deleteKeysUnder(raw, keyPrefix),
      };
    },
  });
});
