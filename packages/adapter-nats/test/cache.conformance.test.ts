import { describeCacheStoreConformance, NATS, requireServer, uniqueName } from '@cluster/testkit';
import { describe } from 'vitest';
import { createNatsCacheStore } from '../src/cache/index.js';
import { deleteStreamsWith, NATS_URL } from './helpers/nats.js';

const available = await requireServer(NATS);

describe.skipIf(!available)('nats cache store', () => {
  describeCacheStoreConformance({
    name: 'nats',
    backend: () => {
      const subjectPrefix = uniqueName('t');
      return {
        create: () => createNatsCacheStore({ servers: NATS_URL, subjectPrefix }),
        cleanup: async () => {
          await deleteStreamsWith(subjectPrefix);
        },
      };
    },
  });
});
