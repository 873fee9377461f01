import {
  ClusterError,
  type ClusterErrorCode,
  createMemoryHub,
  createMemoryLock,
  isLockAcquireError,
  type LockAcquireRequest,
  type LockAdapter,
  LockLostError,
  LockManager,
  type LockManagerOptions,
  type Logger,
  type MemoryHub,
} from '@cluster/core';
import { signal, within } from '@cluster/testkit';
import { afterEach, describe, expect, it } from 'vitest';

const managers: LockManager[] = [];
const adapters: LockAdapter[] = [];

afterEach(async () => {
  await Promise.allSettled(managers.splice(0).map((manager) => manager.close()));
  await Promise.allSettled(adapters.splice(0).map((adapter) => adapter.close()));
});

function manager(options: Partial<LockManagerOptions> = {}): LockManager {
  const created = new LockManager({ appName: 'app', ...options });
  managers.push(created);
  return created;
}

function memoryLock(hub?: MemoryHub): LockAdapter {
  const adapter = createMemoryLock(hub ? { hub } : {});
  adapters.push(adapter);
  return adapter;
}

/** An adapter that forwards to `inner` except for the methods given. */
function wrap(inner: LockAdapter, overrides: Partial<LockAdapter> = {}): LockAdapter {
  return {
    capabilities: inner.capabilities,
    connect: () => inner.connect(),
    acquire: (key, request) => inner.acquire(key, request),
    release: (key, owner, token) => inner.release(key, owner, token),
    extend: (key, owner, token, ttl) => inner.extend(key, owner, token, ttl),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
    ...overrides,
  };
}

interface LogEntry {
  level: string;
  fields: Record<string, unknown>;
  msg: string | undefined;
}

function captureLogger(): { logger: Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const make = (bindings: Record<string, unknown>): Logger => {
    const at =
      (level: string) =>
      (obj: object, msg?: string): void => {
        entries.push({ level, fields: { ...bindings, ...obj }, msg });
      };
    return {
      debug: at('debug'),
      info: at('info'),
      warn: at('warn'),
      error: at('error'),
      child: (more) => make({ ...bindings, ...more }),
    };
  };
  return { logger: make({}), entries };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to reject, it resolved');
}

async function expectCode(promise: Promise<unknown>, code: ClusterErrorCode): Promise<ClusterError> {
  const error = await rejection(promise);
  expect(ClusterError.is(error, code), `expected ${code}, got ${String((error as any)?.code ?? error)}`).toBe(
    true,
  );
  return error as ClusterError;
}

function expectThrowsCode(fn: () => unknown, code: ClusterErrorCode): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(
    ClusterError.is(thrown, code),
    `expected ${code}, got ${String((thrown as any)?.code ?? thrown)}`,
  ).toBe(true);
}

function whenAborted(abortSignal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) => {
    if (abortSignal.aborted) resolve(abortSignal.reason);
    else abortSignal.addEventListener('abort', () => resolve(abortSignal.reason), { once: true });
  });
}

/** The memory adapters' shared state, to check what they keep. */
function lockState(hub: MemoryHub): { keys: Map<string, unknown>; tokens: Map<string, number> } {
  return hub.part('lock', () => {
    throw new Error('no lock state on this hub');
  });
}

const request = (owner: string, extra: Partial<LockAcquireRequest> = {}): LockAcquireRequest => ({
  owner,
  ttl: 10_000,
  waitTimeout: 0,
  ...extra,
});

describe('LockManager argument validation', () => {
  it('rejects bad constructor options', () => {
    const bad: unknown[] = [
      undefined,
      null,
      'app',
      {},
      { appName: '' },
      { appName: 5 },
      { appName: 'a\nb' },
      { appName: 'app', defaultTtl: 0 },
      { appName: 'app', defaultTtl: -1 },
      { appName: 'app', defaultTtl: Number.NaN },
      { appName: 'app', defaultTtl: Number.POSITIVE_INFINITY },
      { appName: 'app', defaultTtl: '100' },
      { appName: 'app', defaultWaitTimeout: -1 },
      { appName: 'app', defaultWaitTimeout: Number.POSITIVE_INFINITY },
      { appName: 'app', defaultAdapter: '' },
      { appName: 'app', adapters: 'redis' },
      { appName: 'app', adapters: { broken: { capabilities: {} } } },
      { appName: 'app', hub: {} },
    ];
    for (const options of bad) {
      expectThrowsCode(() => new LockManager(options as LockManagerOptions), 'INVALID_ARGUMENT');
    }
  });

  it('rejects bad keys, ttls, timeouts, options, signals and adapters at the call site, holding nothing', async () => {
    const locks = manager();
    const badKeys: unknown[] = ['', 1, undefined, null, 'a\u0000b', 'x'.repeat(513)];
    for (const key of badKeys) {
      await expectCode(locks.acquire(key as string), 'INVALID_ARGUMENT');
      await expectCode(locks.tryAcquire(key as string), 'INVALID_ARGUMENT');
      await expectCode(
        locks.runExclusive(key as string, () => 1),
        'INVALID_ARGUMENT',
      );
    }
    const badTtls: unknown[] = [0, -5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31, '100'];
    for (const ttl of badTtls) {
      await expectCode(locks.acquire('k', ttl as number), 'INVALID_ARGUMENT');
      await expectCode(locks.acquire('k', { ttl: ttl as number }), 'INVALID_ARGUMENT');
      await expectCode(locks.tryAcquire('k', { ttl: ttl as number }), 'INVALID_ARGUMENT');
      await expectCode(
        locks.runExclusive('k', () => 1, ttl as number),
        'INVALID_ARGUMENT',
      );
    }
    const badWaits: unknown[] = [-1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31, '10'];
    for (const waitTimeout of badWaits) {
      await expectCode(locks.tryAcquire('k', waitTimeout as number), 'INVALID_ARGUMENT');
      await expectCode(locks.acquire('k', { waitTimeout: waitTimeout as number }), 'INVALID_ARGUMENT');
    }
    for (const options of [null, [], 'fast', true]) {
      await expectCode(locks.acquire('k', options as never), 'INVALID_ARGUMENT');
    }
    await expectCode(locks.acquire('k', { signal: {} as AbortSignal }), 'INVALID_ARGUMENT');
    await expectCode(locks.acquire('k', { adapter: '' }), 'INVALID_ARGUMENT');
    await expectCode(locks.acquire('k', { adapter: 'redis' }), 'INVALID_ARGUMENT');
    await expectCode(locks.runExclusive('k', 'not a function' as never), 'INVALID_ARGUMENT');

    const lock = await locks.tryAcquire('k');
    await expectCode(lock.extend(0), 'INVALID_ARGUMENT');
    await expectCode(lock.acquire(-1), 'INVALID_ARGUMENT');
    await expectCode(lock.runExclusive(42 as never), 'INVALID_ARGUMENT');
    expect(lock.held).toBe(true);
    await lock();
    // Nothing above left a lease behind.
    const again = await locks.tryAcquire('k');
    await again();
  });
});

describe('LockManager adapter registry', () => {
  it('refuses a duplicate or malformed adapter, including the built-in local one', () => {
    const locks = manager();
    const adapter = memoryLock();
    locks.registerAdapter('other', adapter);
    expectThrowsCode(() => locks.registerAdapter('other', memoryLock()), 'INVALID_ARGUMENT');
    expectThrowsCode(() => locks.registerAdapter('local', memoryLock()), 'INVALID_ARGUMENT');
    expectThrowsCode(() => locks.registerAdapter('', memoryLock()), 'INVALID_ARGUMENT');
    expectThrowsCode(() => locks.registerAdapter('broken', {} as LockAdapter), 'INVALID_ARGUMENT');
  });

  it('routes calls to the default adapter, to a per-call adapter, and to an adapter registered late', async () => {
    const seen: string[] = [];
    const recording = (name: string): LockAdapter => {
      const inner = memoryLock();
      return wrap(inner, {
        acquire: (key, req) => {
          seen.push(`${name}:${key}`);
          return inner.acquire(key, req);
        },
      });
    };
    const locks = manager({
      appName: 'shop',
      defaultAdapter: 'primary',
      adapters: { primary: recording('primary') },
    });
    await (await locks.acquire('a:b'))();
    await (await locks.acquire('k', { adapter: 'local' }))();
    await expectCode(locks.acquire('k', { adapter: 'late' }), 'INVALID_ARGUMENT');
    locks.registerAdapter('late', recording('late'));
    await (await locks.acquire('k', { adapter: 'late' }))();
    // The adapter sees the key namespaced by app, with ':' escaped inside the segment.
    expect(seen).toEqual(['primary:shop:a%3Ab', 'late:shop:k']);
  });

  it('fails at call time (not construction) when the default adapter is not registered yet', async () => {
    const locks = manager({ defaultAdapter: 'redis' });
    await expectCode(locks.acquire('k'), 'INVALID_ARGUMENT');
    locks.registerAdapter('redis', memoryLock());
    const lock = await locks.acquire('k');
    await lock();
  });

  it('uses adapters.local instead of the built-in memory adapter when given', async () => {
    let acquired = 0;
    const inner = memoryLock();
    const local = wrap(inner, {
      acquire: (key, req) => {
        acquired += 1;
        return inner.acquire(key, req);
      },
    });
    const locks = manager({ adapters: { local } });
    await (await locks.tryAcquire('k'))();
    expect(acquired).toBe(1);
  });

  it('shares the built-in local adapter through a hub; without one each manager is its own process', async () => {
    const hub = createMemoryHub();
    const nodeA = manager({ hub });
    const nodeB = manager({ hub });
    const otherApp = manager({ appName: 'other', hub });
    const held = await nodeA.acquire('k');
    await expectCode(nodeB.tryAcquire('k'), 'LOCK_NOT_ACQUIRED');
    await (await otherApp.tryAcquire('k'))();
    const isolatedA = manager();
    const isolatedB = manager();
    const isolated = await isolatedA.tryAcquire('k');
    await (await isolatedB.tryAcquire('k'))();
    await isolated();
    await held();
  });
});

describe('LockManager lifecycle', () => {
  function counting(): { adapter: LockAdapter; calls: { connect: number; close: number } } {
    const calls = { connect: 0, close: 0 };
    const inner = memoryLock();
    const adapter = wrap(inner, {
      connect: async () => {
        calls.connect += 1;
        await inner.connect();
      },
      close: async () => {
        calls.close += 1;
        await inner.close();
      },
    });
    return { adapter, calls };
  }

  it('connects lazily on first use, and start() is idempotent', async () => {
    const { adapter, calls } = counting();
    const locks = manager({ adapters: { local: adapter } });
    expect(calls.connect).toBe(0);
    await (await locks.acquire('k'))();
    await locks.start();
    await locks.start();
    await (await locks.acquire('k'))();
    expect(calls.connect).toBe(1);
  });

  it('retries connecting after a failed connect', async () => {
    let attempts = 0;
    const inner = memoryLock();
    const flaky = wrap(inner, {
      connect: async () => {
        attempts += 1;
        if (attempts === 1) throw new ClusterError('BACKEND_UNAVAILABLE', 'down');
      },
    });
    const locks = manager({ adapters: { local: flaky } });
    await expectCode(locks.acquire('k'), 'BACKEND_UNAVAILABLE');
    await (await locks.acquire('k'))();
    expect(attempts).toBe(2);
  });

  it('close() is idempotent, closes adapters once, and later calls fail with CLOSED', async () => {
    const { adapter, calls } = counting();
    const locks = manager({ adapters: { local: adapter } });
    await locks.start();
    await Promise.all([locks.close(), locks.close()]);
    await locks.close();
    expect(calls.close).toBe(1);
    await expectCode(locks.acquire('k'), 'CLOSED');
    await expectCode(locks.tryAcquire('k'), 'CLOSED');
    await expectCode(
      locks.runExclusive('k', () => 1),
      'CLOSED',
    );
    await expectCode(locks.start(), 'CLOSED');
    expectThrowsCode(() => locks.registerAdapter('x', memoryLock()), 'CLOSED');
  });

  it('supports await using on the manager', async () => {
    const hub = createMemoryHub();
    const other = manager({ hub });
    {
      await using locks = new LockManager({ appName: 'app', hub });
      await locks.acquire('k');
      await expectCode(other.tryAcquire('k'), 'LOCK_NOT_ACQUIRED');
    }
    await (await other.tryAcquire('k'))();
  });

  it('close() while runExclusive runs aborts its signal and runExclusive rejects with LockLostError', async () => {
    const hub = createMemoryHub();
    const locks = manager({ hub });
    const other = manager({ hub });
    const inside = signal<AbortSignal>();
    const running = rejection(
      locks.runExclusive('k', async ({ signal: leaseSignal }) => {
        inside.resolve(leaseSignal);
        await whenAborted(leaseSignal);
      }),
    );
    const leaseSignal = await inside.promise;
    await locks.close();
    expect(ClusterError.is(leaseSignal.reason, 'LOCK_LOST')).toBe(true);
    expect(await within(running, 2_000)).toBeInstanceOf(LockLostError);
    await (await other.tryAcquire('k'))();
  });
});

describe('LockManager leases', () => {
  it('a refused renewal aborts the signal with LockLostError, logs a warning, and runExclusive rejects', async () => {
    const inner = memoryLock();
    const refusing = wrap(inner, { extend: async () => null });
    const { logger, entries } = captureLogger();
    const locks = manager({ adapters: { local: refusing }, logger });
    let observed: unknown;
    const error = await rejection(
      locks.runExclusive(
        'k',
        async ({ signal: leaseSignal }) => {
          observed = await within(whenAborted(leaseSignal), 5_000);
          return 'finished';
        },
        90,
      ),
    );
    expect(observed).toBeInstanceOf(LockLostError);
    expect(error).toBe(observed);
    const warning = entries.find((entry) => entry.level === 'warn' && entry.msg === 'lock lease lost');
    expect(warning?.fields).toMatchObject({ key: 'k', component: 'lock-manager', app: 'app' });
    // The loss released what was left: the key is free.
    await (await locks.tryAcquire('k'))();
  });

  it('when fn throws after the lease is lost, runExclusive rejects with LockLostError caused by that error', async () => {
    const inner = memoryLock();
    const locks = manager({ adapters: { local: wrap(inner, { extend: async () => null }) } });
    const boom = new Error('boom');
    const error = await rejection(
      locks.runExclusive(
        'k',
        async ({ signal: leaseSignal }) => {
          await whenAborted(leaseSignal);
          throw boom;
        },
        90,
      ),
    );
    expect(error).toBeInstanceOf(LockLostError);
    expect((error as Error).cause).toBe(boom);
  });

  it('extend refused by the backend rejects with LockLostError and fires the signal', async () => {
    const inner = memoryLock();
    const locks = manager({ adapters: { local: wrap(inner, { extend: async () => null }) } });
    const lock = await locks.acquire('k');
    const error = await rejection(lock.extend(1_000));
    expect(error).toBeInstanceOf(LockLostError);
    expect(lock.signal.reason).toBe(error);
    expect(lock.held).toBe(false);
  });

  it('a released handle refuses extend, acquire and runExclusive with LOCK_NOT_HELD', async () => {
    const locks = manager();
    const lock = await locks.acquire('k');
    await lock.release();
    await expectCode(lock.extend(), 'LOCK_NOT_HELD');
    await expectCode(lock.acquire(1_000), 'LOCK_NOT_HELD');
    await expectCode(
      lock.runExclusive(() => 1),
      'LOCK_NOT_HELD',
    );
  });

  it('refuses a second runExclusive on the same handle while one runs', async () => {
    const locks = manager();
    const lock = await locks.acquire('k');
    const release = signal();
    const first = lock.runExclusive(() => release.promise);
    await expectCode(
      lock.runExclusive(() => 1),
      'INVALID_ARGUMENT',
    );
    release.resolve();
    await first;
    expect(lock.held).toBe(false);
  });

  it('a failed release rejects once; later calls resolve', async () => {
    const inner = memoryLock();
    const locks = manager({
      adapters: {
        local: wrap(inner, {
          release: async () => {
            throw new ClusterError('BACKEND_UNAVAILABLE', 'down');
          },
        }),
      },
    });
    const lock = await locks.acquire('k');
    await expectCode(lock(), 'BACKEND_UNAVAILABLE');
    await lock();
    expect(lock.held).toBe(false);
  });

  it('gives back a grant that raced with an abort and rejects with ABORTED', async () => {
    const inner = memoryLock();
    const controller = new AbortController();
    const released: number[] = [];
    // Grants even though the caller aborted meanwhile, as a remote reply in flight would.
    const racing = wrap(inner, {
      acquire: async (key, req) => {
        const grant = await inner.acquire(key, { ...req, signal: undefined });
        controller.abort();
        return grant;
      },
      release: async (key, owner, token) => {
        released.push(token);
        return inner.release(key, owner, token);
      },
    });
    const locks = manager({ adapters: { local: racing } });
    await expectCode(locks.acquire('k', { signal: controller.signal }), 'ABORTED');
    expect(released).toHaveLength(1);
    const free = await inner.acquire('app:k', request('probe'));
    expect(free).not.toBeNull();
  });

  it('defaults: tryAcquire holds with defaultTtl (no ttl-less reservation), acquire waits at most defaultWaitTimeout', async () => {
    const locks = manager({ defaultTtl: 150, defaultWaitTimeout: 100 });
    const before = Date.now();
    const reservation = await locks.tryAcquire('k');
    expect(reservation.expiresAt).toBeGreaterThan(before);
    expect(reservation.expiresAt).toBeLessThanOrEqual(Date.now() + 150);
    const error = await rejection(locks.acquire('k'));
    expect(isLockAcquireError(error)).toBe(true);
    expect(ClusterError.is(await within(whenAborted(reservation.signal), 5_000), 'LOCK_LOST')).toBe(true);
    await (await locks.tryAcquire('k'))();
  });
});

describe('NocoBase call shapes', () => {
  it('runExclusive(lockKey, async () => {...}) as in the plugin guide', async () => {
    const app = { name: 'main', lockManager: manager({ appName: 'main' }) };
    const plugin = { name: 'data-source-main' };
    const lockKey = `${plugin.name}:fields.beforeDestroy:${'posts'}`;
    const removed: string[] = [];
    await app.lockManager.runExclusive(lockKey, async () => {
      removed.push('title');
    });
    expect(removed).toEqual(['title']);
    expect(await app.lockManager.runExclusive(lockKey, async () => 42, 500)).toBe(42);
  });

  it('const release = await acquire(key, ttl); await release()', async () => {
    const lockManager = manager();
    const release = await lockManager.acquire('backup:auto-task:main', 500);
    await release();
    await (await lockManager.tryAcquire('backup:auto-task:main'))();
  });

  it('a handle is a function whose fields are read-only and whose methods work detached', async () => {
    const lockManager = manager();
    const lock = await lockManager.acquire('detached', 500);
    expect(typeof lock).toBe('function');
    expect({ key: lock.key, held: lock.held, token: lock.token }).toEqual({
      key: 'detached',
      held: true,
      token: expect.any(Number),
    });
    // Test files are modules (strict mode): writing a getter-only field throws.
    expect(() => {
      (lock as { token: number }).token = 0;
    }).toThrow(TypeError);
    const { extend, acquire, runExclusive, release } = lock;
    expect(lock.release).toBe(release); // one bound set per lease, not a new closure per read
    await extend(1_000);
    expect(await acquire(1_000)).toBe(lock);
    expect(await runExclusive(({ token }) => token)).toBe(lock.token);
    const again = await lockManager.acquire('detached', 500);
    await again[Symbol.asyncDispose]();
    expect(again.held).toBe(false);
    await release(); // already released by runExclusive: idempotent
    expect(lock.held).toBe(false);
  });

  it('tryAcquire(key, timeout) then lock.runExclusive(fn, ttl), and lock.acquire(ttl) returns the releaser', async () => {
    const lockManager = manager();
    const lock = await lockManager.tryAcquire('workflow:recover:main', 60_000);
    expect(await lock.runExclusive(async () => 'recovered', 60_000)).toBe('recovered');
    expect(lock.held).toBe(false);

    const reservation = await lockManager.tryAcquire('sort');
    const before = reservation.expiresAt;
    const release = await reservation.acquire(60_000);
    expect(release).toBe(reservation);
    expect(reservation.expiresAt).toBeGreaterThan(before);
    await release();

    const abandoned = await lockManager.tryAcquire('acl');
    await abandoned.release();
    await (await lockManager.tryAcquire('acl'))();
  });

  it('skip-if-busy with isLockAcquireError', async () => {
    const hub = createMemoryHub();
    const nodeA = manager({ hub });
    const nodeB = manager({ hub });
    const runOnce = async (locks: LockManager): Promise<string> => {
      let lock: Awaited<ReturnType<LockManager['tryAcquire']>>;
      try {
        lock = await locks.tryAcquire('cron');
      } catch (error) {
        if (isLockAcquireError(error)) return 'skipped';
        throw error;
      }
      return lock.runExclusive(async () => 'ran');
    };
    const held = await nodeA.acquire('cron');
    expect(await runOnce(nodeB)).toBe('skipped');
    await held();
    expect(await runOnce(nodeB)).toBe('ran');
  });
});

describe('memory lock adapter', () => {
  it('declares its capabilities', () => {
    expect(memoryLock().capabilities).toEqual({
      crossProcess: false,
      durable: false,
      fencing: true,
      fairness: 'fifo',
      wakeOnRelease: true,
    });
  });

  it('counts tokens per key across adapters on a hub, never resetting, and prunes free keys', async () => {
    const hub = createMemoryHub();
    const a = memoryLock(hub);
    const b = memoryLock(hub);
    const tokens: number[] = [];
    for (const adapter of [a, b, a]) {
      const grant = await adapter.acquire('k', request('o'));
      tokens.push(grant!.token);
      expect(await adapter.release('k', 'o', grant!.token)).toBe(true);
    }
    expect(tokens).toEqual([1, 2, 3]);
    expect((await b.acquire('other', request('o')))?.token).toBe(1);
    await b.release('other', 'o', 1);
    expect(lockState(hub).keys.size).toBe(0);
    expect(Object.fromEntries(lockState(hub).tokens)).toEqual({ k: 3, other: 1 });
  });

  it('serves waiters in arrival order, wakes them on release and on expiry, and prunes after', async () => {
    const hub = createMemoryHub();
    const adapter = memoryLock(hub);
    const first = await adapter.acquire('k', request('holder'));
    const order: string[] = [];
    const waiters = ['w1', 'w2', 'w3'].map((owner) =>
      adapter.acquire('k', request(owner, { waitTimeout: 5_000, ttl: 50 })).then((grant) => {
        order.push(owner);
        return grant!;
      }),
    );
    await adapter.release('k', 'holder', first!.token);
    const grants = await within(Promise.all(waiters), 5_000);
    // w1 and w2 never release: their leases expire and hand over.
    expect(order).toEqual(['w1', 'w2', 'w3']);
    expect(grants.map((grant) => grant.token)).toEqual([2, 3, 4]);
    expect(await adapter.release('k', 'w3', 4)).toBe(true);
    expect(lockState(hub).keys.size).toBe(0);
  });

  it('waitTimeout 0 is a single attempt; timed-out and aborted waits leave nothing behind', async () => {
    const hub = createMemoryHub();
    const adapter = memoryLock(hub);
    const held = await adapter.acquire('k', request('holder'));
    expect(await adapter.acquire('k', request('try'))).toBeNull();
    expect(await adapter.acquire('k', request('wait', { waitTimeout: 30 }))).toBeNull();
    const controller = new AbortController();
    const aborted = rejection(
      adapter.acquire('k', request('abort', { waitTimeout: 5_000, signal: controller.signal })),
    );
    controller.abort();
    expect(ClusterError.is(await aborted, 'ABORTED')).toBe(true);
    await expectCode(adapter.acquire('k', request('pre', { signal: AbortSignal.abort() })), 'ABORTED');
    await adapter.release('k', 'holder', held!.token);
    expect(lockState(hub).keys.size).toBe(0);
  });

  it('release and extend check owner and token, and an expired lease cannot be extended', async () => {
    const adapter = memoryLock();
    const grant = (await adapter.acquire('k', request('me', { ttl: 40 })))!;
    expect(await adapter.release('k', 'you', grant.token)).toBe(false);
    expect(await adapter.release('k', 'me', grant.token + 1)).toBe(false);
    expect(await adapter.extend('k', 'you', grant.token, 1_000)).toBeNull();
    expect(await adapter.acquire('k', request('other'))).toBeNull();
    const extended = await adapter.extend('k', 'me', grant.token, 40);
    expect(extended?.token).toBe(grant.token);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(await adapter.extend('k', 'me', grant.token, 1_000)).toBeNull();
    expect(await adapter.release('k', 'me', grant.token)).toBe(false);
    expect((await adapter.acquire('k', request('other')))?.token).toBe(grant.token + 1);
  });

  it('close() rejects its pending waits with CLOSED, hands its holds on, and refuses later calls', async () => {
    const hub = createMemoryHub();
    const closing = memoryLock(hub);
    const staying = memoryLock(hub);
    await closing.acquire('held', request('c'));
    const blocker = await staying.acquire('blocked', request('s'));
    const pending = rejection(closing.acquire('blocked', request('cw', { waitTimeout: 5_000 })));
    const next = staying.acquire('held', request('sw', { waitTimeout: 5_000 }));
    await closing.close();
    await closing.close();
    expect(ClusterError.is(await pending, 'CLOSED')).toBe(true);
    expect((await within(next, 2_000))?.token).toBe(2);
    await expectCode(closing.acquire('x', request('c')), 'CLOSED');
    await expectCode(closing.release('held', 'c', 1), 'CLOSED');
    await expectCode(closing.connect(), 'CLOSED');
    await staying.release('blocked', 's', blocker!.token);
    await staying.release('held', 'sw', 2);
    expect(lockState(hub).keys.size).toBe(0);
  });

  it('without a hub, each adapter is a separate process', async () => {
    const a = memoryLock();
    const b = memoryLock();
    expect(await a.acquire('k', request('a'))).not.toBeNull();
    expect(await b.acquire('k', request('b'))).not.toBeNull();
  });
});
