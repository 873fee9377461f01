import { describeLockConformance, NATS, requireServer, uniqueName } from '@cluster/testkit';
import { describe } from 'vitest';
import { createNatsLock } from '../src/lock/index.js';
import { deleteStreamsWith, NATS_URL } from './helpers/nats.js';

const available = await requireServer(NATS);

describe.skipIf(!available)('nats lock', () => {
  describeLockConformance({
    name: 'nats',
    backend: () => {
      const subjectPrefix = uniqueName('t');
      return {
        create: () => createNatsLock({ servers: NATS_URL, subjectPrefix }),
        cleanup: async () => {
          await deleteStreamsWith(subjectPrefix);
        },
      };
    },
  });
});
