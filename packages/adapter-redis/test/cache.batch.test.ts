import { REDIS, requireServer, serverUrl, uniqueName } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisCacheStore } from '../src/cache/index.js';
import { deleteKeysUnder } from './helpers/redis-server.js';

const url = serverUrl(REDIS);
const available = await requireServer(REDIS);
const raw = new Redis(url, { lazyConnect: true });
const prefixes: string[] = [];
afterAll(async () => {
  for (const p of prefixes) await deleteKeysUnder(raw, p);
  raw.disconnect();
});

// Calls of one turn are merged (MGET, one SET script per ttl, MSET, UNLINK): every caller must still
// get its own answer, and every key its own value and ttl.
describe.skipIf(!available)('redis cache store: calls of one turn merged', () => {
  async function store() {
    const keyPrefix = uniqueName('cbatch');
    prefixes.push(keyPrefix);
    const s = createRedisCacheStore({ url, keyPrefix });
    await s.connect();
    return { s, keyPrefix };
  }

  it('gives every concurrent get, set and del its own result, with each set its own ttl', async () => {
    const { s, keyPrefix } = await store();
    const n = 250; // more than one merged call holds
    const key = (i: number) => `app:c:k${i}`;
    // Three ttls and no ttl in one turn: four groups, each with its own ttl.
    const ttlOf = (i: number) => [undefined, 60_000, 120_000, 180_000][i % 4];
    await Promise.all(Array.from({ length: n }, (_, i) => s.set(key(i), `v${i}`, ttlOf(i))));
    const got = await Promise.all(Array.from({ length: n + 5 }, (_, i) => s.get(key(i))));
    expect(got).toEqual([...Array.from({ length: n }, (_, i) => `v${i}`), ...Array(5).fill(undefined)]);
    for (const i of [0, 1, 2, 3, 4, 249]) {
      const pttl = await raw.pttl(`${keyPrefix}:${key(i)}`);
      const ttl = ttlOf(i);
      if (ttl === undefined) expect(pttl, `k${i}`).toBe(-1);
      else {
        expect(pttl, `k${i}`).toBeGreaterThan(ttl - 10_000);
        expect(pttl, `k${i}`).toBeLessThanOrEqual(ttl);
      }
    }
    // Deletes of every other key, and reads of all, in one turn.
    const dels = Array.from({ length: n / 2 }, (_, j) => s.del(key(2 * j)));
    await Promise.all(dels);
    const after = await Promise.all(Array.from({ length: n }, (_, i) => s.get(key(i))));
    expect(after).toEqual(Array.from({ length: n }, (_, i) => (i % 2 === 0 ? undefined : `v${i}`)));
    await s.close();
  });

  it('rejects the calls of a turn with a typed error once the store is closed', async () => {
    const { s } = await store();
    await s.close();
    const outcomes = await Promise.allSettled([
      s.get('app:c:a'),
      s.set('app:c:b', 'x', 1_000),
      s.del('app:c:c'),
    ]);
    for (const o of outcomes) {
      expect(o.status).toBe('rejected');
      expect(((o as PromiseRejectedResult).reason as { code?: string }).code).toBe('CLOSED');
    }
  });
});
