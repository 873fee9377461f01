import { REDIS, serverUrl } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { escapeGlob } from '../../src/keys.js';

export const REDIS_URL = serverUrl(REDIS);

/** A plain client straight to the server (no proxy), for checking what the adapter left behind. */
export function directClient(url = REDIS_URL): Redis {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, commandTimeout: 5_000 });
  client.on('error', () => {});
  return client;
}

/** Every key under `keyPrefix:` (SCAN with the prefix's glob characters escaped). */
export async function keysUnder(client: Redis, keyPrefix: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', `${escapeGlob(keyPrefix)}:*`, 'COUNT', 500);
    cursor = next;
    found.push(...batch);
  } while (cursor !== '0');
  return found;
}

/** Deletes every key under `keyPrefix:`; never FLUSHDB. */
export async function deleteKeysUnder(keyPrefix: string, url = REDIS_URL): Promise<void> {
  const client = directClient(url);
  try {
    const keys = await keysUnder(client, keyPrefix);
    if (keys.length > 0) await client.unlink(...keys);
  } finally {
    client.disconnect();
  }
}
