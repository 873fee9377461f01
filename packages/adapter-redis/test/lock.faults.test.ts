/**
 * L5: faults between the lock adapter and Redis (cut, blackhole, refuse, a reply that comes too late)
 * during acquire and release. Every call settles within its deadline, with a grant or a typed
 * ClusterError; the caller never believes it holds a lock it does not; a grant whose reply was lost
 * is given back (another node gets the key long before its 30 s lease would end); and the adapter
 * works again once the proxy passes traffic. Checks read Redis straight, not through the proxy.
 */
import { ClusterError, type LockAdapter, type LockGrant, LockManager } from '@cluster/core';
import { FaultProxy, REDIS, requireServer, uniqueName, waitFor, within } from '@cluster/testkit';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createRedisLock } from '../src/lock/index.js';
import { lockKeys } from '../src/lock/scripts.js';
import { deleteKeysUnder, directClient, REDIS_URL } from './helpers/lock-redis.js';

import { proxyTarget } from './helpers/redis-server.js';

const available = await requireServer(REDIS);
const target = proxyTarget(REDIS_URL);

const COMMAND_TIMEOUT = 500;
/** Bound on "settles": the command timeout plus scheduling slack on a loaded 2-core box. */
const SETTLE_BOUND = COMMAND_TIMEOUT + 2_000;
/** Long enough that "the key became free" can only mean it was released, not that it expired. */
const LONG_TTL = 30_000;
const RECOVERY = 10_000;

const raw = directClient();
/** Figures printed after the run: how each fault played out, and the settle times. */
const figures: Record<string, (number | string)[]> = {};
const note = (what: string, value: number | string) => (figures[what] ??= []).push(value);
afterAll(() => {
  raw.disconnect();
  const lines = Object.entries(figures).map(([what, values]) => `${what}: ${values.join(', ')}`);
  console.log(`[lock fault figures, commandTimeout ${COMMAND_TIMEOUT} ms]\n  ${lines.join('\n  ')}`);
});

interface Outcome<T> {
  ok: boolean;
  value?: T;
  error?: unknown;
  ms: number;
}

async function outcome<T>(promise: Promise<T>): Promise<Outcome<T>> {
  const started = Date.now();
  try {
    const value = await within(promise, 20_000, 'the call under a fault');
    return { ok: true, value, ms: Date.now() - started };
  } catch (error) {
    return { ok: false, error, ms: Date.now() - started };
  }
}

function expectTypedFailure(result: Outcome<unknown>): void {
  expect(result.ok, 'the call should have failed').toBe(false);
  note('failed calls settled in (ms)', result.ms);
  expect(ClusterError.is(result.error), String(result.error)).toBe(true);
  expect(['TIMEOUT', 'BACKEND_UNAVAILABLE']).toContain((result.error as ClusterError).code);
}

describe.skipIf(!available)('redis lock under network faults', () => {
  const closers: (() => Promise<void>)[] = [];
  let keyPrefix = '';
  let seq = 0;
  const owner = () => `${keyPrefix}-owner-${++seq}`;

  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await deleteKeysUnder(keyPrefix);
  });

  async function setup(): Promise<{ proxy: FaultProxy; faulty: LockAdapter; healthy: LockAdapter }> {
    keyPrefix = uniqueName('t');
    const proxy = await FaultProxy.start({ target });
    closers.push(async () => {
      proxy.pass();
      await proxy.stop();
    });
    const faulty = createRedisLock({
      url: `redis://127.0.0.1:${proxy.port}`,
      keyPrefix,
      commandTimeout: COMMAND_TIMEOUT,
    });
    const healthy = createRedisLock({ url: REDIS_URL, keyPrefix, commandTimeout: COMMAND_TIMEOUT });
    closers.push(() => faulty.close());
    closers.push(() => healthy.close());
    await faulty.connect();
    await healthy.connect();
    return { proxy, faulty, healthy };
  }

  const lockValue = (key: string) => raw.get(lockKeys(keyPrefix, key).lock);
  const heldBy = async (key: string, who: string) => (await lockValue(key))?.endsWith(`:${who}`) ?? false;

  /** The adapter grants again: a fresh single attempt on a free key succeeds. */
  async function worksAgain(adapter: LockAdapter, key: string): Promise<void> {
    const me = owner();
    const grant = await waitFor(
      async () => {
        try {
          return await adapter.acquire(key, { owner: me, ttl: 5_000, waitTimeout: 0 });
        } catch {
          return null;
        }
      },
      { timeout: RECOVERY, interval: 50, message: 'the adapter granting again after the fault' },
    );
    expect(await lockValue(key)).toBe(`${grant.token}:${me}`);
    expect(await adapter.release(key, me, grant.token)).toBe(true);
  }

  /** The key can be taken by the healthy node well before a LONG_TTL lease could have expired. */
  async function freedSoon(healthy: LockAdapter, key: string): Promise<void> {
    const me = owner();
    const started = Date.now();
    const grant = await within(
      healthy.acquire(key, { owner: me, ttl: 5_000, waitTimeout: RECOVERY }),
      RECOVERY + 2_000,
      'the healthy node acquiring',
    );
    expect(grant, 'the key stayed held').not.toBeNull();
    expect(Date.now() - started).toBeLessThan(LONG_TTL / 2);
    await healthy.release(key, me, grant!.token);
  }

  it('blackhole during a single-attempt acquire: typed TIMEOUT in time, nothing held, works after', async () => {
    const { proxy, faulty, healthy } = await setup();
    proxy.blackhole();
    const me = owner();
    const result = await outcome(faulty.acquire('bh', { owner: me, ttl: LONG_TTL, waitTimeout: 0 }));
    expectTypedFailure(result);
    expect(result.ms).toBeLessThan(SETTLE_BOUND);
    expect(await heldBy('bh', me)).toBe(false);
    proxy.pass();
    await worksAgain(faulty, 'bh');
    await freedSoon(healthy, 'bh');
  });

  it('a reply slower than the deadline: not reported as held, the late grant is given back', async () => {
    const { proxy, faulty, healthy } = await setup();
    // The request reaches Redis (and is granted) before the deadline; the reply would arrive after it.
    proxy.delay(COMMAND_TIMEOUT * 0.6);
    const me = owner();
    const result = await outcome(faulty.acquire('late', { owner: me, ttl: LONG_TTL, waitTimeout: 0 }));
    expect(result.ms).toBeLessThan(SETTLE_BOUND);
    note('slow reply', result.ok ? 'granted in time' : 'late grant given back');
    if (result.ok) {
      // Only possible if the reply beat the deadline after all; then it must really be ours.
      const grant = result.value as LockGrant;
      expect(await lockValue('late')).toBe(`${grant.token}:${me}`);
      proxy.pass();
      await faulty.release('late', me, grant.token);
    } else {
      expectTypedFailure(result);
      proxy.pass();
      // The grant made at the server is given back by the clean-up, not left for its 30 s lease.
      await waitFor(async () => !(await heldBy('late', me)), {
        timeout: RECOVERY,
        interval: 20,
        message: 'the late grant given back',
      });
    }
    await freedSoon(healthy, 'late');
    await worksAgain(faulty, 'late');
  });

  it('a grant whose reply outlives its lease is not reported as held', async () => {
    const { proxy, faulty } = await setup();
    // Round trip ≈ 160 ms, lease 100 ms: every grant arrives already over.
    proxy.delay(80);
    const me = owner();
    const result = await outcome(faulty.acquire('stale', { owner: me, ttl: 100, waitTimeout: 0 }));
    expect(result.ms).toBeLessThan(SETTLE_BOUND);
    if (result.ok) expect(result.value, 'an expired grant was handed out').toBeNull();
    else expectTypedFailure(result);
    proxy.pass();
    await waitFor(async () => !(await heldBy('stale', me)), { timeout: RECOVERY, message: 'nothing held' });
    await worksAgain(faulty, 'stale');
  });

  it('cut during acquire: either a real grant or a typed error; never a phantom', async () => {
    const { proxy, faulty, healthy } = await setup();
    for (let round = 0; round < 5; round += 1) {
      const me = owner();
      const pending = outcome(faulty.acquire('cut', { owner: me, ttl: LONG_TTL, waitTimeout: 0 }));
      proxy.cut();
      const result = await pending;
      expect(result.ms).toBeLessThan(SETTLE_BOUND);
      note('cut during acquire', result.ok ? (result.value ? 'granted' : 'not granted') : 'typed error');
      if (result.ok && result.value) {
        const grant = result.value as LockGrant;
        expect(await lockValue('cut'), `round ${round}`).toBe(`${grant.token}:${me}`);
        expect(await faulty.release('cut', me, grant.token)).toBe(true);
      } else if (!result.ok) {
        expectTypedFailure(result);
        await waitFor(async () => !(await heldBy('cut', me)), { timeout: RECOVERY, message: 'no phantom' });
      }
    }
    await worksAgain(faulty, 'cut');
    await freedSoon(healthy, 'cut');
  });

  it('refused reconnects during acquire: typed error in time, nothing held, works after', async () => {
    const { proxy, faulty, healthy } = await setup();
    proxy.refuse();
    proxy.cut();
    const me = owner();
    const result = await outcome(faulty.acquire('refused', { owner: me, ttl: LONG_TTL, waitTimeout: 0 }));
    expectTypedFailure(result);
    expect(result.ms).toBeLessThan(SETTLE_BOUND);
    expect(await heldBy('refused', me)).toBe(false);
    proxy.pass();
    await worksAgain(faulty, 'refused');
    await freedSoon(healthy, 'refused');
  });

  it('a waiting acquire cut off from Redis fails typed within its deadline and leaves the line', async () => {
    const { proxy, faulty, healthy } = await setup();
    const holder = owner();
    const held = await healthy.acquire('line', { owner: holder, ttl: LONG_TTL, waitTimeout: 0 });
    expect(held).not.toBeNull();
    const me = owner();
    const waiting = outcome(faulty.acquire('line', { owner: me, ttl: LONG_TTL, waitTimeout: 5_000 }));
    const waiters = lockKeys(keyPrefix, 'line').waiters;
    await waitFor(async () => (await raw.zcard(waiters)) === 1, { timeout: 5_000, message: 'in line' });
    proxy.blackhole();
    // The holder lets go while the waiter cannot hear: the key is handed to it at the server.
    expect(await healthy.release('line', holder, held!.token)).toBe(true);
    expect(await heldBy('line', me)).toBe(true);
    const result = await waiting;
    expect(result.ms).toBeLessThan(5_000 + SETTLE_BOUND);
    note('hand-over during blackhole', result.ok ? 'heard in time' : 'typed error, given back');
    if (result.ok) {
      // The hand-over message made it before the blackhole swallowed everything: a real grant.
      const grant = result.value as LockGrant;
      expect(await lockValue('line')).toBe(`${grant.token}:${me}`);
      proxy.pass();
      await faulty.release('line', me, grant.token);
    } else {
      expectTypedFailure(result);
      proxy.pass();
      await waitFor(async () => !(await heldBy('line', me)) && (await raw.zcard(waiters)) === 0, {
        timeout: RECOVERY,
        interval: 20,
        message: 'the hand-over given back and the line left',
      });
    }
    await freedSoon(healthy, 'line');
    await worksAgain(faulty, 'line');
  });

  it('release under blackhole, cut and refuse: settles in time; the key is freed once Redis is back', async () => {
    const { proxy, faulty, healthy } = await setup();
    const faults: [string, () => void][] = [
      ['blackhole', () => proxy.blackhole()],
      ['cut', () => proxy.cut()],
      [
        'refuse',
        () => {
          proxy.refuse();
          proxy.cut();
        },
      ],
    ];
    for (const [name, inject] of faults) {
      const me = owner();
      const grant = await faulty.acquire('rel', { owner: me, ttl: LONG_TTL, waitTimeout: 0 });
      expect(grant, name).not.toBeNull();
      inject();
      const result = await outcome(faulty.release('rel', me, grant!.token));
      expect(result.ms, name).toBeLessThan(SETTLE_BOUND);
      note(
        `release under ${name}`,
        result.ok ? `released (${result.ms} ms)` : `typed error (${result.ms} ms)`,
      );
      if (result.ok) expect(result.value, name).toBe(true);
      else expectTypedFailure(result);
      proxy.pass();
      // Released, or retried in the background once Redis answers again: never held for the full lease.
      await waitFor(async () => !(await heldBy('rel', me)), {
        timeout: RECOVERY,
        interval: 20,
        message: `the key freed after a ${name} during release`,
      });
      await freedSoon(healthy, 'rel');
    }
    await worksAgain(faulty, 'rel');
  });

  it('through a LockManager: a faulted acquire never yields a handle; the manager works after', async () => {
    const { proxy, faulty, healthy } = await setup();
    const manager = new LockManager({
      appName: 'faults',
      adapters: { redis: faulty },
      defaultAdapter: 'redis',
    });
    closers.push(() => manager.close());
    await manager.start();
    proxy.blackhole();
    const result = await outcome(manager.acquire('managed', { ttl: LONG_TTL, waitTimeout: 1_000 }));
    expect(result.ms).toBeLessThan(1_000 + SETTLE_BOUND);
    expect(result.ok).toBe(false);
    expect(ClusterError.is(result.error), String(result.error)).toBe(true);
    proxy.pass();
    const lock = await waitFor(
      async () => {
        try {
          return await manager.tryAcquire('managed');
        } catch {
          return null;
        }
      },
      { timeout: RECOVERY, interval: 50, message: 'the manager acquiring again' },
    );
    expect(lock.held).toBe(true);
    await lock();
    await freedSoon(healthy, 'faults:managed');
  });
});
