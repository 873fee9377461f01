/**
 * Q6: a private redis-server (spare port, appendonly yes + appendfsync always) is SIGKILLed in the middle
 * of consumption and restarted on the same port and directory. The consumers resume by themselves and
 * no acknowledged (confirmed) task is lost.
 */
import { EventQueue } from '@cluster/core';
import { REDIS, requireServer, waitFor } from '@cluster/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisQueue } from '../src/index.js';
import { type RedisServerHandle, startRedisServer } from './helpers/redis-server.js';

const available = await requireServer(REDIS);
const haveBinary = await (async () => {
  const { spawnSync } = await import('node:child_process');
  return spawnSync('redis-server', ['--version']).status === 0;
})();
if (!haveBinary) console.warn('skipping the queue restart test: redis-server is not on PATH');

const TASKS = 200;

describe.skipIf(!available || !haveBinary)('redis queue across a server restart', () => {
  let server: RedisServerHandle;

  beforeAll(async () => {
    server = await startRedisServer({ appendonly: true });
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('resumes by itself after SIGKILL + restart, and loses no acknowledged task', async () => {
    const options = {
      url: server.url,
      keyPrefix: 'restart',
      visibilityTimeout: 1_000,
      blockMs: 250,
      durable: true,
      commandTimeout: 1_000,
    };
    const producer = new EventQueue({ appName: 'r', adapter: createRedisQueue(options) });
    const workers = [0, 1].map(
      () =>
        new EventQueue({
          appName: 'r',
          adapter: createRedisQueue(options),
          idleInterval: 20,
          closeTimeout: 1_000,
        }),
    );
    try {
      await producer.start();
      expect(producer.capabilities.durable).toBe(true);
      const confirmed: number[] = [];
      for (let n = 0; n < TASKS; n++) {
        await producer.publish('jobs', n, { id: `job-${n}` });
        confirmed.push(n);
      }
      const runs = new Map<number, number>();
      const doneAt: number[] = [];
      for (const worker of workers) {
        await worker.start();
        worker.subscribe<number>('jobs', {
          concurrency: 2,
          process: async (n) => {
            await new Promise((resolve) => setTimeout(resolve, 5 + (n % 10)));
            runs.set(n, (runs.get(n) ?? 0) + 1);
            doneAt.push(Date.now());
          },
        });
      }
      await waitFor(() => runs.size >= TASKS / 3, { timeout: 10_000, message: 'a third processed' });
      await server.kill();
      const killedAt = Date.now();
      const processedAtKill = runs.size;
      await new Promise((resolve) => setTimeout(resolve, 300)); // the outage, not an assertion
      await server.restart();
      const restartedAt = Date.now();
      await waitFor(() => doneAt.some((t) => t > restartedAt), {
        timeout: 15_000,
        message: 'consumers resumed after the restart',
      });
      const resumedAt = Math.min(...doneAt.filter((t) => t > restartedAt));
      await waitFor(() => confirmed.every((n) => runs.has(n)), {
        timeout: 20_000,
        interval: 20,
        message: 'every acknowledged task processed',
      });
      await waitFor(
        async () => {
          const stats = await producer.stats('jobs');
          return stats.pending === 0 && stats.delayed === 0 && stats.inFlight === 0;
        },
        { timeout: 15_000, interval: 50, message: 'queue drained' },
      );
      const lost = confirmed.filter((n) => !runs.has(n));
      expect(lost).toEqual([]);
      const duplicates = [...runs.values()].reduce((sum, count) => sum + count - 1, 0);
      console.log(
        `queue restart figures: ${JSON.stringify({
          test: 'Q6',
          tasks: TASKS,
          confirmed: confirmed.length,
          processedAtKill,
          lost: lost.length,
          duplicates,
          outageMs: restartedAt - killedAt,
          resumeMsAfterRestart: resumedAt - restartedAt,
        })}`,
      );
    } finally {
      await Promise.all(workers.map((worker) => worker.close({ timeout: 1_000 })));
      await producer.close({ timeout: 1_000 });
    }
  }, 60_000);
});
