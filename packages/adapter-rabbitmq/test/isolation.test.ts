/**
 * X4: two apps (and one app under two prefixes) on one broker. Awkward names — wildcard
 * characters, a shared string prefix, the `:` separator, AMQP's `.` and `#` — never let a
 * broadcast or a task reach the other app.
 */
import { EventQueue, PubSubManager } from '@cluster/core';
import { inbox, RABBITMQ, requireServer, uniqueName, waitFor } from '@cluster/testkit';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createRabbitPubSub, createRabbitQueue } from '../src/index.js';
import { AMQP_URL, TopologyTracker } from './helpers/rabbit.js';

const available = await requireServer(RABBITMQ);

interface Group {
  appName: string;
  prefix: string;
}

describe.skipIf(!available)('two apps on one RabbitMQ: no message or task crosses', () => {
  const tracker = new TopologyTracker();
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });
  afterAll(async () => {
    await tracker.cleanup();
  });

  async function pubSubNode(group: Group): Promise<PubSubManager> {
    const m = new PubSubManager({
      appName: group.appName,
      adapter: tracker.track(createRabbitPubSub({ url: AMQP_URL, prefix: group.prefix })),
    });
    closers.push(() => m.close());
    await m.start();
    return m;
  }

  async function queueNode(group: Group): Promise<EventQueue> {
    const q = new EventQueue({
      appName: group.appName,
      adapter: tracker.track(createRabbitQueue({ url: AMQP_URL, prefix: group.prefix })),
      idleInterval: 20,
      closeTimeout: 1_000,
    });
    closers.push(() => q.close({ timeout: 1_000 }));
    await q.start();
    return q;
  }

  /** Each group publishes its own message, then a marker; each subscriber must see only its own. */
  async function expectBroadcastsApart(groups: Group[]): Promise<void> {
    const nodes = await Promise.all(
      groups.map(async (g) => {
        const box = inbox();
        const sub = await pubSubNode(g);
        await sub.subscribe('ch', box.handler);
        return { ...g, box, pub: await pubSubNode(g) };
      }),
    );
    await Promise.all(nodes.map((n) => n.pub.publish('ch', `${n.prefix}/${n.appName}`)));
    await Promise.all(nodes.map((n) => n.pub.publish('ch', 'marker')));
    await waitFor(() => nodes.every((n) => n.box.messages.includes('marker')), { timeout: 10_000 });
    for (const n of nodes)
      expect(n.box.messages, `${n.prefix}/${n.appName}`).toEqual([`${n.prefix}/${n.appName}`, 'marker']);
  }

  /** Each group's worker must run exactly its own group's tasks, all of them. */
  async function expectTasksApart(groups: Group[]): Promise<void> {
    const perGroup = 5;
    const nodes = await Promise.all(
      groups.map(async (g) => {
        const ran: string[] = [];
        const worker = await queueNode(g);
        worker.subscribe<string>('jobs', {
          concurrency: 2,
          process: async (tag) => {
            ran.push(tag);
          },
        });
        return { ...g, ran, producer: await queueNode(g) };
      }),
    );
    for (const n of nodes) {
      for (let i = 0; i < perGroup; i++) await n.producer.publish('jobs', `${n.prefix}/${n.appName}/${i}`);
    }
    await waitFor(() => nodes.every((n) => n.ran.length >= perGroup), { timeout: 15_000 });
    for (const n of nodes) {
      await waitFor(async () => {
        const stats = await n.producer.stats('jobs');
        return stats.pending === 0 && stats.delayed === 0;
      });
      const expected = Array.from({ length: perGroup }, (_, i) => `${n.prefix}/${n.appName}/${i}`);
      expect([...n.ran].sort(), `${n.prefix}/${n.appName}`).toEqual(expected.sort());
    }
  }

  const awkward = (base: string) => [
    base,
    `${base}*`,
    `${base}#`,
    `${base}x`,
    `${base}.b`,
    `${base}:b`,
    `${base}~dead`,
  ];

  it('pub/sub: apps with wildcard, separator and prefix-sharing names', async () => {
    const prefix = uniqueName('t');
    await expectBroadcastsApart(awkward(uniqueName('a')).map((appName) => ({ appName, prefix })));
  });

  it('pub/sub: one app name under different prefixes', async () => {
    const base = uniqueName('p');
    await expectBroadcastsApart(
      [base, `${base}x`, `${base}.q`].map((prefix) => ({ appName: 'shop', prefix })),
    );
  });

  it('queue: apps with wildcard, separator and prefix-sharing names never take each other’s tasks', async () => {
    const prefix = uniqueName('t');
    await expectTasksApart(awkward(uniqueName('a')).map((appName) => ({ appName, prefix })));
  });

  it('queue: one app name under different prefixes', async () => {
    const base = uniqueName('p');
    await expectTasksApart([base, `${base}x`, `${base}.q`].map((prefix) => ({ appName: 'shop', prefix })));
  });
});
