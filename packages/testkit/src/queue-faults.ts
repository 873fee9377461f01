/**
 * Connection faults between a queue adapter and its server, injected by the FaultProxy — cut (RST of
 * every live connection), blackhole (bytes dropped, sockets open) and refuse (new connections reset)
 * — once on the publishing side and once on the consuming side, under steady traffic. Every publish
 * settles within its deadline (confirmed, or a typed ClusterError), no confirmed task is lost, and
 * the consumer recovers by itself. Figures (settle times, recovery after the fault, duplicates, which
 * recovery paths the adapter logged) are printed at the end.
 */
import { ClusterError, EventQueue, type Logger, type QueueAdapter } from '@cluster/core';
import { afterAll, describe, expect, it } from 'vitest';
import { FaultProxy } from './fault-proxy.js';
import { waitFor } from './wait.js';

export type ProxyFault = 'cut' | 'blackhole' | 'refuse';
export type FaultSide = 'publish' | 'consume';

export interface QueueFaultCase {
  readonly fault: ProxyFault;
  readonly side: FaultSide;
  /** The proxy in front of the server: build the faulted side's adapter on `proxy.url`. */
  readonly proxy: FaultProxy;
  /** Give it to the faulted side's adapter: the figures count its messages. */
  readonly logger: Logger;
}

export interface QueueFaultOptions {
  /** Shown in the describe() title. */
  name: string;
  skip?: boolean;
  /** The server's address, as the proxy's target. */
  target: { host: string; port: number };
  /**
   * Two adapters on one fresh queue: the one on `side` goes through the proxy, the other straight to
   * the server. Claims should outlast the test, so a delivery a fault swallowed must come back
   * through the adapter's own recovery, not through claim expiry.
   */
  adapters(test: QueueFaultCase): { producer: QueueAdapter; worker: QueueAdapter };
  /** Called once at the end: delete what the cases created on the server. */
  cleanup?(): unknown;
  /** The most a publish may take, fault or not (the adapter's deadline plus room for a loaded box). */
  publishDeadlineMs: number;
  /** How long each fault lasts. Default 700 ms. */
  faultMs?(fault: ProxyFault): number;
  /** Per-test timeout. Default 60 s. */
  timeoutMs?: number;
}

interface Outcome {
  n: number;
  startedAt: number;
  settledAt?: number;
  confirmed?: boolean;
  typed?: boolean;
}

/** Injects `fault`; a refusal also cuts the live connections, so the adapter must reconnect into it. */
export function injectFault(proxy: FaultProxy, fault: ProxyFault): void {
  if (fault === 'cut') proxy.cut();
  else if (fault === 'blackhole') proxy.blackhole();
  else {
    proxy.refuse();
    proxy.cut();
  }
}

/** A logger that counts messages by text, so figures can show which recovery paths ran. */
export function countingLogger(counts: Map<string, number>): Logger {
  const count = (_: object, msg?: string) => {
    if (msg) counts.set(msg, (counts.get(msg) ?? 0) + 1);
  };
  const logger: Logger = { debug: count, info: count, warn: count, error: count, child: () => logger };
  return logger;
}

const PUBLISH_EVERY_MS = 10;

export function describeQueueFaults(options: QueueFaultOptions): void {
  const figures: Record<string, unknown>[] = [];

  async function runCase(fault: ProxyFault, side: FaultSide): Promise<void> {
    const proxy = await FaultProxy.start({ target: options.target });
    const logs = new Map<string, number>();
    const { producer: producerAdapter, worker: workerAdapter } = options.adapters({
      fault,
      side,
      proxy,
      logger: countingLogger(logs),
    });
    const producer = new EventQueue({ appName: 'faults', adapter: producerAdapter });
    const worker = new EventQueue({
      appName: 'faults',
      adapter: workerAdapter,
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
        const tracked = producer
          .publish('jobs', outcome.n, { maxRetries: 0 })
          .then(
            () => {
              outcome.confirmed = true;
            },
            (error: unknown) => {
              outcome.confirmed = false;
              outcome.typed = ClusterError.is(error);
            },
          )
          .finally(() => {
            outcome.settledAt = Date.now();
            inFlight.delete(tracked);
          });
        inFlight.add(tracked);
      };
      const timer = setInterval(publishOne, PUBLISH_EVERY_MS);
      try {
        await waitFor(() => processed.size >= 20, { timeout: 15_000, message: 'traffic before the fault' });
        injectFault(proxy, fault);
        const faultAt = Date.now();
        const faultMs = options.faultMs?.(fault) ?? 700;
        await new Promise((resolve) => setTimeout(resolve, faultMs)); // the fault's duration, not an assertion
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
          new Promise((resolve) => setTimeout(resolve, options.publishDeadlineMs + 2_000)),
        ]);

        const unsettled = outcomes.filter((o) => o.settledAt === undefined);
        expect(
          unsettled.map((o) => o.n),
          'publishes that never settled',
        ).toEqual([]);
        const late = outcomes.filter((o) => o.settledAt! - o.startedAt > options.publishDeadlineMs);
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
          test: `${options.name} queue faults`,
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

  describe.skipIf(options.skip === true)(`${options.name} queue under connection faults`, () => {
    afterAll(async () => {
      await options.cleanup?.();
      console.log(`queue fault figures:\n${figures.map((f) => JSON.stringify(f)).join('\n')}`);
    });

    for (const side of ['publish', 'consume'] as const) {
      for (const fault of ['cut', 'blackhole', 'refuse'] as const) {
        it(
          `${fault} during ${side}: publishes settle in time, nothing confirmed is lost, the adapter recovers`,
          () => runCase(fault, side),
          options.timeoutMs ?? 60_000,
        );
      }
    }
  });
}
