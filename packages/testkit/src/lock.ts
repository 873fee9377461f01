import {
  ClusterError,
  type ClusterErrorCode,
  isLockAcquireError,
  LockAcquireError,
  type LockAdapter,
  type LockCapabilities,
  LockLostError,
  LockManager,
} from '@cluster/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Backend, type SuiteOptions, uniqueName } from './backend.js';
import { PeakCounter, signal, waitFor, within } from './wait.js';

/** Simulated work inside a critical section, to widen race windows. Never the thing asserted. */
function work(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Blocks the event loop, as a CPU-bound holder or a GC pause would. */
function blockEventLoop(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // spin
  }
}

function whenAborted(abortSignal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) => {
    if (abortSignal.aborted) resolve(abortSignal.reason);
    else abortSignal.addEventListener('abort', () => resolve(abortSignal.reason), { once: true });
  });
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to reject, it resolved');
}

function codeOf(error: unknown): string {
  return ClusterError.is(error) ? error.code : String(error);
}

async function expectCode(promise: Promise<unknown>, code: ClusterErrorCode): Promise<ClusterError> {
  const error = await rejection(promise);
  expect(ClusterError.is(error, code), `expected ${code}, got ${codeOf(error)}`).toBe(true);
  return error as ClusterError;
}

function expectIncreasing(tokens: number[]): void {
  for (let i = 1; i < tokens.length; i += 1) {
    expect(tokens[i], `token #${i} after ${tokens[i - 1]}`).toBeGreaterThan(tokens[i - 1]!);
  }
}

/**
 * The executable form of the lock contract, run through LockManager instances that stand for
 * separate nodes of one app (each over its own adapter from one backend). Capabilities an adapter
 * does not claim (fencing, FIFO fairness) are skipped or checked in a weaker form.
 */
export function describeLockConformance(options: SuiteOptions<LockAdapter>): void {
  describe(`lock conformance: ${options.name}`, () => {
    let backend: Backend<LockAdapter>;
    let managers: LockManager[] = [];
    let adapters: LockAdapter[] = [];
    let app = '';

    beforeEach(async () => {
      managers = [];
      adapters = [];
      app = uniqueName('app');
      backend = await options.backend();
    });

    afterEach(async () => {
      await Promise.allSettled(managers.map((manager) => manager.close()));
      await Promise.allSettled(adapters.map((adapter) => adapter.close()));
      await backend.cleanup?.();
    });

    /** One node: a LockManager of `appName` over a fresh adapter on the test's backend. */
    async function node(appName = app): Promise<LockManager> {
      const adapter = await backend.create();
      adapters.push(adapter);
      const manager = new LockManager({
        appName,
        adapters: { conformance: adapter },
        defaultAdapter: 'conformance',
        defaultTtl: 10_000,
        defaultWaitTimeout: 10_000,
      });
      managers.push(manager);
      await manager.start();
      return manager;
    }

    async function nodes(count: number): Promise<LockManager[]> {
      const created: LockManager[] = [];
      for (let i = 0; i < count; i += 1) created.push(await node());
      return created;
    }

    function capabilities(): LockCapabilities {
      const adapter = adapters[0];
      if (adapter === undefined) throw new Error('create a node before reading capabilities');
      return adapter.capabilities;
    }

    function pick<T>(items: T[], index: number): T {
      return items[index % items.length]!;
    }

    describe('mutual exclusion', () => {
      it('runExclusive: 20 concurrent callers on 3 instances never overlap and all complete', async () => {
        const instances = await nodes(3);
        const peak = new PeakCounter();
        let completed = 0;
        const results = await within(
          Promise.all(
            Array.from({ length: 20 }, (_, i) =>
              pick(instances, i).runExclusive('shared', async () => {
                peak.enter();
                await work(2);
                peak.leave();
                completed += 1;
                return i;
              }),
            ),
          ),
          15_000,
          '20 runExclusive calls',
        );
        expect(peak.peak).toBe(1);
        expect(completed).toBe(20);
        expect(results).toEqual(Array.from({ length: 20 }, (_, i) => i));
      });

      it('different keys are held at the same time', async () => {
        const [a, b] = await nodes(2);
        const peak = new PeakCounter();
        const bothInside = signal();
        const section = async () => {
          peak.enter();
          if (peak.current === 2) bothInside.resolve();
          await within(bothInside.promise, 5_000, 'the other key being held at the same time');
          peak.leave();
        };
        await within(
          Promise.all([a!.runExclusive('key-1', section), b!.runExclusive('key-2', section)]),
          10_000,
          'two keys in parallel',
        );
        expect(peak.peak).toBe(2);
      });

      it('two apps on one backend do not exclude each other on the same key', async () => {
        const shop = await node(uniqueName('shop'));
        const blog = await node(uniqueName('blog'));
        const shopLock = await within(shop.tryAcquire('settings'), 2_000, 'tryAcquire in app 1');
        const blogLock = await within(blog.tryAcquire('settings'), 2_000, 'tryAcquire in app 2');
        expect(shopLock.held && blogLock.held).toBe(true);
        // The same app on another node is excluded, so the apps are really apart and not just lock-free.
        const shopNode2 = await node(shop.appName);
        await expectCode(shopNode2.tryAcquire('settings'), 'LOCK_NOT_ACQUIRED');
        await shopLock();
        await blogLock();
      });

      it('keys with wildcard and special characters are ordinary distinct keys', async () => {
        const [a, b] = await nodes(2);
        const special = [
          'a*',
          '*',
          'a?',
          '[a]',
          'a:b',
          'a%3Ab',
          '__proto__',
          'constructor',
          'a b',
          'ключ/鍵',
        ];
        const neighbours = ['a', 'ab', 'a:', 'b', 'proto', 'a%b'];
        const held = [];
        for (const key of special) held.push(await a!.tryAcquire(key));
        for (const key of special) await expectCode(b!.tryAcquire(key), 'LOCK_NOT_ACQUIRED');
        for (const key of neighbours) {
          const lock = await b!.tryAcquire(key);
          await lock();
        }
        for (const lock of held) await lock();
        for (const key of special) {
          const lock = await b!.tryAcquire(key);
          expect(lock.key).toBe(key);
          await lock();
        }
      });
    });

    describe('handles', () => {
      it('acquire returns a callable releaser carrying key, token, signal, extend and asyncDispose', async () => {
        const [a, b] = await nodes(2);
        const release = await a!.acquire('handle', 5_000);
        expect(typeof release).toBe('function');
        expect(release.key).toBe('handle');
        expect(Number.isFinite(release.token)).toBe(true);
        expect(release.signal).toBeInstanceOf(AbortSignal);
        expect(release.signal.aborted).toBe(false);
        expect(release.held).toBe(true);
        expect(release.expiresAt).toBeGreaterThan(Date.now());
        for (const method of ['release', 'extend', 'runExclusive', 'acquire'] as const) {
          expect(typeof release[method], method).toBe('function');
        }
        expect(typeof release[Symbol.asyncDispose]).toBe('function');
        await expectCode(b!.tryAcquire('handle'), 'LOCK_NOT_ACQUIRED');

        await release();
        expect(release.held).toBe(false);
        expect(release.signal.aborted).toBe(false);
        const next = await within(b!.tryAcquire('handle'), 2_000, 'tryAcquire after release');
        await next();

        {
          await using scoped = await a!.acquire('handle');
          expect(scoped.held).toBe(true);
          await expectCode(b!.tryAcquire('handle'), 'LOCK_NOT_ACQUIRED');
        }
        const afterScope = await within(b!.tryAcquire('handle'), 2_000, 'tryAcquire after await using');
        await afterScope.release();
      });

      it('release is idempotent and a stale release never frees a later holder', async () => {
        const [a, b] = await nodes(2);
        const lock = await a!.acquire('idempotent');
        await Promise.all([lock(), lock.release(), lock[Symbol.asyncDispose]()]);
        await lock();
        expect(lock.held).toBe(false);
        expect(lock.signal.aborted).toBe(false);

        const next = await b!.tryAcquire('idempotent');
        const token = next.token;
        await lock();
        await lock.release();
        const staleExtend = await rejection(lock.extend(5_000));
        expect(ClusterError.is(staleExtend), codeOf(staleExtend)).toBe(true);
        expect(next.held).toBe(true);
        expect(next.token).toBe(token);
        await expectCode(a!.tryAcquire('idempotent'), 'LOCK_NOT_ACQUIRED');
        await next();
      });

      it('the adapter refuses release and extend by a wrong owner or token, and after expiry', async () => {
        // Straight at the adapter: a manager never even sends a stale release, so only this reaches the check.
        const [mine, theirs, third] = [
          await backend.create(),
          await backend.create(),
          await backend.create(),
        ];
        adapters.push(mine, theirs, third);
        await Promise.all([mine.connect(), theirs.connect(), third.connect()]);
        const key = `${app}:owned`;
        const me = uniqueName('owner');
        const grant = await mine.acquire(key, { owner: me, ttl: 300, waitTimeout: 0 });
        if (grant === null) throw new Error('a free key was not granted');
        expect(await theirs.release(key, uniqueName('owner'), grant.token)).toBe(false);
        expect(await theirs.extend(key, uniqueName('owner'), grant.token, 5_000)).toBeNull();
        if (mine.capabilities.fencing) {
          expect(await mine.release(key, me, grant.token + 1)).toBe(false);
          expect(await mine.extend(key, me, grant.token + 1, 5_000)).toBeNull();
        }
        expect(
          await theirs.acquire(key, { owner: uniqueName('owner'), ttl: 5_000, waitTimeout: 0 }),
        ).toBeNull();

        // Never renewed: the lease ends and a waiter gets the key; the old owner can no longer touch it.
        const next = await within(
          theirs.acquire(key, { owner: uniqueName('owner'), ttl: 5_000, waitTimeout: 5_000 }),
          6_000,
          'the waiter after expiry',
        );
        expect(next).not.toBeNull();
        expect(await mine.extend(key, me, grant.token, 5_000)).toBeNull();
        expect(await mine.release(key, me, grant.token)).toBe(false);
        expect(
          await third.acquire(key, { owner: uniqueName('owner'), ttl: 5_000, waitTimeout: 0 }),
        ).toBeNull();
      });

      it('extend prolongs a lease beyond its original ttl', async () => {
        const [a, b] = await nodes(2);
        const lock = await a!.acquire('extended', 200);
        const firstExpiry = lock.expiresAt;
        await lock.extend(10_000);
        expect(lock.expiresAt).toBeGreaterThan(firstExpiry);
        await waitFor(() => Date.now() > firstExpiry + 50, {
          timeout: 5_000,
          message: 'clock past the first ttl',
        });
        expect(lock.held).toBe(true);
        expect(lock.signal.aborted).toBe(false);
        await expectCode(b!.tryAcquire('extended'), 'LOCK_NOT_ACQUIRED');
        await lock();
      });
    });

    describe('tryAcquire', () => {
      it('fails at once with LockAcquireError when the key is held', async () => {
        const [a, b] = await nodes(2);
        const held = await a!.acquire('busy');
        const error = await within(rejection(b!.tryAcquire('busy')), 2_000, 'tryAcquire on a held key');
        expect(error).toBeInstanceOf(LockAcquireError);
        expect(ClusterError.is(error, 'LOCK_NOT_ACQUIRED')).toBe(true);
        expect(isLockAcquireError(error)).toBe(true);
        await expectCode(a!.tryAcquire('busy'), 'LOCK_NOT_ACQUIRED');
        expect(held.held).toBe(true);
        await held();
      });

      it('with a timeout, succeeds when the key is released in time', async () => {
        const [a, b] = await nodes(2);
        const held = await a!.acquire('soon-free');
        const waiting = b!.tryAcquire('soon-free', 5_000);
        await work(30); // lets the wait begin; the outcome does not depend on it
        await held();
        const lock = await within(waiting, 6_000, 'tryAcquire with a timeout');
        expect(lock.held).toBe(true);
        await lock();
      });

      it('with a timeout, fails after it when the key stays held', async () => {
        const [a, b] = await nodes(2);
        const held = await a!.acquire('stays-held');
        const started = Date.now();
        const error = await within(rejection(b!.tryAcquire('stays-held', 150)), 5_000, 'tryAcquire timeout');
        expect(isLockAcquireError(error), codeOf(error)).toBe(true);
        expect(Date.now() - started).toBeGreaterThanOrEqual(100);
        expect(held.held).toBe(true);
        await held();
      });

      it('of two racing tryAcquire calls exactly one wins (20 rounds)', async () => {
        const [a, b] = await nodes(2);
        for (let round = 0; round < 20; round += 1) {
          const results = await Promise.allSettled([a!.tryAcquire('race'), b!.tryAcquire('race')]);
          const winners = results.filter((r) => r.status === 'fulfilled');
          const losers = results.filter((r) => r.status === 'rejected');
          expect(winners, `round ${round}`).toHaveLength(1);
          expect(isLockAcquireError(losers[0]?.reason), `round ${round}: ${codeOf(losers[0]?.reason)}`).toBe(
            true,
          );
          await winners[0]!.value();
        }
      });
    });

    describe('fencing tokens', () => {
      it('strictly increase per key across instances, after release and after expiry', async (context) => {
        const [a, b, c] = await nodes(3);
        context.skip(!capabilities().fencing, 'adapter does not claim fencing');
        const tokens: number[] = [];
        const first = await a!.acquire('fenced');
        tokens.push(first.token);
        await first();
        const second = await b!.acquire('fenced');
        tokens.push(second.token);
        await second();
        await c!.runExclusive('fenced', ({ token }) => {
          tokens.push(token);
        });
        const expiring = await a!.tryAcquire('fenced', { ttl: 200 });
        tokens.push(expiring.token);
        await within(whenAborted(expiring.signal), 5_000, 'lease expiry');
        const afterExpiry = await b!.acquire('fenced');
        tokens.push(afterExpiry.token);
        await afterExpiry();
        // Concurrent holders, in the order they got in.
        await within(
          Promise.all(
            Array.from({ length: 9 }, (_, i) =>
              pick([a!, b!, c!], i).runExclusive('fenced', ({ token }) => {
                tokens.push(token);
              }),
            ),
          ),
          10_000,
          'concurrent runExclusive',
        );
        expect(tokens).toHaveLength(14);
        expectIncreasing(tokens);
      });
    });

    describe('leases', () => {
      it('a holder that does not renew loses the lease after ttl and cannot touch the next holder', async () => {
        const [a, b, c] = await nodes(3);
        const old = await a!.acquire('lease', 300);
        const lost = whenAborted(old.signal);
        const next = b!.acquire('lease', { waitTimeout: 10_000 });
        const reason = await within(lost, 5_000, 'the lease-loss signal');
        expect(reason).toBeInstanceOf(LockLostError);
        expect(ClusterError.is(reason, 'LOCK_LOST')).toBe(true);
        const fresh = await within(next, 5_000, 'the waiter getting the expired lock');
        expect(old.held).toBe(false);
        if (capabilities().fencing) expect(fresh.token).toBeGreaterThan(old.token);
        const token = fresh.token;

        await old();
        await old.release();
        await expectCode(old.extend(5_000), 'LOCK_LOST');
        expect(fresh.held).toBe(true);
        expect(fresh.token).toBe(token);
        expect(fresh.signal.aborted).toBe(false);
        await expectCode(c!.tryAcquire('lease'), 'LOCK_NOT_ACQUIRED');
        await expectCode(a!.tryAcquire('lease'), 'LOCK_NOT_ACQUIRED');
        await fresh();
        const free = await within(c!.tryAcquire('lease'), 2_000, 'tryAcquire after release');
        await free();
      });

      it('runExclusive renews the lease while fn outlives the ttl and passes { signal, token }', async () => {
        const [a, b, c] = await nodes(3);
        const ttl = 300;
        let inside = false;
        const entered = signal();
        const contender = (async () => {
          await entered.promise;
          const lock = await b!.acquire('renewed', { waitTimeout: 10_000 });
          const gotInWhileInside = inside;
          const token = lock.token;
          await lock();
          return { gotInWhileInside, token };
        })();
        let seenToken = Number.NaN;
        const result = await a!.runExclusive(
          'renewed',
          async ({ signal: leaseSignal, token }) => {
            inside = true;
            seenToken = token;
            entered.resolve();
            expect(leaseSignal).toBeInstanceOf(AbortSignal);
            const started = Date.now();
            while (Date.now() - started < 3 * ttl) {
              await work(ttl / 4);
              await expectCode(c!.tryAcquire('renewed'), 'LOCK_NOT_ACQUIRED');
            }
            expect(leaseSignal.aborted).toBe(false);
            inside = false;
            return 'done';
          },
          ttl,
        );
        expect(result).toBe('done');
        expect(Number.isFinite(seenToken)).toBe(true);
        const outcome = await within(contender, 10_000, 'the contender');
        expect(outcome.gotInWhileInside).toBe(false);
        if (capabilities().fencing) expect(outcome.token).toBeGreaterThan(seenToken);
      });

      it('runExclusive rejects with LockLostError when the lease is lost while fn runs', async () => {
        const [a, b] = await nodes(2);
        const ttl = 200;
        let observed: unknown;
        const error = await rejection(
          a!.runExclusive(
            'stalled',
            async ({ signal: leaseSignal }) => {
              blockEventLoop(ttl * 2.5); // no renewal can run: the lease ends
              observed = await within(whenAborted(leaseSignal), 5_000, 'the lease-loss signal');
              return 'finished anyway';
            },
            ttl,
          ),
        );
        expect(ClusterError.is(observed, 'LOCK_LOST'), codeOf(observed)).toBe(true);
        expect(error).toBeInstanceOf(LockLostError);
        const lock = await within(b!.acquire('stalled', { waitTimeout: 5_000 }), 6_000, 'acquire after loss');
        expect(lock.held).toBe(true);
        await lock();
      });

      it('a throwing fn releases the lock and its error propagates', async () => {
        const [a, b] = await nodes(2);
        const boom = new Error('boom');
        await expect(
          a!.runExclusive('throws', async () => {
            throw boom;
          }),
        ).rejects.toBe(boom);
        await expect(
          a!.runExclusive('throws', () => {
            throw boom;
          }),
        ).rejects.toBe(boom);
        const lock = await within(b!.tryAcquire('throws'), 2_000, 'tryAcquire after a throwing fn');
        await lock();
      });
    });

    describe('waiting', () => {
      it('a wait cancelled by its AbortSignal or timed out leaves no lock and no waiter behind', async () => {
        const [a, b, c] = await nodes(3);
        const held = await a!.acquire('waited');

        const controller = new AbortController();
        const cancelled = rejection(b!.acquire('waited', { signal: controller.signal, waitTimeout: 10_000 }));
        await work(20); // lets the wait begin; the outcome does not depend on it
        controller.abort();
        const abortedError = await within(cancelled, 2_000, 'the cancelled wait');
        expect(ClusterError.is(abortedError, 'ABORTED'), codeOf(abortedError)).toBe(true);

        let ran = false;
        const exclusiveController = new AbortController();
        const cancelledExclusive = rejection(
          c!.runExclusive(
            'waited',
            () => {
              ran = true;
            },
            { signal: exclusiveController.signal },
          ),
        );
        exclusiveController.abort();
        const exclusiveError = await within(cancelledExclusive, 2_000, 'the cancelled runExclusive');
        expect(ClusterError.is(exclusiveError, 'ABORTED'), codeOf(exclusiveError)).toBe(true);
        expect(ran).toBe(false);

        await expectCode(b!.acquire('waited', { signal: AbortSignal.abort() }), 'ABORTED');
        const timedOut = await rejection(c!.acquire('waited', { waitTimeout: 100 }));
        expect(isLockAcquireError(timedOut), codeOf(timedOut)).toBe(true);

        await held();
        const free = await within(c!.tryAcquire('waited'), 2_000, 'tryAcquire once the holder released');
        expect(free.held).toBe(true);
        await free();
      });

      it('contended waiters are served fairly (10 contenders, 100 grants)', async () => {
        const instances = await nodes(3);
        const contenders = 10;
        const total = contenders * 10;
        const served = new Array<number>(contenders).fill(0);
        let grants = 0;
        await within(
          Promise.all(
            Array.from({ length: contenders }, async (_, i) => {
              const manager = pick(instances, i);
              while (grants < total) {
                await manager.runExclusive('fair', async () => {
                  if (grants < total) {
                    grants += 1;
                    served[i] = (served[i] ?? 0) + 1;
                  }
                  await Promise.resolve();
                });
              }
            }),
          ),
          15_000,
          'the contenders',
        );
        const least = Math.min(...served);
        if (capabilities().fairness === 'fifo') {
          expect(least, `served: ${served.join(',')}`).toBeGreaterThanOrEqual((total / contenders) * 0.5);
        } else {
          expect(least, `served: ${served.join(',')}`).toBeGreaterThanOrEqual(1);
        }
      });

      it('closing a manager releases its locks, cancels its waits and rejects later calls with CLOSED', async () => {
        const [a, b, c] = await nodes(3);
        const held = await a!.acquire('closing-1');
        const other = await c!.acquire('closing-2');
        const waiting = rejection(a!.acquire('closing-2', { waitTimeout: 10_000 }));
        await work(20); // lets the wait begin; the outcome does not depend on it
        await a!.close();
        expect(codeOf(await within(waiting, 2_000, 'the cancelled wait'))).toBe('CLOSED');
        expect(held.held).toBe(false);
        expect(ClusterError.is(held.signal.reason, 'LOCK_LOST')).toBe(true);
        const taken = await within(b!.tryAcquire('closing-1'), 2_000, 'tryAcquire of the closed node’s key');
        await taken();
        await other();
        const next = await within(b!.tryAcquire('closing-2'), 2_000, 'tryAcquire after the cancelled waiter');
        await next();
        await expectCode(a!.acquire('closing-3'), 'CLOSED');
        await expectCode(a!.tryAcquire('closing-3'), 'CLOSED');
        await expectCode(
          a!.runExclusive('closing-3', () => 1),
          'CLOSED',
        );
        await a!.close();
      });
    });
  });
}
