import { CacheManager } from '@cluster/core';
import { describeCacheStoreConformance, uniqueName } from '@cluster/testkit';
import { describe, expect, it } from 'vitest';
import { createRedisCacheStore } from '../src/cache/index.js';
import { redisBinariesAvailable, usePrivateRedisCluster } from './helpers/redis-server.js';

// A private 3-master Redis Cluster (own redis-server processes on spare ports): the cache store's
// cluster paths (per-key multi-key calls, SCAN of every master) against the real thing.
const privateCluster = usePrivateRedisCluster();
const client = () => privateCluster.current()!.client;

describe.skipIf(!redisBinariesAvailable)('redis cache store on a Redis Cluster', () => {
  describeCacheStoreConformance({
    name: 'redis cluster',
    backend: () => {
      const keyPrefix = uniqueName('t');
      return { create: () => createRedisCacheStore({ client: client(), keyPrefix }) };
    },
  });

  it('spreads one cache over several masters, and keys() / reset() reach all of them', async () => {
    const keyPrefix = uniqueName('t');
    const store = createRedisCacheStore({ client: client(), keyPrefix });
    const manager = new CacheManager({ appName: 'shop', stores: { redis: store }, defaultStore: 'redis' });
    await manager.start();
    const cache = await manager.createCache({ name: 'c' });
    const keys = Array.from({ length: 60 }, (_, i) => `k${i}`);
    await cache.mset(
      keys.map((k) => [k, k] as const),
      60_000,
    );
    const perNode = await Promise.all(
      client()
        .nodes('master')
        .map(async (node) => (await node.scan('0', 'MATCH', `${keyPrefix}:*`, 'COUNT', 1000))[1].length),
    );
    expect(perNode.filter((n) => n > 0).length).toBeGreaterThan(1);
    expect((await cache.keys()).sort()).toEqual([...keys].sort());
    expect(await cache.mget(keys)).toEqual(keys);
    await cache.mdel(keys.slice(0, 10));
    expect((await cache.keys()).length).toBe(50);
    await cache.reset();
    expect(await cache.keys()).toEqual([]);
    await manager.close();
    // The given Cluster client is not closed by the store.
    expect(client().status).toBe('ready');
  });
});
