/**
 * Two apps on one server, and two deployments (subject prefixes) on one server: nothing crosses in
 * any part, also when names hold NATS wildcard and separator characters.
 */
import { CacheManager, EventQueue, LockManager, PubSubManager } from '@cluster/core';
import { inbox, NATS, requireServer, uniqueName, waitFor } from '@cluster/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { createNatsAdapters } from '../src/index.js';
import { deleteStreamsWith, NATS_URL, streamsWith } from './helpers/nats.js';

const available = await requireServer(NATS);

describe.skipIf(!available)('nats isolation between apps and deployments', () => {
  const prefixes: string[] = [];
  afterAll(async () => {
    for (const prefix of prefixes) await deleteStreamsWith(prefix);
    for (const prefix of prefixes) expect(await streamsWith(prefix)).toEqual([]);
  });

  function deployment(subjectPrefix = uniqueName('ti')) {
    if (!prefixes.includes(subjectPrefix)) prefixes.push(subjectPrefix);
    return createNatsAdapters({ servers: NATS_URL, subjectPrefix, queue: { visibilityTimeout: 2_000 } });
  }

  it('pub/sub: apps, deployments and wildcard channel names never meet', async () => {
    const p1 = uniqueName('ti');
    const p2 = uniqueName('ti');
    const node = (appName: string, prefix: string) =>
      new PubSubManager({ appName, adapter: deployment(prefix).pubSub });
    const a = node('shop', p1);
    const b = node('shop.eu', p1);
    const c = node('shop', p2);
    const publisher = node('shop', p1);
    const markerB = node('shop.eu', p1);
    const markerC = node('shop', p2);
    const all = [a, b, c, publisher, markerB, markerC];
    for (const m of all) await m.start();
    const seen = { a: inbox<string>(), wild: inbox<string>(), b: inbox<string>(), c: inbox<string>() };
    await a.subscribe('orders', seen.a.handler);
    await a.subscribe('*', seen.wild.handler);
    await b.subscribe('orders', seen.b.handler);
    await b.subscribe('eu.orders', seen.b.handler);
    await c.subscribe('orders', seen.c.handler);
    await publisher.publish('orders', 'mine');
    await publisher.publish('>', 'gt');
    await publisher.publish('eu.orders', 'dotted');
    await publisher.publish('*', 'star');
    await waitFor(() => seen.a.messages.length === 1 && seen.wild.messages.length === 1, {
      message: 'delivered',
    });
    expect(seen.a.messages).toEqual(['mine']);
    expect(seen.wild.messages).toEqual(['star']);
    // Every stray copy would have been routed before `star` reached `a`: a marker sent now comes after it.
    await markerB.publish('orders', 'marker');
    await markerC.publish('orders', 'marker');
    await waitFor(() => seen.b.messages.length >= 1 && seen.c.messages.length >= 1, { message: 'markers' });
    expect(seen.b.messages).toEqual(['marker']);
    expect(seen.c.messages).toEqual(['marker']);
    for (const m of all) await m.close();
  });

  it('queue, lock and cache: two apps on one deployment, and two deployments, stay apart', async () => {
    const p1 = uniqueName('ti');
    const one = deployment(p1);
    const two = deployment();
    const queues = [
      new EventQueue({ appName: 'app', adapter: one.queue, idleInterval: 20 }),
      new EventQueue({ appName: 'app.*', adapter: deployment(p1).queue, idleInterval: 20 }),
      new EventQueue({ appName: 'app', adapter: two.queue, idleInterval: 20 }),
    ];
    const got = queues.map(() => [] as string[]);
    for (const [i, q] of queues.entries()) {
      await q.start();
      q.subscribe<string>('jobs.*', {
        process: async (tag) => {
          got[i]!.push(tag);
        },
      });
    }
    for (const [i, q] of queues.entries()) for (let n = 0; n < 3; n++) await q.publish('jobs.*', `${i}:${n}`);
    await waitFor(() => got.every((list) => list.length === 3), { message: 'each queue got its tasks' });
    for (const [i, list] of got.entries()) expect(list.every((tag) => tag.startsWith(`${i}:`))).toBe(true);

    const locksOne = new LockManager({
      appName: 'app',
      adapters: { nats: one.lock },
      defaultAdapter: 'nats',
    });
    const locksTwo = new LockManager({
      appName: 'app',
      adapters: { nats: two.lock },
      defaultAdapter: 'nats',
    });
    await locksOne.start();
    await locksTwo.start();
    const held = await locksOne.tryAcquire('k.>');
    expect(held.held).toBe(true);
    const elsewhere = await locksTwo.tryAcquire('k.>');
    expect(elsewhere.held).toBe(true);
    await held();
    await elsewhere();

    const cacheOne = new CacheManager({
      appName: 'app',
      stores: { nats: one.cacheStore },
      defaultStore: 'nats',
    });
    const cacheTwo = new CacheManager({
      appName: 'app',
      stores: { nats: two.cacheStore },
      defaultStore: 'nats',
    });
    await cacheOne.start();
    await cacheTwo.start();
    const c1 = await cacheOne.createCache({ name: 'c' });
    const c2 = await cacheTwo.createCache({ name: 'c' });
    await c1.set('x.*', 1);
    await c2.set('x.*', 2);
    await c2.reset();
    expect(await c1.get('x.*')).toBe(1);
    expect(await c2.get('x.*')).toBeUndefined();

    for (const q of queues) await q.close({ timeout: 1_000 });
    await locksOne.close();
    await locksTwo.close();
    await cacheOne.close();
    await cacheTwo.close();
    await one.close();
    await two.close();
  });
});
