import type { QueueDelivery } from '@cluster/core';
import { RABBITMQ, requireServer, uniqueName, waitFor } from '@cluster/testkit';
import amqplib from 'amqplib';
import { afterAll, describe, expect, it } from 'vitest';
import { createRabbitQueue } from '../src/index.js';
import { channelNames } from '../src/queue/topology.js';
import { AMQP_URL, TopologyTracker } from './helpers/rabbit.js';

const available = await requireServer(RABBITMQ);

// Acks of one turn go out together, as one `multiple` ack where they form a run from the oldest
// unsettled delivery. That ack must never cover a delivery whose handler is still running.
describe.skipIf(!available)('rabbitmq queue acks', () => {
  const tracker = new TopologyTracker();
  afterAll(async () => {
    await tracker.cleanup();
  });

  async function messageCount(queue: string): Promise<number> {
    const connection = await amqplib.connect(AMQP_URL);
    try {
      const channel = await connection.createChannel();
      return (await channel.checkQueue(queue)).messageCount;
    } finally {
      await connection.close();
    }
  }

  it('acks what finished, in one turn or spread out, and leaves a running delivery unacked', async () => {
    const prefix = uniqueName('tqa');
    const channel = 'app:acks';
    const work = channelNames(prefix, channel).work;
    const first = tracker.track(createRabbitQueue({ url: AMQP_URL, prefix, visibilityTimeout: 60_000 }));
    await first.connect();
    const got: QueueDelivery[] = [];
    await first.consume(channel, { concurrency: 20, deliver: (d) => void got.push(d) });
    for (let i = 0; i < 20; i++) {
      await first.publish(channel, {
        id: `t${i}`,
        payload: String(i),
        maxRetries: 0,
        timeout: 30_000,
        delay: 0,
        dedupe: false,
      });
    }
    await waitFor(() => got.length === 20, { message: '20 deliveries' });
    const byId = new Map(got.map((d) => [d.id, d]));
    // t0 and t10 keep running. t1..t9 finish in one turn (a run behind t0), t11..t14 in another,
    // t15..t19 one per turn.
    expect(
      (await Promise.all([1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => byId.get(`t${i}`)!.ack()))).every(Boolean),
    ).toBe(true);
    expect((await Promise.all([11, 12, 13, 14].map((i) => byId.get(`t${i}`)!.ack()))).every(Boolean)).toBe(
      true,
    );
    for (const i of [15, 16, 17, 18, 19]) expect(await byId.get(`t${i}`)!.ack()).toBe(true);
    // Then t0 ends: its ack may now cover t0..t9 at once.
    expect(await byId.get('t0')!.ack()).toBe(true);
    // The connection goes: the broker requeues only what was not acked, which is t10 alone.
    await first.close();
    let count = 0;
    await waitFor(
      async () => {
        count = await messageCount(work);
        return count > 0;
      },
      { message: 'the unacked delivery back in the queue' },
    );
    expect(count).toBe(1);
    const second = tracker.track(createRabbitQueue({ url: AMQP_URL, prefix, visibilityTimeout: 60_000 }));
    await second.connect();
    const again: QueueDelivery[] = [];
    await second.consume(channel, { concurrency: 5, deliver: (d) => void again.push(d) });
    await waitFor(() => again.length === 1, { message: 'the redelivery' });
    expect(again[0]!.id).toBe('t10');
    expect(await again[0]!.ack()).toBe(true);
    await second.close();
    await waitFor(async () => (await messageCount(work)) === 0, { message: 'queue empty' });
  });
});
