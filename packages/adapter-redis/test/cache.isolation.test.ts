import { type Cluster, createCluster } from '@cluster/core';
import { REDIS, requireServer, serverUrl, uniqueName } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createRedisCacheStore } from '../src/cache/index.js';
import { deleteKeysUnder } from './helpers/redis-server.js';

const url = serverUrl(REDIS);
const available = await requireServer(REDIS);
const raw = new Redis(url, { lazyConnect: true });
afterAll(() => raw.disconnect());

/** Every key on the server under `prefix`, read with a raw client. */
async function rawKeys(prefix: string): Promise<string[]> {
  const pattern = `${prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}*`;
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await raw.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out.sort();
}

describe.skipIf(!available)('two apps on one Redis: no key crosses', () => {
  const prefixes: string[] = [];
  const apps: Cluster[] = [];
  afterEach(async () => {
    for (const app of apps.splice(0).reverse()) await app.stop();
    for (const p of prefixes.splice(0)) await deleteKeysUnder(raw, p);
  });

  async function app(name: string, keyPrefix: string): Promise<Cluster> {
    const a = createCluster({
      name,
      cache: { stores: { redis: createRedisCacheStore({ url, keyPrefix }) }, defaultStore: 'redis' },
    });
    apps.push(a);
    await a.start();
    return a;
  }

  it('apps with wildcard and prefix-sharing names keep their keys; reset() of one leaves the others', async () => {
    const keyPrefix = uniqueName('t');
    prefixes.push(keyPrefix);
    const base = uniqueName('a');
    const names = [`${base}*`, base, `${base}?`, `${base}x`, `${base}[x]`, `${base}:b`, `${base}\\`];
    const all = await Promise.all(names.map((n) => app(n, keyPrefix)));
    for (const a of all) {
      await a.cache.set('k', a.name);
      await a.cache.set('*', a.name);
      const users = await a.cacheManager.createCache({ name: 'users' });
      await users.set('u1', a.name);
    }
    // Raw layout: every key of an app sits under `<keyPrefix>:<escaped app>:`, nowhere else.
    expect(await rawKeys(`${keyPrefix}:`)).toHaveLength(names.length * 3);
    expect(await rawKeys(`${keyPrefix}:${base}%3Ab:`)).toEqual(
      [
        `${keyPrefix}:${base}%3Ab:default:*`,
        `${keyPrefix}:${base}%3Ab:default:k`,
        `${keyPrefix}:${base}%3Ab:users:u1`,
      ].sort(),
    );

    const [star, ...others] = all;
    await star!.cache.reset();
    expect(await star!.cache.keys()).toEqual([]);
    expect(await star!.cacheManager.getCache('users').get('u1')).toBe(star!.name);
    for (const a of others) {
      expect(await a.cache.get('k'), `app ${a.name} lost its key`).toBe(a.name);
      expect((await a.cache.keys()).sort()).toEqual(['*', 'k']);
      expect(await a.cacheManager.getCache('users').keys()).toEqual(['u1']);
    }
    // The plain-named app's reset leaves the look-alikes too.
    const plain = all[1]!;
    await plain.cache.reset();
    for (const a of all.filter((x) => x !== plain && x !== star))
      expect(await a.cache.get('*'), `app ${a.name}`).toBe(a.name);
  });

  it('same app name under different keyPrefixes (including glob characters) stays apart', async () => {
    const base = uniqueName('p');
    const keyPrefixes = [`${base}*`, base, `${base}x`, `${base}?`];
    prefixes.push(...keyPrefixes);
    const all = await Promise.all(keyPrefixes.map((p) => app('shop', p)));
    for (const [i, a] of all.entries()) await a.cache.set('k', i);
    await all[0]!.cache.reset();
    expect(await all[0]!.cache.get('k')).toBeUndefined();
    for (const [i, a] of all.entries()) if (i > 0) expect(await a.cache.get('k')).toBe(i);
    for (const [i, a] of all.entries()) if (i > 0) expect(await a.cache.keys()).toEqual(['k']);
  });

  it('an app named with a leading brace never reaches the hash-tagged keys of the queue and lock', async () => {
    const keyPrefix = uniqueName('t');
    prefixes.push(keyPrefix);
    const shop = uniqueName('shop');
    // What the queue of app `shop` keeps for its channel `emails` (taggedKey layout), stood in by a raw key.
    const queueKey = `${keyPrefix}:{${shop}:emails}:q:stream`;
    await raw.set(queueKey, 'queue data');
    const tricky = await app(`{${shop}`, keyPrefix);
    const cache = await tricky.cacheManager.createCache({ name: 'emails}' });
    await cache.set('q:stream', 'cache data');
    expect(await raw.get(queueKey)).toBe('queue data');
    expect(await rawKeys(`${keyPrefix}:%7B${shop}:`)).toEqual([`${keyPrefix}:%7B${shop}:emails}:q:stream`]);
    expect(await cache.keys()).toEqual(['q:stream']);
    expect(await cache.get('q:stream')).toBe('cache data');
    await cache.reset();
    expect(await cache.keys()).toEqual([]);
    expect(await raw.get(queueKey), 'reset() of the look-alike cache left the queue key').toBe('queue data');
  });
});
