/**
 * Connection faults between the adapters and NATS, injected by the testkit's FaultProxy: cut (RST of
 * every live connection), blackhole (bytes dropped, sockets open) and refuse (new connections
 * reset, live ones cut). Every call made during a fault settles within its deadline (a result, or a
 * typed ClusterError), nothing acknowledged is lost, and every part recovers by itself.
 */
import { ClusterError, EventQueue, PubSubManager } from '@cluster/core';
import {
  type ProxyFault as Fault,
  FaultProxy,
  inbox,
  injectFault as inject,
  NATS,
  requireServer,
  uniqueName,
  waitFor,
} from '@cluster/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import {
  createNatsCacheStore,
  createNatsLock,
  createNatsPubSub,
  createNatsQueue,
  type NatsConnectionOptions,
} from '../src/index.js';
import { deleteStreamsWith, NATS_URL } from './helpers/nats.js';

const available = await requireServer(NATS);

const REQUEST_TIMEOUT = 1_000;
/** What one call may take at most: the request timeout plus slack for a loaded box. */
const CALL_DEADLINE = REQUEST_TIMEOUT + 2_000;
const FAULT_MS = 1_500;

function target(): { host: string; port: number } {
  const url = new URL(NATS_URL);
  return { host: url.hostname || '127.0.0.1', port: Number(url.port || 4222) };
}

/** Through the proxy, with fast stale-connection detection so a blackhole is noticed in ~1 s. */
function viaProxy(proxy: FaultProxy, subjectPrefix: string): NatsConnectionOptions {
  return {
    servers: proxy.url.replace(/^[a-z]+:/, 'nats:'),
    subjectPrefix,
    requestTimeout: REQUEST_TIMEOUT,
    connectOptions: { pingInterval: 400, maxPingOut: 2, reconnectTimeWait: 100, timeout: 1_000 },
  };
}

/** Runs `call` and records how long it took to settle and whether a failure was typed. */
async function timed<T>(call: () => Promise<T>): Promise<{ ms: number; ok: boolean; typed: boolean }> {
  const start = Date.now();
  try {
    await call();
    return { ms: Date.now() - start, ok: true, typed: true };
  } catch (error) {
    return { ms: Date.now() - start, ok: false, typed: ClusterError.is(error) };
  }
}

const faults: Fault[] = ['cut', 'blackhole', 'refuse'];
const figures: Record<string, unknown>[] = [];

describe.skipIf(!available)('nats adapters under connection faults', () => {
  const prefixes: string[] = [];

  afterAll(async () => {
    for (const prefix of prefixes) await deleteStreamsWith(prefix);
    console.log(`nats fault figures:\n${figures.map((f) => JSON.stringify(f)).join('\n')}`);
  });

  for (const fault of faults) {
    it(`queue: publishes settle in time during ${fault}, no confirmed task is lost, the consumer recovers`, async () => {
      const subjectPrefix = uniqueName('tqf');
      prefixes.push(subjectPrefix);
      await using proxy = await FaultProxy.start({ target: target() });
      const options = viaProxy(proxy, subjectPrefix);
      const producer = new EventQueue({ appName: 'f', adapter: createNatsQueue(options) });
      const worker = new EventQueue({
        appName: 'f',
        adapter: createNatsQueue({ ...options, visibilityTimeout: 2_000, fetchExpires: 1_000 }),
        idleInterval: 20,
      });
      await producer.start();
      await worker.start();
      const done = new Set<number>();
      worker.subscribe<number>('jobs', {
        concurrency: 4,
        process: async (n) => {
          done.add(n);
        },
      });
      const confirmed: number[] = [];
      const outcomes: { ms: number; ok: boolean; typed: boolean }[] = [];
      let n = 0;
      const publishFor = async (ms: number) => {
        const until = Date.now() + ms;
        while (Date.now() < until) {
          const value = n++;
          const outcome = await timed(() => producer.publish('jobs', value, { maxRetries: 5 }));
          outcomes.push(outcome);
          if (outcome.ok) confirmed.push(value);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      };
      await publishFor(300);
      inject(proxy, fault);
      await publishFor(FAULT_MS);
      proxy.pass();
      await publishFor(300);
      await waitFor(
        async () => {
          const outcome = await timed(() => producer.publish('jobs', n, { maxRetries: 5 }));
          if (outcome.ok) confirmed.push(n);
          n++;
          return outcome.ok;
        },
        { timeout: 20_000, interval: 100, message: 'publishing works again' },
      );
      await waitFor(() => confirmed.every((value) => done.has(value)), {
        timeout: 30_000,
        message: 'every confirmed task ran',
      });
      const slowest = Math.max(...outcomes.map((o) => o.ms));
      figures.push({ part: 'queue', fault, published: n, confirmed: confirmed.length, slowestMs: slowest });
      expect(outcomes.every((o) => o.typed)).toBe(true);
      expect(slowest).toBeLessThanOrEqual(CALL_DEADLINE);
      await worker.close({ timeout: 1_000 });
      await producer.close({ timeout: 1_000 });
    }, 90_000);

    it(`lock and cache: calls settle in time during ${fault} and work again afterwards`, async () => {
      const subjectPrefix = uniqueName('tlf');
      prefixes.push(subjectPrefix);
      await using proxy = await FaultProxy.start({ target: target() });
      const options = viaProxy(proxy, subjectPrefix);
      const lockAdapter = createNatsLock(options);
      const store = createNatsCacheStore(options);
      await lockAdapter.connect();
      await store.connect();
      const before = await lockAdapter.acquire('k', { owner: 'o1', ttl: 60_000, waitTimeout: 0 });
      expect(before).not.toBeNull();
      await store.set('c', 'v1');
      inject(proxy, fault);
      const during = [
        await timed(() => lockAdapter.acquire('k2', { owner: 'o2', ttl: 1_000, waitTimeout: 500 })),
        await timed(() => store.get('c')),
        await timed(() => store.set('c', 'v2')),
        await timed(() => lockAdapter.extend('k', 'o1', before!.token, 60_000)),
      ];
      proxy.pass();
      const token = await waitFor(
        async () => (await lockAdapter.acquire('k3', { owner: 'o3', ttl: 5_000, waitTimeout: 0 }))?.token,
        { timeout: 20_000, interval: 100, message: 'lock works again' },
      );
      expect(token).toBeGreaterThan(before!.token);
      await waitFor(async () => (await store.get('c')) !== undefined, {
        timeout: 20_000,
        interval: 100,
        message: 'cache works again',
      });
      const slowest = Math.max(...during.map((o) => o.ms));
      figures.push({
        part: 'lock+cache',
        fault,
        slowestMs: slowest,
        failed: during.filter((o) => !o.ok).length,
      });
      expect(during.every((o) => o.typed)).toBe(true);
      expect(slowest).toBeLessThanOrEqual(CALL_DEADLINE);
      await lockAdapter.close();
      await store.close();
    }, 60_000);

    it(`pub/sub: the subscriber hears messages again after ${fault}`, async () => {
      const subjectPrefix = uniqueName('tpf');
      await using proxy = await FaultProxy.start({ target: target() });
      let reconnects = 0;
      const subscriberAdapter = createNatsPubSub(viaProxy(proxy, subjectPrefix));
      subscriberAdapter.onReconnect?.(() => {
        reconnects += 1;
      });
      const subscriber = new PubSubManager({ appName: 'f', adapter: subscriberAdapter });
      const publisher = new PubSubManager({
        appName: 'f',
        adapter: createNatsPubSub({ servers: NATS_URL, subjectPrefix }),
      });
      await subscriber.start();
      await publisher.start();
      const box = inbox<number>();
      await subscriber.subscribe('news', box.handler);
      await publisher.publish('news', 0);
      await waitFor(() => box.messages.length === 1, { message: 'delivered before the fault' });
      inject(proxy, fault);
      const during = await timed(() => publisher.publish('news', 1));
      // A subscribe during the fault settles in time too (and is restored with the connection).
      const late = inbox<number>();
      const subscribeDuring = await timed(() => subscriber.subscribe('late', late.handler));
      await new Promise((resolve) => setTimeout(resolve, FAULT_MS)); // the outage itself, not an assertion
      proxy.pass();
      let n = 2;
      await waitFor(
        async () => {
          await publisher.publish('news', n++);
          return box.messages.some((m) => m >= 2);
        },
        { timeout: 20_000, interval: 100, message: 'delivered after the fault' },
      );
      await waitFor(
        async () => {
          await publisher.publish('late', n++);
          return late.messages.length > 0;
        },
        { timeout: 20_000, interval: 100, message: 'the subscription made during the fault works' },
      );
      figures.push({ part: 'pubsub', fault, reconnects, subscribeDuringMs: subscribeDuring.ms });
      expect(during.ok).toBe(true);
      expect(subscribeDuring.typed).toBe(true);
      expect(subscribeDuring.ms).toBeLessThanOrEqual(CALL_DEADLINE);
      if (fault !== 'blackhole') expect(reconnects).toBeGreaterThanOrEqual(1);
      await subscriber.close();
      await publisher.close();
    }, 60_000);
  }
});
