/** Wire names and delay buckets, plus long channel names end to end (hashed routing keys and queue names). */
import { EventQueue, PubSubManager } from '@cluster/core';
import { inbox, RABBITMQ, requireServer, uniqueName, waitFor } from '@cluster/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { createRabbitPubSub, createRabbitQueue } from '../src/index.js';
import { wirePart } from '../src/publisher.js';
import { channelNames, delayBucket } from '../src/queue/topology.js';
import { AMQP_URL, deleteTopology, TopologyTracker } from './helpers/rabbit.js';

const available = await requireServer(RABBITMQ);

describe('wire names', () => {
  it('rounds delays up, never early, at most 12.5 % late, with few distinct buckets', () => {
    const buckets = new Set<number>();
    for (let ms = 1; ms <= 100_000; ms += ms < 1_000 ? 1 : 97) {
      const bucket = delayBucket(ms);
      expect(bucket).toBeGreaterThanOrEqual(ms);
      expect(bucket).toBeLessThanOrEqual(Math.ceil(ms * 1.125));
      buckets.add(bucket);
    }
    expect(buckets.size).toBeLessThan(150);
    expect(delayBucket(0.2)).toBe(1);
  });

  it('keeps our suffixes unambiguous and long names within AMQP limits', () => {
    const a = channelNames('p', 'app:jobs');
    const b = channelNames('p', 'app:jobs~dead');
    expect(b.work).not.toBe(a.dead);
    expect(wirePart('a~b')).toBe('a%7Eb');
    const long = wirePart('x'.repeat(500));
    expect(Buffer.byteLength(long)).toBeLessThan(100);
    expect(long).not.toBe(wirePart(`${'x'.repeat(499)}y`));
    const names = channelNames('cluster', `app:${'é'.repeat(500)}`);
    for (const name of [names.work, names.dead, names.delay(123_456)])
      expect(Buffer.byteLength(name)).toBeLessThan(256);
  });
});

describe.skipIf(!available)('long names end to end', () => {
  const tracker = new TopologyTracker();
  afterAll(async () => {
    await tracker.cleanup();
  });

  it('a channel longer than an AMQP routing key or queue name still broadcasts and queues', async () => {
    const prefix = uniqueName('t');
    const appName = uniqueName('app');
    const channel = `ch-${'ü'.repeat(400)}`;
    const sub = new PubSubManager({
      appName,
      adapter: tracker.track(createRabbitPubSub({ url: AMQP_URL, prefix })),
    });
    const pub = new PubSubManager({
      appName,
      adapter: tracker.track(createRabbitPubSub({ url: AMQP_URL, prefix })),
    });
    const queue = new EventQueue({
      appName,
      adapter: tracker.track(createRabbitQueue({ url: AMQP_URL, prefix })),
      idleInterval: 20,
    });
    try {
      await sub.start();
      await pub.start();
      await queue.start();
      const box = inbox();
      const other = inbox();
      await sub.subscribe(channel, box.handler);
      await sub.subscribe(`${channel}x`, other.handler);
      await pub.publish(channel, 'hello');
      await pub.publish(`${channel}x`, 'other');
      await waitFor(() => box.messages.length === 1 && other.messages.length === 1);
      expect(box.messages).toEqual(['hello']);
      const ran: unknown[] = [];
      queue.subscribe(channel, {
        process: async (payload) => {
          ran.push(payload);
        },
      });
      await queue.publish(channel, { n: 1 });
      await queue.publish(channel, { n: 2 }, { delay: 50 });
      await waitFor(() => ran.length === 2, { timeout: 10_000 });
      expect(ran).toEqual([{ n: 1 }, { n: 2 }]);
    } finally {
      await queue.close({ timeout: 1_000 });
      await pub.close();
      await sub.close();
    }
  });

  it('a work queue deleted under a running consumer is declared again: later tasks are confirmed and run', async () => {
    const prefix = uniqueName('t');
    const appName = uniqueName('app');
    const adapter = tracker.track(createRabbitQueue({ url: AMQP_URL, prefix }));
    const queue = new EventQueue({ appName, adapter, idleInterval: 20 });
    try {
      await queue.start();
      const ran: number[] = [];
      queue.subscribe<number>('jobs', {
        process: async (n) => {
          ran.push(n);
        },
      });
      await queue.publish('jobs', 1);
      await waitFor(() => ran.includes(1));
      const work = adapter.topology().queues.find((q) => !q.includes('~'))!;
      await deleteTopology([work], []);
      // Published to the deleted queue: returned as unroutable, never confirmed and dropped.
      for (const n of [2, 3, 4]) await queue.publish('jobs', n);
      await waitFor(() => [2, 3, 4].every((n) => ran.includes(n)), {
        timeout: 15_000,
        message: 'tasks after the delete ran',
      });
    } finally {
      await queue.close({ timeout: 1_000 });
    }
  });
});
