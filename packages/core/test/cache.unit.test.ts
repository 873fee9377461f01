import { ClusterError, createMemoryCacheStore, createMemoryHub } from '@cluster/core';
import { startInstances } from '@cluster/testkit';
import { describe, expect, it } from 'vitest';

describe('cache manager and memory store', () => {
  it('computes once per cold key across 4 instances with singleFlight: cluster', async () => {
    const hub = createMemoryHub();
    const cluster = await startInstances(4, () => ({
      name: 'shop',
      hub,
      cache: {
        stores: { shared: createMemoryCacheStore({ hub }) },
        defaultStore: 'shared',
        singleFlight: 'cluster',
      },
    }));
    try {
      const computes = new Map<string, number>();
      const keys = Array.from({ length: 20 }, (_, i) => `cold-${i}`);
      await Promise.all(
        cluster.apps.flatMap((app) =>
          keys.flatMap((key) =>
            Array.from({ length: 25 }, () =>
              app.cache.wrap(key, async () => {
                computes.set(key, (computes.get(key) ?? 0) + 1);
                await new Promise((r) => setTimeout(r, 5));
                return key.toUpperCase();
              }),
            ),
          ),
        ),
      );
      for (const key of keys) expect(computes.get(key), key).toBe(1);
      const long = 'k'.repeat(1000);
      expect(await cluster.apps[0]!.cache.wrap(long, async () => 'long')).toBe('long');
      expect(await cluster.apps[3]!.cache.get('cold-7')).toBe('COLD-7');
    } finally {
      await cluster.stop();
    }
  });

  it('computes once per instance without cluster single-flight (the default)', async () => {
    const hub = createMemoryHub();
    const cluster = await startInstances(2, () => ({
      name: 'shop',
      hub,
      cache: { stores: { shared: createMemoryCacheStore({ hub }) }, defaultStore: 'shared' },
    }));
    try {
      let computes = 0;
      const fn = async () => {
        computes += 1;
        await new Promise((r) => setTimeout(r, 5));
        return 1;
      };
      await Promise.all(cluster.apps.flatMap((app) => [app.cache.wrap('k', fn), app.cache.wrap('k', fn)]));
      expect(computes).toBeGreaterThanOrEqual(1);
      expect(computes).toBeLessThanOrEqual(2);
    } finally {
      await cluster.stop();
    }
  });

  it('evicts the least recently used entry past max', async () => {
    const store = createMemoryCacheStore({ max: 3 });
    await store.set('a', '1');
    await store.set('b', '2');
    await store.set('c', '3');
    await store.get('a');
    await store.set('d', '4');
    expect(await store.mget(['a', 'b', 'c', 'd'])).toEqual(['1', undefined, '3', '4']);
    await store.close();
    expect(ClusterError.is(await store.get('a').catch((e) => e), 'CLOSED')).toBe(true);
  });

  it('gives each built-in memory cache its own store, and finds caches by name', async () => {
    const hub = createMemoryHub();
    const cluster = await startInstances(1, () => ({ name: 'shop', hub }));
    try {
      const app = cluster.apps[0]!;
      const a = await app.cacheManager.createCache({ name: 'a', max: 2 });
      const b = await app.cacheManager.createCache({ name: 'b' });
      await a.set('k', 'a');
      await b.set('k', 'b');
      expect(await a.get('k')).toBe('a');
      expect(app.cacheManager.getCache('b')).toBe(b);
      expect(() => app.cacheManager.getCache('nope')).toThrow(ClusterError);
      await app.cacheManager.flushAll();
      expect(await a.get('k')).toBeUndefined();
      expect(await b.get('k')).toBeUndefined();
      expect(a.key('x')).toBe('shop:a:x');
    } finally {
      await cluster.stop();
    }
  });

  it('escapes separators so namespaces never overlap', async () => {
    const hub = createMemoryHub();
    const store = createMemoryCacheStore({ hub });
    const cluster = await startInstances(1, () => ({ name: 'a:b', hub, cache: { stores: { s: store } } }));
    try {
      const cache = await cluster.apps[0]!.cacheManager.createCache({ name: 'c', store: 's', prefix: 'p:q' });
      expect(cache.key('k:1')).toBe('a%3Ab:p%3Aq:k:1');
    } finally {
      await cluster.stop();
    }
  });
});
