/**
 * Q5: connection faults between the queue adapter and Redis, injected by the testkit's FaultProxy —
 * cut (RST of every live connection), blackhole (bytes dropped, sockets open) and refuse (new
 * connections reset) — once on the publishing side and once on the consuming side. Every publish
 * settles within its deadline (confirmed, or a typed ClusterError), no confirmed task is lost, and the
 * consumer loop recovers by itself.
 */
import { ClusterError, EventQueue, type Logger } from '@cluster/core';
import { FaultProxy, REDIS, requireServer, uniqueName, waitFor } from '@cluster/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisQueue, type RedisQueueOptions } from '../src/index.js';
import { deleteKeys, REDIS_URL } from './helpers/queue-redis.js';

const available = await requireServer(REDIS);

const COMMAND_TIMEOUT = 500;
/** What a publish may take at most: the command timeout, plus the adapter's own guard and a loaded box. */
const PUBLISH_DEADLINE = COMMAND_TIMEOUT + 1_000 + 500;
const FAULT_MS = 700;
const PUBLISH_EVERY_MS = 10;

type Fault = 'cut' | 'blackhole' | 'refuse';
type Side = 'publish' | 'consume';

interface Outcome {
  n: number;
  startedAt: number;
  settledAt?: number;
  confirmed?: boolean;
  typed?: boolean;
}

/** Counts log messages by text, so the figures show which recovery paths ran. */
function countingLogger(counts: Map<string, number>): Logger {
  const count = (_: object, msg?: string) => {
    if (msg) counts.set(msg, (counts.get(msg) ?? 0) + 1);
  };
  const logger: Logger = { debug: count, info: count, warn: count, error: count, child: () => logger };
  return logger;
}

function target(): { host: string; port: number } {
  const url = new URL(REDIS_URL);
  return { host: url.hostname || '127.0.0.1', port: Number(url.port || 6379) };
}

function inject(proxy: FaultProxy, fault: Fault): void {
  if (fault === 'cut') proxy.cut();
  else if (fault === 'blackhole') proxy.blackhole();
  else {
    proxy.refuse();
    // Refuse only hits new connections: cut the live ones so the adapter has to reconnect into it.
    proxy.cut();
  }
}

const figures: Record<string, unknown>[] = [];

describe.skipIf(!available)('redis queue under connection faults', () => {
  const prefixes: string[] = [];

  afterAll(async () => {
    for (const prefix of prefixes) await deleteKeys(prefix);
    console.log(`queue fault figures:\n${figures.map((f) => JSON.stringify(f)).join('\n')}`);
  });

  async function runCase(fault: Fault, side: Side): Promise<void> {
    const keyPrefix = uniqueName('tqf');
    prefixes.push(keyPrefix);
    const proxy = await FaultProxy.start({ target: target() });
    // Claims outlast the test: a delivery whose reply a fault swallowed must come back through the
    // consumer's own recovery, not through claim expiry.
    const common: RedisQueueOptions = { keyPrefix, visibilityTimeout: 30_000, blockMs: 250 };
    const logs = new Map<string, number>();
    const proxied: RedisQueueOptions = {
      ...common,
      logger: countingLogger(logs),
      url: `redis://${proxy.url}`,
      commandTimeout: COMMAND_TIMEOUT,
      redisOptions: { retryStrategy: (times) => Math.min(25 * times, 200), connectTimeout: 1_000 },
    };
    const direct: RedisQueueOptions = { ...common, url: REDIS_URL };
    const producer = new EventQueue({
      appName: 'faults',
      adapter: createRedisQueue(side === 'publish' ? proxied : direct),
    });
    const worker = new EventQueue({
      appName: 'faults',
      adapter: createRedisQueue(side === 'consume' ? proxied : direct),
      idleInterval: 20,
      closeTimeout: 1_000,
    });
    try {
      await producer.start();
      await worker.start();
      const processed = new Map<number, number>();
      const processedAt = new Map<number, number>();
      worker.subscribe<number>('jobs', {
        concurrency: 4,
        process: async (n) => {
          processed.set(n, (processed.get(n) ?? 0) + 1);
          if (!processedAt.has(n)) processedAt.set(n, Date.now());
        },
      });

      const outcomes: Outcome[] = [];
      const inFlight = new Set<Promise<void>>();
      let n = 0;
      const publishOne = () => {
        const outcome: Outcome = { n: n++, startedAt: Date.now() };
        outcomes.push(outcome);
        const p = producer.publish('jobs', outcome.n, { maxRetries: 0 }).then(
          () => {
            outcome.confirmed = true;
          },
          (error: unknown) => {
            outcome.confirmed = false;
            outcome.typed = ClusterError.is(error);
          },
        );
        const tracked = p.finally(() => {
          outcome.settledAt = Date.now();
          inFlight.delete(tracked);
        });
        inFlight.add(tracked);
      };
      const timer = setInterval(publishOne, PUBLISH_EVERY_MS);
      try {
        await waitFor(() => processed.size >= 20, {
          timeout: 10_000,
          message: 'traffic flowing before the fault',
        });
        inject(proxy, fault);
        const faultAt = Date.now();
        await new Promise((resolve) => setTimeout(resolve, FAULT_MS)); // the fault's duration, not an assertion
        proxy.pass();
        const passAt = Date.now();
        const firstAfter = n;
        await waitFor(() => [...processedAt].some(([k]) => k >= firstAfter), {
          timeout: 10_000,
          message: 'tasks published after the fault are processed again',
        });
        const recoveredAt = Math.min(
          ...[...processedAt].filter(([k]) => k >= firstAfter).map(([, at]) => at),
        );
        await waitFor(() => n >= firstAfter + 30, { message: 'more traffic after the fault' });
        clearInterval(timer);
        await Promise.race([
          Promise.all([...inFlight]),
          new Promise((resolve) => setTimeout(resolve, PUBLISH_DEADLINE + 2_000)),
        ]);

        const unsettled = outcomes.filter((o) => o.settledAt === undefined);
        expect(
          unsettled.map((o) => o.n),
          'publishes that never settled',
        ).toEqual([]);
        const late = outcomes.filter((o) => o.settledAt! - o.startedAt > PUBLISH_DEADLINE);
        expect(
          late.map((o) => [o.n, o.settledAt! - o.startedAt]),
          'publishes settled past the deadline',
        ).toEqual([]);
        const untyped = outcomes.filter((o) => o.confirmed === false && !o.typed);
        expect(
          untyped.map((o) => o.n),
          'rejections that are not ClusterErrors',
        ).toEqual([]);

        const confirmed = outcomes.filter((o) => o.confirmed).map((o) => o.n);
        await waitFor(() => confirmed.every((k) => processed.has(k)), {
          timeout: 15_000,
          message: 'every confirmed task processed',
        });
        const lost = confirmed.filter((k) => !processed.has(k));
        expect(lost).toEqual([]);
        const duplicates = [...processed.values()].filter((count) => count > 1).length;
        const rejected = outcomes.filter((o) => o.confirmed === false).length;
        const maxSettle = Math.max(...outcomes.map((o) => o.settledAt! - o.startedAt));
        figures.push({
          test: 'Q5',
          fault,
          side,
          faultMs: passAt - faultAt,
          publishes: outcomes.length,
          confirmed: confirmed.length,
          rejected,
          lostAfterConfirm: lost.length,
          duplicates,
          maxPublishSettleMs: maxSettle,
          recoveryMsAfterPass: recoveredAt - passAt,
          adapterLogs: Object.fromEntries(logs),
          proxy: proxy.stats,
        });
      } finally {
        clearInterval(timer);
      }
    } finally {
      await worker.close({ timeout: 1_000 });
      await producer.close({ timeout: 1_000 });
      await proxy.stop();
    }
  }

  for (const side of ['publish', 'consume'] as const) {
    for (const fault of ['cut', 'blackhole', 'refuse'] as const) {
      it(`${fault} during ${side}: publishes settle in time, nothing confirmed is lost, the loop recovers`, async () => {
        await runCase(fault, side);
      });
    }
  }
});
