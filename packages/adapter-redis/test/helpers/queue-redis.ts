/** Shared bits of the queue tests: the server URL, and key cleanup strictly under a test's prefix. */
import { REDIS, serverUrl } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { escapeGlob } from '../../src/keys.js';

export const REDIS_URL = serverUrl(REDIS);

/** Deletes every key under `keyPrefix:` (SCAN + UNLINK, glob characters escaped); returns how many. */
export async function deleteKeys(keyPrefix: string, url = REDIS_URL): Promise<number> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, commandTimeout: 5_000 });
  client.on('error', () => {});
  try {
    await client.connect();
    let cursor = '0';
    let deleted = 0;
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${escapeGlob(keyPrefix)}:*`, 'COUNT', 500);
      cursor = next;
      if (keys.length > 0) deleted += await client.unlink(...keys);
    } while (cursor !== '0');
    return deleted;
  } finally {
    client.disconnect();
  }
}
