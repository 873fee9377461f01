import { CacheManager, type CacheStore, ClusterError } from '@cluster/core';
import { FaultProxy, REDIS, requireServer, serverUrl, uniqueName, waitFor } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createRedisCacheStore } from '../src/cache/index.js';
import { deleteKeysUnder, proxyTarget } from './helpers/redis-server.js';

const url = serverUrl(REDIS);
const available = await requireServer(REDIS);
const target = proxyTarget(url);
const raw = new Redis(url, { lazyConnect: true });
afterAll(() => raw.disconnect());

/** The deadline every call must meet: the command timeout, plus generous slack for a loaded 2-core box. */
const COMMAND_TIMEOUT = 500;
const SLACK = 1_500;
/** Settle times per fault, printed at the end (the report quotes them). */
const measured: Record<string, number[]> = {};

interface Settled {
  ok: boolean;
  error?: unknown;
  ms: number;
}

async function timed(what: string, op: () => Promise<unknown>): Promise<Settled> {
  const start = performance.now();
  try {
    await op();
    return { ok: true, ms: performance.now() - start };
  } catch (error) {
    return { ok: false, error, ms: performance.now() - start };
  } finally {
    (measured[what] ??= []).push(Math.round(performance.now() - start));
  }
}

/** Success, or a typed backend error: never a raw ioredis error, never a hang. */
function expectSettledWell(results: Settled[]): void {
  for (const r of results) {
    expect(r.ms).toBeLessThan(COMMAND_TIMEOUT + SLACK);
    if (!r.ok) {
      expect(ClusterError.is(r.error), String(r.error)).toBe(true);
      expect(['TIMEOUT', 'BACKEND_UNAVAILABLE']).toContain((r.error as ClusterError).code);
    }
  }
}

describe.skipIf(!available)('redis cache store under network faults', () => {
  let proxy: FaultProxy;
  let store: CacheStore;
  let manager: CacheManager;
  const keyPrefix = uniqueName('t');

  beforeEach(async () => {
    proxy = await FaultProxy.start({ target });
    store = createRedisCacheStore({
      url: `redis://${proxy.url}`,
      keyPrefix,
      commandTimeout: COMMAND_TIMEOUT,
    });
    manager = new CacheManager({
      appName: uniqueName('app'),
      stores: { redis: store },
      defaultStore: 'redis',
    });
    await manager.start();
  });

  afterEach(async () => {
    proxy.pass();
    await manager.close();
    await proxy.stop();
    await deleteKeysUnder(raw, keyPrefix);
  });

  afterAll(() => {
    const summary = Object.entries(measured).map(
      ([what, ms]) =>
        `${what}: max ${Math.max(...ms)} ms, median ${ms.sort((a, b) => a - b)[ms.length >> 1]} ms`,
    );
    console.log(
      `[cache fault settle times, commandTimeout ${COMMAND_TIMEOUT} ms]\n  ${summary.join('\n  ')}`,
    );
  });

  /** Gets and sets, many at once: each must settle by the deadline. */
  async function burst(what: string, cache: Awaited<ReturnType<CacheManager['createCache']>>) {
    return Promise.all([
      ...Array.from({ length: 10 }, (_, i) => timed(what, () => cache.set(`k${i}`, { i }))),
      ...Array.from({ length: 10 }, (_, i) => timed(what, () => cache.get(`k${i}`))),
      timed(what, () => cache.mget('k1', 'k2')),
      timed(what, () => cache.mset([['m', 1]], 10_000)),
      timed(what, () => cache.ttl('k1')),
      timed(what, () => cache.keys()),
    ]);
  }

  /** The same cache works again without any user action, and returns the right values. */
  async function recovers(cache: Awaited<ReturnType<CacheManager['createCache']>>) {
    const start = performance.now();
    await waitFor(
      async () => {
        await cache.set('after', { ok: true });
        return (await cache.get('after')) !== undefined;
      },
      { timeout: 15_000, interval: 50, message: 'cache works again after the fault' },
    );
    (measured['recovery after pass()'] ??= []).push(Math.round(performance.now() - start));
    // No reply mix-up after the fault: concurrent reads each see their own key.
    await Promise.all(Array.from({ length: 20 }, (_, i) => cache.set(`v${i}`, i)));
    expect(await Promise.all(Array.from({ length: 20 }, (_, i) => cache.get(`v${i}`)))).toEqual(
      Array.from({ length: 20 }, (_, i) => i),
    );
  }

  it('cut during get/set: every call settles, then the store works again', async () => {
    const cache = await manager.createCache({ name: 'c' });
    await cache.set('warm', 1);
    const running = burst('cut', cache);
    proxy.cut();
    expectSettledWell(await running);
    // Calls issued right after the cut, while ioredis reconnects.
    proxy.cut();
    expectSettledWell(await burst('cut (during reconnect)', cache));
    await recovers(cache);
  });

  it('blackhole during get/set: every call times out by its deadline, then the store works again', async () => {
    const cache = await manager.createCache({ name: 'c' });
    await cache.set('warm', 1);
    proxy.blackhole();
    const results = await burst('blackhole', cache);
    expectSettledWell(results);
    expect(results.every((r) => !r.ok)).toBe(true);
    // Still blackholed: the reconnect attempts are swallowed too, calls keep their deadline.
    expectSettledWell(await burst('blackhole (reconnecting)', cache));
    proxy.pass();
    await recovers(cache);
  });

  it('refused reconnects after a cut: calls fail by their deadline, then the store works again', async () => {
    const cache = await manager.createCache({ name: 'c' });
    await cache.set('warm', 1);
    proxy.refuse();
    proxy.cut();
    const results = await burst('refuse', cache);
    expectSettledWell(results);
    expect(results.every((r) => !r.ok)).toBe(true);
    proxy.pass();
    await recovers(cache);
  });

  it('delay below the deadline: calls succeed', async () => {
    const cache = await manager.createCache({ name: 'c' });
    proxy.delay(50);
    const results = await burst('delay 50 ms', cache);
    expectSettledWell(results);
    expect(results.every((r) => r.ok)).toBe(true);
  });

  it('reset() under a fault settles with a typed error and clears everything once the server is back', async () => {
    const cache = await manager.createCache({ name: 'c' });
    await cache.mset(Array.from({ length: 50 }, (_, i) => [`r${i}`, i] as const));
    proxy.blackhole();
    const result = await timed('reset under blackhole', () => cache.reset());
    expectSettledWell([result]);
    proxy.pass();
    await waitFor(
      async () => {
        await cache.reset();
        return (await cache.keys()).length === 0;
      },
      { timeout: 15_000, interval: 50 },
    );
  });
});
