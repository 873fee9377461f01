/**
 * L6: fencing tokens across a Redis restart, on a redis-server this test starts on a spare port.
 * With AOF (`appendonly yes`, `appendfsync always`) the counter survives SIGKILL: tokens never go
 * backwards, even for a node that never saw the earlier ones, and a lease held across the restart is
 * still held. Without persistence the counter is lost: a node that saw earlier tokens detects it,
 * warns and lifts the counter above them, so its tokens still never go backwards.
 */
import { execFileSync } from 'node:child_process';
import { ClusterError, type LockAdapter, type Logger } from '@cluster/core';
import { uniqueName, waitFor } from '@cluster/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { createRedisLock } from '../src/lock/index.js';
import { type RedisServerHandle, startRedisServer } from './helpers/redis-server.js';

const hasRedisServer = (() => {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    console.warn('skipping lock restart tests: no redis-server binary on PATH');
    return false;
  }
})();

interface Captured {
  logger: Logger;
  warnings: string[];
}

function capturingLogger(): Captured {
  const warnings: string[] = [];
  const logger: Logger = {
    debug: () => {},
    info: () => {},
    warn: (_obj, msg) => warnings.push(msg ?? ''),
    error: (_obj, msg) => warnings.push(msg ?? ''),
    child: () => logger,
  };
  return { logger, warnings };
}

function expectIncreasing(tokens: number[]): void {
  for (let i = 1; i < tokens.length; i += 1) {
    expect(tokens[i], `token #${i} after ${tokens[i - 1]}`).toBeGreaterThan(tokens[i - 1]!);
  }
}

describe.skipIf(!hasRedisServer)('redis lock across a Redis restart', () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });

  async function server(appendonly: boolean): Promise<RedisServerHandle> {
    const handle = await startRedisServer({ appendonly });
    closers.push(() => handle.stop());
    return handle;
  }

  function adapter(url: string, keyPrefix: string, logger?: Logger): LockAdapter {
    const lock = createRedisLock({
      url,
      keyPrefix,
      commandTimeout: 500,
      durable: true,
      ...(logger ? { logger } : {}),
    });
    closers.push(() => lock.close());
    return lock;
  }

  /** Acquires and releases `key` once, retrying (typed errors only) while the server comes back. */
  async function grantOnce(lock: LockAdapter, key: string): Promise<number> {
    const owner = uniqueName('owner');
    const grant = await waitFor(
      async () => {
        try {
          return await lock.acquire(key, { owner, ttl: 5_000, waitTimeout: 0 });
        } catch (error) {
          expect(ClusterError.is(error), String(error)).toBe(true);
          return null;
        }
      },
      { timeout: 15_000, interval: 20, message: 'a grant after the restart' },
    );
    await lock.release(key, owner, grant.token).catch(() => false);
    return grant.token;
  }

  it('with AOF always: tokens never go backwards across SIGKILL + restart, for old and new nodes', async () => {
    const redis = await server(true);
    const keyPrefix = uniqueName('t');
    const captured = capturingLogger();
    const longLived = adapter(redis.url, keyPrefix, captured.logger);
    await longLived.connect();
    const tokens: number[] = [];
    const maxBefore: number[] = [];
    const firstAfter: number[] = [];
    for (let restart = 0; restart < 3; restart += 1) {
      for (let i = 0; i < 20; i += 1) tokens.push(await grantOnce(longLived, 'fenced'));
      maxBefore.push(Math.max(...tokens));
      // A grant in flight while the server dies: its outcome is unknown, the next ones must be higher.
      const inFlightOwner = uniqueName('owner');
      const inFlight = longLived
        .acquire('fenced', { owner: inFlightOwner, ttl: 5_000, waitTimeout: 0 })
        .catch(() => null);
      await redis.restart();
      const grant = await inFlight;
      if (grant) {
        tokens.push(grant.token);
        await longLived.release('fenced', inFlightOwner, grant.token).catch(() => false);
      }
      // A node that never saw a token (no floor to lean on) must still get a higher one: AOF kept it.
      const fresh = adapter(redis.url, keyPrefix);
      await fresh.connect();
      const freshToken = await grantOnce(fresh, 'fenced');
      firstAfter.push(freshToken);
      expect(freshToken).toBeGreaterThan(maxBefore[restart]!);
      tokens.push(freshToken);
      tokens.push(await grantOnce(longLived, 'fenced'));
    }
    expectIncreasing(tokens);
    expect(captured.warnings.filter((w) => w.includes('gone backwards'))).toEqual([]);
    console.log(
      JSON.stringify({
        figure: 'lock tokens across restarts (AOF always)',
        restarts: 3,
        maxBefore,
        firstAfter,
      }),
    );
  });

  it('with AOF always: a lease held across the restart is still held, and its owner can release it', async () => {
    const redis = await server(true);
    const keyPrefix = uniqueName('t');
    const holder = adapter(redis.url, keyPrefix);
    const other = adapter(redis.url, keyPrefix);
    await holder.connect();
    await other.connect();
    const grant = await holder.acquire('lease', { owner: 'holder', ttl: 30_000, waitTimeout: 0 });
    expect(grant).not.toBeNull();
    await redis.restart();
    const contender = await waitFor(
      async () => {
        try {
          return { result: await other.acquire('lease', { owner: 'other', ttl: 5_000, waitTimeout: 0 }) };
        } catch {
          return null;
        }
      },
      { timeout: 15_000, interval: 20, message: 'the other node reaching the restarted server' },
    );
    expect(contender.result).toBeNull();
    const released = await waitFor(
      async () => {
        try {
          return { ok: await holder.release('lease', 'holder', grant!.token) };
        } catch {
          return null;
        }
      },
      { timeout: 15_000, interval: 20, message: 'the holder releasing after the restart' },
    );
    expect(released.ok).toBe(true);
    const next = await other.acquire('lease', { owner: 'other', ttl: 5_000, waitTimeout: 0 });
    expect(next?.token).toBeGreaterThan(grant!.token);
  });

  it('without persistence: the lost counter is detected and lifted, so a node’s tokens still rise', async () => {
    const redis = await server(false);
    const keyPrefix = uniqueName('t');
    const captured = capturingLogger();
    const longLived = adapter(redis.url, keyPrefix, captured.logger);
    await longLived.connect();
    const tokens: number[] = [];
    for (let i = 0; i < 10; i += 1) tokens.push(await grantOnce(longLived, 'volatile'));
    const before = Math.max(...tokens);
    await redis.restart();
    const after = await grantOnce(longLived, 'volatile');
    tokens.push(after);
    expectIncreasing(tokens);
    expect(captured.warnings.some((w) => w.includes('gone backwards'))).toBe(true);
    // The counter was lifted at the server, so a node that saw nothing continues above it too.
    const fresh = adapter(redis.url, keyPrefix);
    await fresh.connect();
    const freshToken = await grantOnce(fresh, 'volatile');
    expect(freshToken).toBeGreaterThan(after);
    console.log(
      JSON.stringify({
        figure: 'lock tokens across a restart without persistence',
        maxBefore: before,
        firstAfter: after,
        freshNodeAfter: freshToken,
        warnings: captured.warnings.length,
      }),
    );
  });
});
