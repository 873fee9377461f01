/**
 * Figures, not assertions; skipped unless LOCK_BENCH=1 (`LOCK_BENCH=1 npx vitest run test/lock.bench`).
 * 1. Sequential acquire+release: through a LockManager, straight on the adapter, and a raw ioredis
 *    baseline (SET NX PX, then a compare-and-delete script by SHA: what a minimal Redis mutex does).
 * 2. 50 contenders on one key over 5 nodes, 5,000 grants: wait p50/p99 (all, and after the first 500
 *    grants), the least-served contender against the mean share.
 */
import { LockManager } from '@cluster/core';
import { REDIS, requireServer, uniqueName } from '@cluster/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisLock } from '../src/lock/index.js';
import { deleteKeysUnder, directClient, REDIS_URL } from './helpers/lock-redis.js';

const available = await requireServer(REDIS);
const enabled = available && process.env.LOCK_BENCH === '1';

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
}

const round1 = (n: number) => Math.round(n * 10) / 10;

async function opsPerSecond(ops: number, op: (i: number) => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 500; i += 1) await op(i);
  const started = performance.now();
  for (let i = 0; i < ops; i += 1) await op(i);
  return Math.round(ops / ((performance.now() - started) / 1_000));
}

describe.skipIf(!enabled)('redis lock figures', () => {
  const keyPrefix = uniqueName('t');
  afterAll(() => deleteKeysUnder(keyPrefix));

  function manager(): LockManager {
    return new LockManager({
      appName: 'bench',
      adapters: { redis: createRedisLock({ url: REDIS_URL, keyPrefix }) },
      defaultAdapter: 'redis',
    });
  }

  it('sequential acquire+release', async () => {
    const managed = manager();
    await managed.start();
    const adapter = createRedisLock({ url: REDIS_URL, keyPrefix });
    await adapter.connect();
    const raw = directClient();
    raw.defineCommand('benchDelIfEqual', {
      numberOfKeys: 1,
      lua: "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    });
    const rawDel = (
      raw as unknown as { benchDelIfEqual(k: string, v: string): Promise<number> }
    ).benchDelIfEqual.bind(raw);
    await raw.connect();
    const rawKey = `${keyPrefix}:raw`;
    const ops = 5_000;
    const figures: Record<string, number[]> = { manager: [], runExclusive: [], adapter: [], raw: [] };
    for (let round = 0; round < 2; round += 1) {
      figures.manager!.push(await opsPerSecond(ops, async () => (await managed.acquire('seq', 10_000))()));
      figures.runExclusive!.push(await opsPerSecond(ops, () => managed.runExclusive('seq', () => {})));
      figures.adapter!.push(
        await opsPerSecond(ops, async (i) => {
          const grant = await adapter.acquire('bench:seq2', {
            owner: `o${round}-${i}`,
            ttl: 10_000,
            waitTimeout: 0,
          });
          await adapter.release('bench:seq2', `o${round}-${i}`, grant!.token);
        }),
      );
      figures.raw!.push(
        await opsPerSecond(ops, async (i) => {
          await raw.set(rawKey, `o${round}-${i}`, 'PX', 10_000, 'NX');
          await rawDel(rawKey, `o${round}-${i}`);
        }),
      );
    }
    const best = (name: string) => Math.max(...figures[name]!);
    console.log(
      JSON.stringify({
        figure: 'lock sequential acquire+release ops/s (best of 2 rounds)',
        manager: best('manager'),
        runExclusive: best('runExclusive'),
        adapter: best('adapter'),
        rawSetNxAndScriptDel: best('raw'),
        adapterVsRaw: Number((best('adapter') / best('raw')).toFixed(2)),
        managerVsRaw: Number((best('manager') / best('raw')).toFixed(2)),
        rounds: figures,
      }),
    );
    raw.disconnect();
    await adapter.close();
    await managed.close();
    expect(best('adapter')).toBeGreaterThan(0);
  });

  it('50 contenders on one key', async () => {
    const nodes = Array.from({ length: 5 }, manager);
    await Promise.all(nodes.map((node) => node.start()));
    const contenders = 50;
    const total = 5_000;
    const served = new Array<number>(contenders).fill(0);
    const waits: number[] = [];
    let steadyFrom = 0;
    let grants = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: contenders }, async (_, i) => {
        const node = nodes[i % nodes.length]!;
        while (grants < total) {
          const asked = performance.now();
          await node.runExclusive('contended', () => {
            if (grants >= total) return;
            waits.push(performance.now() - asked);
            grants += 1;
            if (grants === 500) steadyFrom = waits.length;
            served[i] = (served[i] ?? 0) + 1;
          });
        }
      }),
    );
    const elapsed = performance.now() - started;
    const steady = waits.slice(steadyFrom).sort((a, b) => a - b);
    waits.sort((a, b) => a - b);
    const least = Math.min(...served);
    console.log(
      JSON.stringify({
        figure: 'lock 50 contenders on one key, 5 nodes',
        grants: total,
        grantsPerSec: Math.round(total / (elapsed / 1_000)),
        waitP50Ms: round1(percentile(waits, 50)),
        waitP99Ms: round1(percentile(waits, 99)),
        waitMaxMs: round1(waits[waits.length - 1] ?? 0),
        steadyWaitP50Ms: round1(percentile(steady, 50)),
        steadyWaitP99Ms: round1(percentile(steady, 99)),
        leastServed: least,
        mostServed: Math.max(...served),
        leastVsMeanShare: Number((least / (total / contenders)).toFixed(2)),
      }),
    );
    await Promise.all(nodes.map((node) => node.close()));
    expect(grants).toBe(total);
  }, 120_000);
});
