/**
 * What the conformance suite does not pin down for the Redis lock: strict FIFO across nodes, wake on
 * release (not polling), waiters that died, leases that err early, clean keys, clients and
 * connections it does not own, and typed errors for bad input.
 */
import { ClusterError, type LockAdapter, type LockGrant } from '@cluster/core';
import { REDIS, requireServer, uniqueName, waitFor, within } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { RedisConnections } from '../src/connection.js';
import { createRedisLock, type RedisLockOptions } from '../src/lock/index.js';
import { lockKeys } from '../src/lock/scripts.js';
import { deleteKeysUnder, directClient, keysUnder, REDIS_URL } from './helpers/lock-redis.js';

const available = await requireServer(REDIS);
const raw = directClient();
afterAll(() => raw.disconnect());

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

describe.skipIf(!available)('redis lock behaviour', () => {
  const closers: (() => Promise<void>)[] = [];
  let keyPrefix = '';
  let seq = 0;
  const owner = (label = 'o') => `${label}-${++seq}`;

  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await deleteKeysUnder(keyPrefix);
  });

  function node(options: Partial<RedisLockOptions> = {}): LockAdapter {
    if (!keyPrefix) keyPrefix = uniqueName('t');
    const lock = createRedisLock({ url: REDIS_URL, keyPrefix, ...options });
    closers.push(() => lock.close());
    return lock;
  }

  async function nodes(count: number, options: Partial<RedisLockOptions> = {}): Promise<LockAdapter[]> {
    keyPrefix = uniqueName('t');
    const made = Array.from({ length: count }, () => node(options));
    await Promise.all(made.map((n) => n.connect()));
    return made;
  }

  const keysOf = (key: string) => lockKeys(keyPrefix, key);
  const lineLength = (key: string) => raw.zcard(keysOf(key).waiters);

  async function hold(
    lock: LockAdapter,
    key: string,
    ttl = 30_000,
  ): Promise<{ owner: string; grant: LockGrant }> {
    const me = owner('holder');
    const grant = await lock.acquire(key, { owner: me, ttl, waitTimeout: 0 });
    if (!grant) throw new Error(`${key} was not free`);
    return { owner: me, grant };
  }

  it('serves waiters from several nodes in exactly their arrival order', async () => {
    const adapters = await nodes(3);
    const [first] = adapters;
    const held = await hold(first!, 'fifo');
    const order: number[] = [];
    const waits: Promise<void>[] = [];
    for (let i = 0; i < 9; i += 1) {
      const lock = adapters[i % 3]!;
      const me = owner(`w${i}`);
      waits.push(
        lock.acquire('fifo', { owner: me, ttl: 30_000, waitTimeout: 15_000 }).then(async (grant) => {
          if (!grant) throw new Error(`waiter ${i} timed out`);
          order.push(i);
          await lock.release('fifo', me, grant.token);
        }),
      );
      // Arrival order is the order of joining the line at the server.
      await waitFor(async () => (await lineLength('fifo')) === i + 1, { message: `waiter ${i} in line` });
    }
    await first!.release('fifo', held.owner, held.grant.token);
    await within(Promise.all(waits), 15_000, 'the waiters');
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('a release wakes the next waiter at once, not at its next poll', async () => {
    // Polls every 10 s: only the hand-over message can explain a prompt grant.
    const [a, b] = await nodes(2, { pollInterval: 10_000, waiterTtl: 60_000 });
    const held = await hold(a!, 'wake');
    const me = owner();
    const waiting = b!.acquire('wake', { owner: me, ttl: 30_000, waitTimeout: 20_000 });
    await waitFor(async () => (await lineLength('wake')) === 1, { message: 'in line' });
    const released = Date.now();
    await a!.release('wake', held.owner, held.grant.token);
    const grant = await within(waiting, 5_000, 'the woken waiter');
    expect(grant).not.toBeNull();
    const wokenAfter = Date.now() - released;
    expect(wokenAfter).toBeLessThan(5_000);
    console.log(JSON.stringify({ figure: 'lock hand-over after release (ms)', wokenAfter }));
    expect(await raw.get(keysOf('wake').lock)).toBe(`${grant!.token}:${me}`);
    await b!.release('wake', me, grant!.token);
  });

  it('a holder that died: the head waiter takes over when its lease ends (no release needed)', async () => {
    const [a, b] = await nodes(2, { pollInterval: 10_000, waiterTtl: 60_000 });
    await hold(a!, 'died', 300); // never released: stands for a crashed holder
    const started = Date.now();
    const grant = await within(
      b!.acquire('died', { owner: owner(), ttl: 30_000, waitTimeout: 10_000 }),
      11_000,
      'the take-over',
    );
    expect(grant).not.toBeNull();
    // The head polls at the holder's PTTL, far sooner than its 10 s poll.
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('a waiter that died does not block the line: skipped once stale, or its hand-over lapses', async () => {
    const [a, b] = await nodes(2);
    const keys = keysOf('ghost');
    const held = await hold(a!, 'ghost');
    const now = Number((await raw.time())[0]) * 1_000;
    // Two waiters of a process that is gone: one stopped refreshing long ago, one only just.
    await raw.zadd(keys.waiters, 1, 'gone-adapter/2000/stale-ghost', 2, 'gone-adapter/2000/fresh-ghost');
    await raw.zadd(
      keys.alive,
      now - 60_000,
      'gone-adapter/2000/stale-ghost',
      now + 60_000,
      'gone-adapter/2000/fresh-ghost',
    );
    const me = owner();
    const waiting = b!.acquire('ghost', { owner: me, ttl: 30_000, waitTimeout: 10_000 });
    // Joining drops the stale ghost; the fresh one stays ahead.
    await waitFor(async () => (await lineLength('ghost')) === 2, { message: 'behind the fresh ghost' });
    expect(await raw.zscore(keys.alive, 'gone-adapter/2000/stale-ghost')).toBeNull();
    await a!.release('ghost', held.owner, held.grant.token);
    // The fresh ghost is handed the key and, never taking it, loses it after its 2 s lease (the
    // bound a waiter that just died costs); then the real waiter, at the head now, takes it.
    expect(await raw.get(keys.lock)).toMatch(/:fresh-ghost$/);
    const grant = await within(waiting, 10_000, 'the live waiter');
    expect(grant).not.toBeNull();
    await b!.release('ghost', me, grant!.token);
  });

  it('leases err early: expiresAt is before the server ends the lease, for grants and hand-overs', async () => {
    const [a, b] = await nodes(2);
    const ttl = 10_000;
    const before = Date.now();
    const direct = await hold(a!, 'early', ttl);
    const pttl = await raw.pttl(keysOf('early').lock);
    const checkedAt = Date.now();
    expect(direct.grant.expiresAt).toBeLessThanOrEqual(before + ttl);
    expect(direct.grant.expiresAt).toBeLessThanOrEqual(checkedAt + pttl);
    expect(direct.grant.expiresAt).toBeGreaterThan(before + ttl * 0.9);

    const me = owner();
    const joinedBefore = Date.now();
    const waiting = b!.acquire('early', { owner: me, ttl, waitTimeout: 10_000 });
    await waitFor(async () => (await lineLength('early')) === 1, { message: 'in line' });
    await a!.release('early', direct.owner, direct.grant.token);
    const handed = await within(waiting, 5_000, 'the hand-over');
    const handedPttl = await raw.pttl(keysOf('early').lock);
    const handedCheckedAt = Date.now();
    expect(handed).not.toBeNull();
    expect(handed!.expiresAt).toBeLessThanOrEqual(handedCheckedAt + handedPttl);
    expect(handed!.expiresAt).toBeGreaterThanOrEqual(joinedBefore + ttl * 0.9);

    const extendedBefore = Date.now();
    const extended = await b!.extend('early', me, handed!.token, 20_000);
    expect(extended?.expiresAt).toBeLessThanOrEqual(extendedBefore + 20_000);
    expect(extended?.expiresAt).toBeLessThanOrEqual(Date.now() + (await raw.pttl(keysOf('early').lock)));
    await b!.release('early', me, handed!.token);
  });

  it('timed-out, aborted and closed waits leave no line; a released key leaves only its fence counter', async () => {
    const [a, b, c] = await nodes(3);
    const held = await hold(a!, 'clean');
    const timedOut = await b!.acquire('clean', { owner: owner(), ttl: 30_000, waitTimeout: 100 });
    expect(timedOut).toBeNull();
    const controller = new AbortController();
    const aborted = rejection(
      b!.acquire('clean', { owner: owner(), ttl: 30_000, waitTimeout: 10_000, signal: controller.signal }),
    );
    const closing = rejection(c!.acquire('clean', { owner: owner(), ttl: 30_000, waitTimeout: 10_000 }));
    await waitFor(async () => (await lineLength('clean')) === 2, { message: 'two in line' });
    controller.abort();
    expect(ClusterError.is(await aborted, 'ABORTED')).toBe(true);
    await c!.close();
    expect(ClusterError.is(await closing, 'CLOSED')).toBe(true);
    expect(
      ClusterError.is(
        await rejection(c!.acquire('clean', { owner: owner(), ttl: 1_000, waitTimeout: 0 })),
        'CLOSED',
      ),
    ).toBe(true);
    await waitFor(async () => (await lineLength('clean')) === 0, { message: 'the line left' });
    expect(await a!.release('clean', held.owner, held.grant.token)).toBe(true);
    // The key is free for anyone at once: nobody is left in line ahead of a newcomer.
    const next = await hold(b!, 'clean');
    await b!.release('clean', next.owner, next.grant.token);
    expect(await keysUnder(raw, keyPrefix)).toEqual([keysOf('clean').fence]);
  });

  it('a wait longer than its attempts’ deadline (its timer armed only once the key is found held) still ends on time', async () => {
    // commandTimeout 100: an attempt settles within ~250 ms, so a 900 ms wait arms its timer late.
    const [a, b] = await nodes(2, { commandTimeout: 100, pollInterval: 100, waiterTtl: 400 });
    const held = await hold(a!, 'late-timer');
    const started = Date.now();
    const timedOut = await within(
      b!.acquire('late-timer', { owner: owner(), ttl: 30_000, waitTimeout: 900 }),
      5_000,
      'the wait',
    );
    const waited = Date.now() - started;
    expect(timedOut).toBeNull();
    expect(waited).toBeGreaterThanOrEqual(895);
    expect(waited).toBeLessThan(900 + 1_000);
    await waitFor(async () => (await lineLength('late-timer')) === 0, { message: 'the line left' });
    // The same wait on a free key is granted by its first attempt, with no timer left behind.
    expect(await a!.release('late-timer', held.owner, held.grant.token)).toBe(true);
    const free = await b!.acquire('late-timer', { owner: owner(), ttl: 30_000, waitTimeout: 900 });
    expect(free).not.toBeNull();
  });

  it('two key prefixes on one server are apart: the same name locks independently', async () => {
    const [a] = await nodes(1);
    const otherPrefix = uniqueName('t');
    const other = createRedisLock({ url: REDIS_URL, keyPrefix: otherPrefix });
    closers.push(async () => {
      await other.close();
      await deleteKeysUnder(otherPrefix);
    });
    const mine = await hold(a!, 'app:settings');
    const theirs = await other.acquire('app:settings', { owner: owner(), ttl: 30_000, waitTimeout: 0 });
    expect(theirs).not.toBeNull();
    // Each prefix has its own fence counter too.
    expect(theirs!.token).toBe(mine.grant.token);
    expect(await a!.acquire('app:settings', { owner: owner(), ttl: 1_000, waitTimeout: 0 })).toBeNull();
  });

  it('declares its capabilities; durable only when told', async () => {
    const [plain] = await nodes(1);
    expect(plain!.capabilities).toEqual({
      crossProcess: true,
      durable: false,
      fencing: true,
      fairness: 'fifo',
      wakeOnRelease: true,
    });
    expect(node({ durable: true }).capabilities.durable).toBe(true);
  });

  it('rejects bad input with INVALID_ARGUMENT and touches nothing', async () => {
    const [a] = await nodes(1);
    const bad: [string, () => Promise<unknown>][] = [
      ['empty key', () => a!.acquire('', { owner: 'x', ttl: 1_000, waitTimeout: 0 })],
      ['empty owner', () => a!.acquire('k', { owner: '', ttl: 1_000, waitTimeout: 0 })],
      ['zero ttl', () => a!.acquire('k', { owner: 'x', ttl: 0, waitTimeout: 0 })],
      ['NaN wait', () => a!.acquire('k', { owner: 'x', ttl: 1_000, waitTimeout: Number.NaN })],
      ['negative wait', () => a!.acquire('k', { owner: 'x', ttl: 1_000, waitTimeout: -1 })],
      ['fractional token', () => a!.release('k', 'x', 1.5)],
      ['infinite extend', () => a!.extend('k', 'x', 1, Number.POSITIVE_INFINITY)],
    ];
    for (const [name, call] of bad) {
      expect(ClusterError.is(await rejection(call()), 'INVALID_ARGUMENT'), name).toBe(true);
    }
    expect(() => createRedisLock({ pollInterval: 0 })).toThrow(ClusterError);
    expect(() => createRedisLock({ pollInterval: 1_000, waiterTtl: 2_000 })).toThrow(ClusterError);
    expect(await keysUnder(raw, keyPrefix)).toEqual([]);
  });

  it('closes only what it opened: a given client and shared connections stay usable', async () => {
    keyPrefix = uniqueName('t');
    const client = new Redis(REDIS_URL, { commandTimeout: 2_000 });
    client.on('error', () => {});
    try {
      const onClient = createRedisLock({ client, keyPrefix });
      await onClient.connect();
      const held = await hold(onClient, 'given');
      await onClient.release('given', held.owner, held.grant.token);
      await onClient.close();
      expect(await client.ping()).toBe('PONG');

      const connections = new RedisConnections({ url: REDIS_URL, keyPrefix }).retain();
      const shared = createRedisLock({ connections });
      await shared.connect();
      await shared.close();
      expect(await connections.command.ping()).toBe('PONG');
      await connections.close();
    } finally {
      client.disconnect();
    }
  });
});
