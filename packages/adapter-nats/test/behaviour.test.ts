/**
 * NATS-specific behaviour beyond the conformance suites: the lock's watch wake-up, the cache's
 * compare-and-set expiry, the queue's recovery after its consumer is deleted, the dead-letter
 * stream, and ownership of a given connection.
 */
import { EventQueue } from '@cluster/core';
import { NATS, requireServer, uniqueName, waitFor } from '@cluster/testkit';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { afterAll, describe, expect, it } from 'vitest';
import {
  createNatsCacheStore,
  createNatsLock,
  createNatsPubSub,
  createNatsQueue,
  kvKey,
} from '../src/index.js';
import { channelNames, WORKERS } from '../src/queue/names.js';
import { deleteStreamsWith, NATS_URL, rawConnection } from './helpers/nats.js';

const available = await requireServer(NATS);

describe.skipIf(!available)('nats adapter behaviour', () => {
  const prefixes: string[] = [];
  const prefix = () => {
    const name = uniqueName('tb');
    prefixes.push(name);
    return name;
  };
  afterAll(async () => {
    for (const name of prefixes) await deleteStreamsWith(name);
  });

  it('wakes a lock waiter by the KV watch, not by the poll', async () => {
    const subjectPrefix = prefix();
    // A poll of a minute: only the watch can wake the waiter in time.
    const a = createNatsLock({ servers: NATS_URL, subjectPrefix, pollInterval: 60_000 });
    const b = createNatsLock({ servers: NATS_URL, subjectPrefix, pollInterval: 60_000 });
    const held = await a.acquire('k', { owner: 'a', ttl: 60_000, waitTimeout: 0 });
    expect(held).not.toBeNull();
    const waiting = b.acquire('k', { owner: 'b', ttl: 60_000, waitTimeout: 30_000 });
    // The waiter made its first attempt and watches the key before the release.
    await waitFor(
      async () => (await b.acquire('k', { owner: 'probe', ttl: 1_000, waitTimeout: 0 })) === null,
    );
    expect(await a.release('k', 'a', held!.token)).toBe(true);
    const startedAt = Date.now();
    const grant = await waiting;
    expect(grant).not.toBeNull();
    expect(grant!.token).toBeGreaterThan(held!.token);
    // Well under the 60 s poll (a generous bound for a loaded machine, not a speed assertion).
    expect(Date.now() - startedAt).toBeLessThan(30_000);
    await b.release('k', 'b', grant!.token);
    await a.close();
    await b.close();
  });

  it('an expired cache entry is removed on read, but never a value written after it', async () => {
    const subjectPrefix = prefix();
    const store = createNatsCacheStore({ servers: NATS_URL, subjectPrefix });
    await store.set('gone', 'old', 50);
    await waitFor(async () => (await store.get('gone')) === undefined, { message: 'expired' });
    const nc = await rawConnection();
    const kv = await new Kvm(nc).open(`${subjectPrefix}_cache`);
    // The read deleted the expired entry (a delete marker is the last entry).
    await waitFor(async () => (await kv.get(kvKey('gone')))?.operation === 'DEL', { message: 'removed' });
    await store.set('fresh', 'old', 50);
    const stale = await kv.get(kvKey('fresh'));
    await store.set('fresh', 'new');
    // A delete on the stale revision (what an expiring read does) must not remove the new value.
    await expect(kv.delete(kvKey('fresh'), { previousSeq: stale!.revision })).rejects.toThrow();
    expect(await store.get('fresh')).toBe('new');
    expect(await store.ttl('fresh')).toBe(Number.POSITIVE_INFINITY);
    await nc.close();
    await store.close();
  });

  it('the queue consumer recovers by itself when its durable consumer is deleted', async () => {
    const subjectPrefix = prefix();
    const queue = new EventQueue({
      appName: 'rec',
      adapter: createNatsQueue({ servers: NATS_URL, subjectPrefix, fetchExpires: 1_000 }),
      idleInterval: 20,
    });
    await queue.start();
    const seen: number[] = [];
    queue.subscribe<number>('jobs', {
      process: async (n) => {
        seen.push(n);
      },
    });
    await queue.publish('jobs', 1);
    await waitFor(() => seen.includes(1), { message: 'first task' });
    const nc = await rawConnection();
    const jsm = await jetstreamManager(nc);
    const names = channelNames(subjectPrefix, queue.getFullChannel('jobs'));
    await jsm.consumers.delete(names.stream, WORKERS);
    // A publish before the consumer exists again still lands in the stream (the consumer replays it).
    await queue.publish('jobs', 2);
    await waitFor(() => seen.includes(2), {
      timeout: 30_000,
      message: 'task after the consumer was deleted',
    });
    await nc.close();
    await queue.close({ timeout: 1_000 });
  }, 60_000);

  it('dead letters live in their own stream and survive the adapter', async () => {
    const subjectPrefix = prefix();
    const make = () =>
      new EventQueue({
        appName: 'dl',
        adapter: createNatsQueue({ servers: NATS_URL, subjectPrefix }),
        backoff: { baseMs: 10, maxMs: 20, factor: 2 },
        idleInterval: 20,
      });
    const first = make();
    await first.start();
    first.subscribe('jobs', {
      process: async () => {
        throw new Error('always');
      },
    });
    const { id } = await first.publish('jobs', { x: 1 }, { maxRetries: 1 });
    await waitFor(async () => (await first.deadLetters.list('jobs')).length === 1, {
      message: 'dead-lettered',
    });
    await first.close({ timeout: 1_000 });
    const second = make();
    await second.start();
    const [letter] = await second.deadLetters.list('jobs');
    expect(letter).toMatchObject({ id, payload: { x: 1 }, attempts: 2 });
    expect(letter!.error).toContain('always');
    expect(await second.deadLetters.purge('jobs')).toBe(1);
    await second.close({ timeout: 1_000 });
  });

  it('never closes a connection it was given', async () => {
    const nc = await rawConnection();
    const pubSub = createNatsPubSub({ connection: nc, subjectPrefix: uniqueName('tb') });
    await pubSub.connect();
    await pubSub.close();
    expect(nc.isClosed()).toBe(false);
    await nc.close();
  });
});
