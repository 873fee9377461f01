/**
 * Q5: connection faults between the queue adapter and RabbitMQ, injected by the testkit's FaultProxy —
 * cut (RST of every live connection), blackhole (bytes dropped, sockets open) and refuse (new
 * connections reset) — once on the publishing side and once on the consuming side. Every publish
 * settles within its deadline (confirmed, or a typed ClusterError), no confirmed task is lost, and the
 * adapter recovers by itself.
 */
import { ClusterError, EventQueue } from '@cluster/core';
import { FaultProxy, RABBITMQ, requireServer, uniqueName, waitFor } from '@cluster/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { createRabbitQueue, type RabbitQueueOptions } from '../src/index.js';
import { brokerTarget, countingLogger, type Fault, faultConnection, inject } from './helpers/faults.js';
import { AMQP_URL, TopologyTracker } from './helpers/rabbit.js';

const available = await requireServer(RABBITMQ);

const PUBLISH_TIMEOUT = 1_500;
/** What a publish may take at most: its deadline, plus a loaded box. */
const PUBLISH_DEADLINE = PUBLISH_TIMEOUT + 750;
const FAULT_MS = 700;
/**
 * A blackhole lasts past the heartbeat timeout (1 s heartbeats: noticed after 2-3 s), as a real
 * partition does before TCP gives up. The proxy DROPS bytes; real TCP retransmits them, so a
 * shorter blackhole is a delay on a real network. On the proxy, a short one silently deletes whole
 * AMQP frames mid-stream, which desynchronises delivery tags and confirms (nothing in AMQP 0-9-1
 * can detect that); see the README's "Guarantees".
 */
const BLACKHOLE_MS = 3_500;
const PUBLISH_EVERY_MS = 10;

type Side = 'publish' | 'consume';

interface Outcome {
  n: number;
  startedAt: number;
  settledAt?: number;
  confirmed?: boolean;
  typed?: boolean;
}

const figures: Record<string, unknown>[] = [];

describe.skipIf(!available)('rabbitmq queue under connection faults', () => {
  const tracker = new TopologyTracker();

  afterAll(async () => {
    await tracker.cleanup();
    console.log(`queue fault figures:\n${figures.map((f) => JSON.stringify(f)).join('\n')}`);
  });

  async function runCase(fault: Fault, side: Side): Promise<void> {
    const prefix = uniqueName('tqf');
    const proxy = await FaultProxy.start({ target: brokerTarget() });
    // Claims outlast the test: a delivery a fault swallowed comes back through the broker's
    // requeue of the dead channel, not through claim expiry.
    const common: RabbitQueueOptions = { prefix, visibilityTimeout: 30_000, publishTimeout: PUBLISH_TIMEOUT };
    const logs = new Map<string, number>();
    const proxied: RabbitQueueOptions = {
      ...common,
      ...faultConnection(proxy),
      logger: countingLogger(logs),
    };
    const direct: RabbitQueueOptions = { ...common, url: AMQP_URL };
    const producer = new EventQueue({
      appName: 'faults',
      adapter: tracker.track(createRabbitQueue(side === 'publish' ? proxied : direct)),
    });
    const worker = new EventQueue({
      appName: 'faults',
      adapter: tracker.track(createRabbitQueue(side === 'consume' ? proxied : direct)),
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
        await waitFor(() => processed.size >= 20, { timeout: 10_000, message: 'traffic before the fault' });
        inject(proxy, fault);
        const faultAt = Date.now();
        await new Promise((resolve) => setTimeout(resolve, fault === 'blackhole' ? BLACKHOLE_MS : FAULT_MS)); // the fault's duration, not an assertion
        proxy.pass();
        const passAt = Date.now();
        const firstAfter = n;
        await waitFor(() => [...processedAt].some(([k]) => k >= firstAfter), {
          timeout: 15_000,
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
          timeout: 20_000,
          message: 'every confirmed task processed',
        });
        const lost = confirmed.filter((k) => !processed.has(k));
        expect(lost).toEqual([]);
        figures.push({
          test: 'Q5',
          fault,
          side,
          faultMs: passAt - faultAt,
          publishes: outcomes.length,
          confirmed: confirmed.length,
          rejected: outcomes.filter((o) => o.confirmed === false).length,
          lostAfterConfirm: lost.length,
          duplicates: [...processed.values()].filter((count) => count > 1).length,
          maxPublishSettleMs: Math.max(...outcomes.map((o) => o.settledAt! - o.startedAt)),
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
      it(`${fault} during ${side}: publishes settle in time, nothing confirmed is lost, the adapter recovers`, async () => {
        await runCase(fault, side);
      }, 60_000);
    }
  }
});
