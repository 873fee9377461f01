import { CacheManager, type CacheStore, ClusterError } from '@cluster/core';
import { afterEach, describe, expect, it } from 'vitest';
import { type Backend, type SuiteOptions, uniqueName } from './backend.js';
import { waitFor } from './wait.js';

/**
 * The cache store conformance suite. Each test gets a fresh backend; stores from one backend share
 * data (so two apps or two caches on one store can be checked for isolation).
 */
export function describeCacheStoreConformance(options: SuiteOptions<CacheStore>): void {
  describe(`cache store conformance: ${options.name}`, () => {
    let backend: Backend<CacheStore> | undefined;
    const managers: CacheManager[] = [];

    async function manager(appName = uniqueName('app')): Promise<CacheManager> {
      backend ??= await options.backend();
      const store = await backend.create();
      const m = new CacheManager({ appName, stores: { s: store }, defaultStore: 's' });
      managers.push(m);
      await m.start();
      return m;
    }

    afterEach(async () => {
      for (const m of managers.splice(0)) await m.close();
      await backend?.cleanup?.();
      backend = undefined;
    });

    it('round-trips values and treats only undefined as a miss', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      expect(await cache.get('nope')).toBeUndefined();
      for (const [key, value] of [
        ['null', null],
        ['zero', 0],
        ['empty', ''],
        ['false', false],
        ['obj', { a: [1, 'two', { three: 3 }] }],
      ] as const) {
        await cache.set(key, value);
        expect(await cache.get(key)).toEqual(value);
      }
      await cache.del('zero');
      expect(await cache.get('zero')).toBeUndefined();
    });

    it('expires entries after their ttl in ms and reports ttl()', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      // Taken before the set: the entry's ttl starts at or after this moment, so it cannot be gone
      // sooner than 300 ms after it (a time taken after later calls would be a moving bound).
      const setAt = Date.now();
      await cache.set('short', 'v', 300);
      await cache.set('forever', 'v');
      const remaining = await cache.ttl('short');
      expect(remaining).toBeGreaterThan(0);
      expect(remaining).toBeLessThanOrEqual(300);
      expect(await cache.ttl('forever')).toBe(Number.POSITIVE_INFINITY);
      expect(await cache.ttl('missing')).toBeUndefined();
      expect(await cache.get('short')).toBe('v');
      await waitFor(async () => (await cache.get('short')) === undefined, { timeout: 5_000 });
      expect(Date.now() - setAt).toBeGreaterThanOrEqual(300 - 5);
      expect(await cache.get('forever')).toBe('v');
    });

    it('applies a cache-level default ttl', async () => {
      const cache = await (await manager()).createCache({ name: 'c', ttl: 60_000 });
      await cache.set('k', 1);
      const remaining = await cache.ttl('k');
      expect(remaining).toBeGreaterThan(50_000);
      expect(remaining).toBeLessThanOrEqual(60_000);
    });

    it('supports mget / mset / mdel in both call shapes', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      await cache.mset([
        ['a', 1],
        ['b', null],
        ['c', { c: true }],
      ]);
      expect(await cache.mget('a', 'b', 'c', 'd')).toEqual([1, null, { c: true }, undefined]);
      expect(await cache.mget(['c', 'a'])).toEqual([{ c: true }, 1]);
      await cache.mdel('a', 'b');
      expect(await cache.mget(['a', 'b', 'c'])).toEqual([undefined, undefined, { c: true }]);
      await cache.mdel(['c']);
      expect(await cache.get('c')).toBeUndefined();
      await cache.mset([['t', 1]], 200);
      expect(await cache.ttl('t')).toBeLessThanOrEqual(200);
    });

    it('lists only its own keys, without prefix', async () => {
      const m = await manager();
      const other = await manager();
      const auth = await m.createCache({ name: 'auth', prefix: 'auth' });
      const authx = await m.createCache({ name: 'authx', prefix: 'auth:x' });
      const foreign = await other.createCache({ name: 'auth', prefix: 'auth' });
      await auth.set('token:config', 1);
      await auth.set('b', 2);
      await authx.set('c', 3);
      await foreign.set('d', 4);
      expect((await auth.keys()).sort()).toEqual(['b', 'token:config']);
      expect(await authx.keys()).toEqual(['c']);
      expect(await foreign.keys()).toEqual(['d']);
    });

    it('reset() clears this cache only, also when names hold glob characters', async () => {
      const names = ['x*', 'x?', 'x[ab]', 'x\\', 'xa', 'xb', 'x', 'x:y'];
      const m = await manager('app*');
      const other = await manager('app?');
      const caches = await Promise.all(names.map((n) => m.createCache({ name: n })));
      const foreign = await other.createCache({ name: 'x*' });
      for (const c of [...caches, foreign]) {
        await c.set('k', c.name);
        await c.set('*', c.name);
      }
      const target = caches[0]!; // 'x*'
      await target.reset();
      expect(await target.keys()).toEqual([]);
      for (const c of [...caches.slice(1), foreign]) {
        expect(await c.get('k'), `cache ${c.name} lost its key`).toBe(c.name);
        expect(await c.get('*')).toBe(c.name);
      }
    });

    it('wrap computes once for 100 concurrent callers on a cold key', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      let computes = 0;
      const results = await Promise.all(
        Array.from({ length: 100 }, () =>
          cache.wrap('cold', async () => {
            computes += 1;
            await new Promise((r) => setTimeout(r, 20));
            return { v: 42 };
          }),
        ),
      );
      expect(computes).toBe(1);
      for (const r of results) expect(r).toEqual({ v: 42 });
      expect(await cache.get('cold')).toEqual({ v: 42 });
      expect(await cache.wrap('cold', async () => ({ v: 0 }))).toEqual({ v: 42 });
    });

    it('wrap caches falsy results, and does not cache undefined', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      for (const value of [null, 0, '', false]) {
        let calls = 0;
        const key = `k${String(value)}`;
        const fn = async () => {
          calls += 1;
          return value;
        };
        expect(await cache.wrap(key, fn)).toBe(value);
        expect(await cache.wrap(key, fn)).toBe(value);
        expect(calls).toBe(1);
      }
      let calls = 0;
      const none = async () => {
        calls += 1;
        return undefined;
      };
      await cache.wrap('u', none);
      await cache.wrap('u', none);
      expect(calls).toBe(2);
    });

    it('wrap does not cache a thrown error and hands it to every waiter', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      let computes = 0;
      const boom = new Error('boom');
      const settled = await Promise.allSettled(
        Array.from({ length: 20 }, () =>
          cache.wrap('k', async () => {
            computes += 1;
            await new Promise((r) => setTimeout(r, 10));
            throw boom;
          }),
        ),
      );
      expect(computes).toBe(1);
      for (const s of settled) expect(s).toEqual({ status: 'rejected', reason: boom });
      expect(await cache.get('k')).toBeUndefined();
      expect(await cache.wrap('k', async () => 'ok')).toBe('ok');
    });

    it('a value deleted while a wrap fill runs is not brought back by that fill', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      let started!: () => void;
      const computing = new Promise<void>((r) => {
        started = r;
      });
      const fill = cache.wrap('k', async () => {
        started();
        await gate;
        return 'stale';
      });
      await computing;
      await cache.del('k');
      release();
      expect(await fill).toBe('stale');
      expect(await cache.get('k')).toBeUndefined();

      // Same for reset() and for an explicit set() during the fill.
      let again!: () => void;
      const gate2 = new Promise<void>((r) => {
        again = r;
      });
      const fill2 = cache.wrap('k', async () => {
        await gate2;
        return 'stale';
      });
      await new Promise((r) => setTimeout(r, 0));
      await cache.set('k', 'fresh');
      again();
      await fill2;
      expect(await cache.get('k')).toBe('fresh');
    });

    it('wrapWithCondition honours useCache and isCacheable', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      let calls = 0;
      const fn = async () => {
        calls += 1;
        return calls;
      };
      expect(await cache.wrapWithCondition('a', fn, { useCache: false })).toBe(1);
      expect(await cache.wrapWithCondition('a', fn, { useCache: false })).toBe(2);
      expect(await cache.get('a')).toBeUndefined();
      expect(await cache.wrapWithCondition('b', fn, { isCacheable: (v) => v > 100 })).toBe(3);
      expect(await cache.get('b')).toBeUndefined();
      expect(await cache.wrapWithCondition('b', fn, { isCacheable: async () => true })).toBe(4);
      expect(await cache.wrapWithCondition('b', fn)).toBe(4);
      expect(await cache.wrapWithCondition('z', async () => 0)).toBe(0);
      expect(await cache.get('z')).toBe(0);
      expect(calls).toBe(4);
    });

    it('keeps every value type lossless', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      const value = {
        date: new Date('2026-01-02T03:04:05.678Z'),
        map: new Map<unknown, unknown>([
          ['a', 1],
          [2, new Set([1, 2])],
        ]),
        set: new Set(['x', 'y']),
        big: 12345678901234567890n,
        bytes: new Uint8Array([0, 1, 254, 255]),
        buffer: Buffer.from('héllo'),
        nested: [{ deep: [new Date(0), null, undefined, -0, Number.NaN, Number.POSITIVE_INFINITY] }],
        $t: 'a key that looks like a tag',
        ['__proto__']: { polluted: true },
        constructor: 'plain',
      };
      await cache.set('v', value);
      const back = (await cache.get('v')) as typeof value;
      expect(back).toEqual(value);
      expect(back.date).toBeInstanceOf(Date);
      expect(back.map).toBeInstanceOf(Map);
      expect(back.set).toBeInstanceOf(Set);
      expect(typeof back.big).toBe('bigint');
      expect(Buffer.isBuffer(back.buffer)).toBe(true);
      expect(back.bytes).toBeInstanceOf(Uint8Array);
      expect(Object.is(back.nested[0]!.deep[3], -0)).toBe(true);
      expect(Object.hasOwn(back, '__proto__')).toBe(true);
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
    });

    it('stores copies: mutating a value after set, or a value got, leaves the cache unchanged', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      const plain = { list: [1, { deep: 'x' }], n: 1 };
      const rich = { when: new Date(0), list: [1] };
      await cache.set('plain', plain);
      await cache.set('rich', rich);
      plain.list.push(2);
      (plain.list[1] as { deep: string }).deep = 'changed';
      rich.list.push(2);
      const first = (await cache.get('plain')) as typeof plain;
      expect(first).toEqual({ list: [1, { deep: 'x' }], n: 1 });
      first.n = 99;
      first.list.length = 0;
      expect(await cache.get('plain')).toEqual({ list: [1, { deep: 'x' }], n: 1 });
      expect(await cache.get('rich')).toEqual({ when: new Date(0), list: [1] });
      expect(await cache.mget('plain', 'rich')).toEqual([
        { list: [1, { deep: 'x' }], n: 1 },
        { when: new Date(0), list: [1] },
      ]);
    });

    it('treats __proto__ and constructor as ordinary keys', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      await cache.set('__proto__', 'p');
      await cache.set('constructor', 'c');
      expect(await cache.get('__proto__')).toBe('p');
      expect(await cache.get('constructor')).toBe('c');
      expect(await cache.get('toString')).toBeUndefined();
      expect((await cache.keys()).sort()).toEqual(['__proto__', 'constructor']);
    });

    it('rejects bad keys and unserialisable values with typed errors and writes nothing', async () => {
      const cache = await (await manager()).createCache({ name: 'c' });
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      class Custom {
        x = 1;
      }
      const badValues: unknown[] = [() => 1, Symbol('s'), cyclic, new Custom(), undefined];
      for (const value of badValues) {
        const error = await cache.set('k', value).catch((e) => e);
        expect(ClusterError.is(error), String(error)).toBe(true);
        expect(['SERIALIZATION', 'INVALID_ARGUMENT']).toContain(error.code);
      }
      for (const key of ['', 42, null, 'x'.repeat(5000)]) {
        const error = await cache.set(key as string, 1).catch((e) => e);
        expect(ClusterError.is(error, 'INVALID_ARGUMENT')).toBe(true);
      }
      const error = await cache
        .mset([
          ['good', 1],
          ['bad', () => 1],
        ])
        .catch((e) => e);
      expect(ClusterError.is(error, 'SERIALIZATION')).toBe(true);
      expect(await cache.keys()).toEqual([]);
      const tooBig = await cache
        .set('big', 'x'.repeat(cache.store.capabilities.maxPayloadBytes + 1))
        .catch((e) => e);
      expect(ClusterError.is(tooBig, 'PAYLOAD_TOO_LARGE')).toBe(true);
      expect(await cache.keys()).toEqual([]);
    });

    it('refuses two caches with one prefix on one store', async () => {
      const m = await manager();
      await m.createCache({ name: 'a', prefix: 'p' });
      const error = await m.createCache({ name: 'b', prefix: 'p' }).catch((e) => e);
      expect(ClusterError.is(error, 'INVALID_ARGUMENT')).toBe(true);
      expect(await m.createCache({ name: 'a', prefix: 'p' })).toBe(m.getCache('a'));
    });
  });
}
