import { EventQueue, LockManager, PubSubManager } from '@cluster/core';
import { inbox, uniqueName, waitFor } from '@cluster/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNatsLock, createNatsPubSub, createNatsQueue } from '../src/index.js';
import { type NatsServerHandle, natsServerAvailable, startNatsServer } from './helpers/nats-server.js';

/**
 * A nats-server this file starts itself (JetStream on a temp dir, spare port), SIGKILLed and
 * restarted while the adapters run. JetStream writes reach the OS before the server acknowledges
 * them, so a killed process (not a crashed machine) loses nothing it acknowledged.
 */
describe.skipIf(!natsServerAvailable)('a private nats-server killed and restarted mid-run', () => {
  let server: NatsServerHandle;

  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('loses no acknowledged task: every published task completes after the restart', async () => {
    const subjectPrefix = uniqueName('tr');
    const queue = new EventQueue({
      appName: 'restart',
      adapter: createNatsQueue({ servers: server.url, subjectPrefix, visibilityTimeout: 2_000 }),
      backoff: { baseMs: 20, maxMs: 200, factor: 2 },
      idleInterval: 20,
      closeTimeout: 2_000,
    });
    await queue.start();
    const done = new Set<number>();
    let runs = 0;
    queue.subscribe<number>('jobs', {
      concurrency: 4,
      process: async (n) => {
        runs += 1;
        await new Promise((resolve) => setTimeout(resolve, 2));
        done.add(n);
      },
    });
    const total = 200;
    const acknowledged: number[] = [];
    let publishing = true;
    const publisher = (async () => {
      for (let n = 0; n < total; n++) {
        // A publish during the outage fails or times out: it was never acknowledged, so try again.
        for (;;) {
          try {
            await queue.publish('jobs', n, { id: `job-${n}`, maxRetries: 20 });
            acknowledged.push(n);
            break;
          } catch {
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        }
      }
      publishing = false;
    })();
    await waitFor(() => acknowledged.length >= 60 && done.size > 0, {
      timeout: 20_000,
      message: 'first tasks published and running',
    });
    expect(done.size).toBeLessThan(total);
    await server.kill();
    await server.restart();
    await publisher;
    expect(publishing).toBe(false);
    await waitFor(() => done.size === total, {
      timeout: 60_000,
      message: `every acknowledged task completed (${done.size}/${total})`,
    });
    expect(runs).toBeGreaterThanOrEqual(total);
    await queue.close({ timeout: 2_000 });
  }, 120_000);

  it('lock tokens never go back across a restart', async () => {
    const subjectPrefix = uniqueName('tl');
    const adapter = createNatsLock({ servers: server.url, subjectPrefix });
    const locks = new LockManager({
      appName: 'restart',
      adapters: { nats: adapter },
      defaultAdapter: 'nats',
    });
    await locks.start();
    const tokens: number[] = [];
    for (let i = 0; i < 20; i++) {
      const lock = await locks.acquire('fence', { ttl: 5_000 });
      tokens.push(lock.token);
      await lock();
    }
    await server.kill();
    await server.restart();
    const after = await waitFor(
      async () => {
        try {
          return await locks.acquire('fence', { ttl: 5_000, waitTimeout: 1_000 });
        } catch {
          return undefined;
        }
      },
      { timeout: 30_000, interval: 100, message: 'lock acquired after the restart' },
    );
    expect(after.token).toBeGreaterThan(Math.max(...tokens));
    await after();
    await locks.close();
  }, 60_000);

  it('pub/sub subscriptions come back after the restart and onReconnect fires', async () => {
    const subjectPrefix = uniqueName('tp');
    const a = new PubSubManager({
      appName: 'restart',
      adapter: createNatsPubSub({ servers: server.url, subjectPrefix }),
    });
    const b = new PubSubManager({
      appName: 'restart',
      adapter: createNatsPubSub({ servers: server.url, subjectPrefix }),
    });
    let reconnects = 0;
    b.adapter.onReconnect?.(() => {
      reconnects += 1;
    });
    await a.start();
    await b.start();
    const box = inbox<number>();
    await b.subscribe('news', box.handler);
    await a.publish('news', 1);
    await waitFor(() => box.messages.length === 1, { message: 'delivered before the restart' });
    await server.kill();
    await server.restart();
    await waitFor(() => reconnects >= 1, { timeout: 30_000, message: 'reconnected' });
    // A publisher may reconnect before the subscriber resubscribed: keep sending until one arrives.
    await waitFor(
      async () => {
        await a.publish('news', 2);
        return box.messages.includes(2);
      },
      { timeout: 30_000, interval: 100, message: 'delivered after the restart' },
    );
    await a.close();
    await b.close();
  }, 60_000);
});
