/**
 * P2: pub/sub across connection faults injected by the testkit's FaultProxy. The subscriber's
 * connection is cut, blackholed or refused while a direct publisher sends at a fixed rate: the
 * subscription comes back by itself (onReconnect fires), messages outside the outage arrive, and the
 * loss inside it is counted (at-most-once, as documented). On the publishing side every publish
 * settles within its deadline: confirmed, or rejected with a typed ClusterError.
 */
import { ClusterError } from '@cluster/core';
import { FaultProxy, RABBITMQ, requireServer, uniqueName, waitFor } from '@cluster/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { createRabbitPubSub } from '../src/index.js';
import { brokerTarget, countingLogger, type Fault, faultConnection, inject } from './helpers/faults.js';
import { AMQP_URL, TopologyTracker } from './helpers/rabbit.js';

const available = await requireServer(RABBITMQ);

const PUBLISH_TIMEOUT = 1_500;
const PUBLISH_DEADLINE = PUBLISH_TIMEOUT + 750;
const PUBLISH_EVERY_MS = 5;
/** Cuts and refusals are short; a blackhole outlasts the heartbeat timeout (see queue.faults.test.ts). */
const FAULT_MS: Record<Fault, number> = { cut: 500, refuse: 500, blackhole: 3_500 };

const figures: Record<string, unknown>[] = [];

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms)); // a fault's duration, never an assertion
}

describe.skipIf(!available)('rabbitmq pub/sub under connection faults', () => {
  const tracker = new TopologyTracker();

  afterAll(async () => {
    await tracker.cleanup();
    console.log(`pub/sub fault figures:\n${figures.map((f) => JSON.stringify(f)).join('\n')}`);
  });

  for (const fault of ['cut', 'blackhole', 'refuse'] as const) {
    it(`${fault} of the subscriber: the subscription comes back by itself, loss only inside the outage`, async () => {
      const prefix = uniqueName('tpf');
      const channel = `${uniqueName('app')}:events`;
      const proxy = await FaultProxy.start({ target: brokerTarget() });
      const logs = new Map<string, number>();
      const subscriber = tracker.track(
        createRabbitPubSub({ prefix, ...faultConnection(proxy), logger: countingLogger(logs) }),
      );
      const publisher = tracker.track(createRabbitPubSub({ prefix, url: AMQP_URL }));
      let reconnects = 0;
      subscriber.onReconnect?.(() => {
        reconnects += 1;
      });
      const received: number[] = [];
      let timer: NodeJS.Timeout | undefined;
      try {
        await subscriber.connect();
        await publisher.connect();
        await subscriber.subscribe(channel, (payload) => received.push(Number(payload)));
        let n = 0;
        const publishErrors: unknown[] = [];
        timer = setInterval(() => {
          publisher.publish(channel, String(n++)).catch((error: unknown) => publishErrors.push(error));
        }, PUBLISH_EVERY_MS);
        await waitFor(() => received.length >= 20, { message: 'traffic before the fault' });
        // The outage starts after the last message that had arrived: one in flight at the cut may be lost.
        const firstDuring = Math.max(...received) + 1;
        inject(proxy, fault);
        const faultAt = Date.now();
        await sleep(FAULT_MS[fault]);
        proxy.pass();
        const passAt = Date.now();
        await waitFor(() => reconnects >= 1, { timeout: 15_000, message: 'subscriber reconnected' });
        const firstAfter = n;
        await waitFor(() => received.some((k) => k >= firstAfter), {
          timeout: 15_000,
          message: 'messages published after the reconnect arrive',
        });
        const restoredAt = Date.now();
        clearInterval(timer);
        const last = n - 1;
        await waitFor(() => received.includes(last), {
          timeout: 10_000,
          message: 'the last message arrived',
        });
        expect(publishErrors).toEqual([]);
        // Everything before the fault and after the reconnect arrived; only the outage window lost any.
        const got = new Set(received);
        const missingBefore = Array.from({ length: firstDuring }, (_, k) => k).filter((k) => !got.has(k));
        const missingAfter = Array.from({ length: last - firstAfter + 1 }, (_, k) => k + firstAfter).filter(
          (k) => !got.has(k),
        );
        expect(missingBefore).toEqual([]);
        expect(missingAfter).toEqual([]);
        const duplicates = received.length - got.size;
        expect(duplicates).toBe(0);
        figures.push({
          test: 'P2',
          fault,
          faultMs: passAt - faultAt,
          published: n,
          lostInOutage:
            firstAfter - firstDuring - [...got].filter((k) => k >= firstDuring && k < firstAfter).length,
          duplicates,
          resubscribedMsAfterPass: restoredAt - passAt,
          reconnects,
          adapterLogs: Object.fromEntries(logs),
        });
      } finally {
        clearInterval(timer);
        await subscriber.close();
        await publisher.close();
        await proxy.stop();
      }
    }, 60_000);

    it(`${fault} of the publisher: every publish is confirmed or rejected with a typed error in time`, async () => {
      const prefix = uniqueName('tpf');
      const channel = `${uniqueName('app')}:events`;
      const proxy = await FaultProxy.start({ target: brokerTarget() });
      const publisher = tracker.track(
        createRabbitPubSub({ prefix, ...faultConnection(proxy), publishTimeout: PUBLISH_TIMEOUT }),
      );
      const subscriber = tracker.track(createRabbitPubSub({ prefix, url: AMQP_URL }));
      const received = new Set<number>();
      const outcomes: { n: number; startedAt: number; settledAt?: number; ok?: boolean; typed?: boolean }[] =
        [];
      let timer: NodeJS.Timeout | undefined;
      try {
        await subscriber.connect();
        await publisher.connect();
        await subscriber.subscribe(channel, (payload) => received.add(Number(payload)));
        let n = 0;
        const pending = new Set<Promise<void>>();
        timer = setInterval(() => {
          const outcome: (typeof outcomes)[number] = { n: n++, startedAt: Date.now() };
          outcomes.push(outcome);
          const p = publisher
            .publish(channel, String(outcome.n))
            .then(
              () => {
                outcome.ok = true;
              },
              (error: unknown) => {
                outcome.ok = false;
                outcome.typed = ClusterError.is(error);
              },
            )
            .finally(() => {
              outcome.settledAt = Date.now();
              pending.delete(p);
            });
          pending.add(p);
        }, PUBLISH_EVERY_MS);
        await waitFor(() => received.size >= 20, { message: 'traffic before the fault' });
        inject(proxy, fault);
        await sleep(FAULT_MS[fault]);
        proxy.pass();
        const firstAfter = n;
        await waitFor(() => [...received].some((k) => k >= firstAfter), {
          timeout: 15_000,
          message: 'publishes work again after the fault',
        });
        clearInterval(timer);
        await Promise.race([Promise.all([...pending]), sleep(PUBLISH_DEADLINE + 2_000)]);
        expect(outcomes.filter((o) => o.settledAt === undefined).map((o) => o.n)).toEqual([]);
        expect(
          outcomes.filter((o) => o.settledAt! - o.startedAt > PUBLISH_DEADLINE).map((o) => o.n),
          'publishes settled past their deadline',
        ).toEqual([]);
        expect(outcomes.filter((o) => o.ok === false && !o.typed).map((o) => o.n)).toEqual([]);
        // A confirmed broadcast reached the live subscriber.
        const confirmed = outcomes.filter((o) => o.ok).map((o) => o.n);
        await waitFor(() => confirmed.every((k) => received.has(k)), {
          timeout: 10_000,
          message: 'every confirmed message delivered',
        });
        figures.push({
          test: 'P2-publish',
          fault,
          published: outcomes.length,
          confirmed: confirmed.length,
          rejected: outcomes.filter((o) => o.ok === false).length,
          maxSettleMs: Math.max(...outcomes.map((o) => o.settledAt! - o.startedAt)),
        });
      } finally {
        clearInterval(timer);
        await publisher.close();
        await subscriber.close();
        await proxy.stop();
      }
    }, 60_000);
  }
});
