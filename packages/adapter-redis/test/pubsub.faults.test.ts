import { ClusterError, PubSubManager, type SyncGap, SyncMessageManager } from '@cluster/core';
import { FaultProxy, inbox, REDIS, requireServer, serverUrl, uniqueName, waitFor } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createRedisPubSub } from '../src/pubsub/index.js';
import {
  proxyTarget,
  type RedisServerHandle,
  redisBinariesAvailable,
  startRedisServer,
} from './helpers/redis-server.js';

const url = serverUrl(REDIS);
const available = await requireServer(REDIS);
const target = proxyTarget(url);
const raw = new Redis(url, { lazyConnect: true });
afterAll(() => raw.disconnect());

const COMMAND_TIMEOUT = 500;
const SLACK = 1_500;
/** Generous bound for "delivery resumes after a cut" on a loaded box; the figure itself is printed. */
const RECOVERY_BOUND = 10_000;
const measured: Record<string, number[]> = {};
const note = (what: string, ms: number) => (measured[what] ??= []).push(Math.round(ms));
afterAll(() => {
  const summary = Object.entries(measured).map(
    ([what, ms]) => `${what}: ${ms.join(', ')} ms (max ${Math.max(...ms)})`,
  );
  console.log(`[pub/sub fault figures, commandTimeout ${COMMAND_TIMEOUT} ms]\n  ${summary.join('\n  ')}`);
});

describe.skipIf(!available)('redis pub/sub under network faults', () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });

  async function proxy(): Promise<FaultProxy> {
    const p = await FaultProxy.start({ target });
    closers.push(async () => {
      p.pass();
      await p.stop();
    });
    return p;
  }

  /** A started manager on an adapter reaching Redis at `to` (the proxy or the server). */
  async function node(appName: string, to: string, keyPrefix: string) {
    const adapter = createRedisPubSub({ url: to, keyPrefix, commandTimeout: COMMAND_TIMEOUT });
    const manager = new PubSubManager({ appName, adapter });
    closers.push(() => manager.close());
    await manager.start();
    return manager;
  }

  /**
   * Publishes a numbered probe every 20 ms until `box` has received one sent after `since`;
   * resolves the ms from `since` until then.
   */
  async function probeUntilDelivered(
    publisher: PubSubManager,
    box: { messages: unknown[] },
    since: number,
  ): Promise<number> {
    let n = 0;
    let stop = false;
    const deliveredAfter = () =>
      box.messages.some((m) => typeof m === 'object' && m !== null && (m as { at: number }).at >= since);
    const pump = (async () => {
      while (!stop) {
        n += 1;
        await publisher.publish('ch', { probe: n, at: performance.now() }).catch(() => {});
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      // Polled every 5 ms: the figure is the fault → first delivery time within that step.
      await waitFor(deliveredAfter, { timeout: RECOVERY_BOUND + 5_000, interval: 5 });
      return performance.now() - since;
    } finally {
      stop = true;
      await pump;
    }
  }

  it('subscriber cut: subscriptions come back by themselves and delivery resumes quickly', async () => {
    const p = await proxy();
    const appName = uniqueName('app');
    const keyPrefix = uniqueName('t');
    const publisher = await node(appName, url, keyPrefix);
    const subscriber = await node(appName, `redis://${p.url}`, keyPrefix);
    const reconnects: number[] = [];
    subscriber.onReconnect(() => reconnects.push(performance.now()));
    const box = inbox();
    await subscriber.subscribe('ch', box.handler);
    await publisher.publish('ch', 'before');
    await waitFor(() => box.messages.includes('before'));

    for (let round = 0; round < 3; round++) {
      const cutAt = performance.now();
      p.cut();
      const ms = await probeUntilDelivered(publisher, box, cutAt);
      note('delivery resumed after subscriber cut', ms);
      expect(ms).toBeLessThan(RECOVERY_BOUND);
      await waitFor(() => reconnects.length === round + 1, { message: 'onReconnect after the cut' });
    }
    // The server really holds exactly one subscription for the channel again (ours).
    const [, count] = (await raw.pubsub('NUMSUB', `${keyPrefix}:${appName}:ch`)) as [string, number];
    expect(count).toBe(1);
  });

  it('subscriber refused while reconnecting, then let through: delivery resumes after pass()', async () => {
    const p = await proxy();
    const appName = uniqueName('app');
    const keyPrefix = uniqueName('t');
    const publisher = await node(appName, url, keyPrefix);
    const subscriber = await node(appName, `redis://${p.url}`, keyPrefix);
    const box = inbox();
    await subscriber.subscribe('ch', box.handler);
    await subscriber.subscribe('other', box.handler);
    p.refuse();
    p.cut();
    // Refused reconnects for a while (nothing can arrive; the window is the fault itself).
    await waitFor(() => p.stats.refused >= 2, { timeout: 10_000 });
    // A subscription made during the outage fails by its deadline (or succeeds), and is live after it.
    const late = inbox();
    const started = performance.now();
    const error = await subscriber.subscribe('late', late.handler).then(
      () => undefined,
      (e: unknown) => e,
    );
    note('subscribe settle (subscriber refused)', performance.now() - started);
    expect(performance.now() - started).toBeLessThan(COMMAND_TIMEOUT + SLACK);
    if (error !== undefined) expect(ClusterError.is(error), String(error)).toBe(true);
    const passAt = performance.now();
    p.pass();
    const ms = await probeUntilDelivered(publisher, box, passAt);
    note('delivery resumed after refuse → pass', ms);
    expect(ms).toBeLessThan(RECOVERY_BOUND);
    await publisher.publish('other', 'on other');
    await waitFor(() => box.messages.includes('on other'), { message: 'both channels resubscribed' });
    await waitFor(
      async () => {
        await publisher.publish('late', 'late one');
        return late.messages.includes('late one');
      },
      { timeout: 10_000, interval: 50, message: 'the subscription made during the outage is live' },
    );
  });

  it('subscriber blackholed: the health check notices, and delivery resumes after pass()', async () => {
    const p = await proxy();
    const appName = uniqueName('app');
    const keyPrefix = uniqueName('t');
    const publisher = await node(appName, url, keyPrefix);
    const adapter = createRedisPubSub({
      url: `redis://${p.url}`,
      keyPrefix,
      commandTimeout: COMMAND_TIMEOUT,
      healthCheckInterval: 200,
    });
    const subscriber = new PubSubManager({ appName, adapter });
    closers.push(() => subscriber.close());
    await subscriber.start();
    const box = inbox();
    await subscriber.subscribe('ch', box.handler);
    const before = p.stats.accepted;
    p.blackhole();
    // The unanswered PING drops the socket; ioredis reconnects (into the blackhole).
    await waitFor(() => p.stats.accepted > before, { timeout: 10_000, message: 'subscriber reconnects' });
    const passAt = performance.now();
    p.pass();
    const ms = await probeUntilDelivered(publisher, box, passAt);
    note('delivery resumed after blackhole → pass', ms);
    expect(ms).toBeLessThan(RECOVERY_BOUND);
  });

  it('publish under cut, blackhole and refuse settles by its deadline, and works again after pass()', async () => {
    const p = await proxy();
    const appName = uniqueName('app');
    const keyPrefix = uniqueName('t');
    const publisher = await node(appName, `redis://${p.url}`, keyPrefix);
    const receiver = await node(appName, url, keyPrefix);
    const box = inbox();
    await receiver.subscribe('ch', box.handler);

    const burst = async (what: string) => {
      const results = await Promise.all(
        Array.from({ length: 10 }, async (_, i) => {
          const start = performance.now();
          const error = await publisher.publish('ch', `${what}-${i}`).then(
            () => undefined,
            (e: unknown) => e,
          );
          const ms = performance.now() - start;
          note(`publish settle (${what})`, ms);
          return { error, ms };
        }),
      );
      for (const { error, ms } of results) {
        expect(ms).toBeLessThan(COMMAND_TIMEOUT + SLACK);
        if (error !== undefined) {
          expect(ClusterError.is(error), String(error)).toBe(true);
          expect(['TIMEOUT', 'BACKEND_UNAVAILABLE']).toContain((error as ClusterError).code);
        }
      }
      return results;
    };
    const worksAgain = async (what: string) => {
      const start = performance.now();
      await waitFor(
        async () => {
          await publisher.publish('ch', `again-${what}`);
          return box.messages.includes(`again-${what}`);
        },
        { timeout: 15_000, interval: 50, message: `publish works again after ${what}` },
      );
      note(`publish works again after ${what}`, performance.now() - start);
    };

    const cutting = burst('cut');
    p.cut();
    await cutting;
    await worksAgain('cut');

    p.blackhole();
    expect((await burst('blackhole')).every((r) => r.error !== undefined)).toBe(true);
    p.pass();
    await worksAgain('blackhole');

    p.refuse();
    p.cut();
    expect((await burst('refuse')).every((r) => r.error !== undefined)).toBe(true);
    p.pass();
    await worksAgain('refuse');
  });

  it('a reconnect reaches the sync layer as a reconnect gap', async () => {
    const p = await proxy();
    const appName = uniqueName('app');
    const keyPrefix = uniqueName('t');
    const a = await node(appName, url, keyPrefix);
    const b = await node(appName, `redis://${p.url}`, keyPrefix);
    const syncA = new SyncMessageManager({ pubSub: a });
    const syncB = new SyncMessageManager({ pubSub: b });
    closers.push(async () => {
      await syncA.stop();
      await syncB.stop();
    });
    const gaps: SyncGap[] = [];
    const box = inbox();
    await syncB.subscribe('plugin', box.handler, { onGap: (gap) => void gaps.push(gap) });
    await syncA.publish('plugin', 1);
    await waitFor(() => box.messages.length === 1);
    p.cut();
    await waitFor(() => gaps.some((g) => g.reason === 'reconnect'), { timeout: 10_000 });
    await waitFor(
      async () => {
        await syncA.publish('plugin', 'after');
        return box.messages.includes('after');
      },
      { timeout: 10_000, interval: 50 },
    );
  });
});

describe.skipIf(!redisBinariesAvailable)('redis pub/sub across a server kill and restart', () => {
  let server: RedisServerHandle | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  it('restores every subscription after the server comes back (not assumed: checked)', async () => {
    server = await startRedisServer();
    const appName = uniqueName('app');
    const keyPrefix = uniqueName('t');
    const make = () => createRedisPubSub({ url: server!.url, keyPrefix, commandTimeout: COMMAND_TIMEOUT });
    const publisher = new PubSubManager({ appName, adapter: make() });
    const subscriber = new PubSubManager({ appName, adapter: make() });
    try {
      await publisher.start();
      await subscriber.start();
      let reconnects = 0;
      subscriber.onReconnect(() => {
        reconnects += 1;
      });
      const boxes = ['a', 'b', 'c'].map((ch) => ({ ch, box: inbox() }));
      for (const { ch, box } of boxes) await subscriber.subscribe(ch, box.handler);
      await server.kill();
      const killedAt = performance.now();
      await server.restart();
      // Messages published while it was down are lost (at-most-once); keep publishing until each arrives.
      await waitFor(
        async () => {
          for (const { ch, box } of boxes)
            if (!box.messages.includes(ch)) await publisher.publish(ch, ch).catch(() => {});
          return boxes.every(({ ch, box }) => box.messages.includes(ch));
        },
        { timeout: 15_000, interval: 20, message: 'every channel delivers after the restart' },
      );
      note('delivery resumed after server kill + restart (from kill)', performance.now() - killedAt);
      expect(reconnects).toBeGreaterThanOrEqual(1);
    } finally {
      await subscriber.close();
      await publisher.close();
    }
  });
});
