import { inspect } from 'node:util';
import { type Cluster, ClusterError, createCluster } from '@cluster/core';
import { inbox, REDIS, requireServer, serverUrl, uniqueName, waitFor } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createRedisAdapters, type RedisAdapters } from '../src/index.js';
import { deleteKeysUnder } from './helpers/redis-server.js';

const url = serverUrl(REDIS);
const available = await requireServer(REDIS);
const raw = new Redis(url, { lazyConnect: true });
afterAll(() => raw.disconnect());

function compose(name: string, redis: RedisAdapters): Cluster {
  return createCluster({
    name,
    cache: { defaultStore: 'redis', stores: { redis: redis.cacheStore } },
    pubSub: { adapter: redis.pubSub },
    queue: { adapter: redis.queue },
    lock: { defaultAdapter: 'redis', adapters: { redis: redis.lock } },
  });
}

/** True once `connections` are closed for good (their command getter refuses). */
function closed(redis: RedisAdapters): boolean {
  try {
    void redis.connections.command;
    return false;
  } catch (error) {
    return ClusterError.is(error, 'CLOSED');
  }
}

describe.skipIf(!available)('createRedisAdapters: the four parts over one set of connections', () => {
  const keyPrefix = uniqueName('t');
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    await deleteKeysUnder(raw, keyPrefix);
  });

  it('two instances, each with its own bundle: cache, pub/sub and lock work across them', async () => {
    const name = uniqueName('app');
    const bundles = [createRedisAdapters({ url, keyPrefix }), createRedisAdapters({ url, keyPrefix })];
    const [a, b] = bundles.map((bundle) => compose(name, bundle)) as [Cluster, Cluster];
    cleanups.push(
      () => a.stop(),
      () => b.stop(),
    );
    const box = inbox();
    await b.pubSubManager.subscribe('news', box.handler);
    await a.start();
    await b.start();

    await a.cache.set('shared', { from: 'a', at: new Date(1) });
    expect(await b.cache.get('shared')).toEqual({ from: 'a', at: new Date(1) });

    await a.pubSubManager.publish('news', 'hello');
    await waitFor(() => box.messages.includes('hello'));

    const order: string[] = [];
    await Promise.all(
      [a, b].map((app) =>
        app.lockManager.runExclusive(
          'critical',
          async () => {
            order.push(`${app === a ? 'a' : 'b'}:in`);
            await new Promise((r) => setTimeout(r, 20));
            order.push(`${app === a ? 'a' : 'b'}:out`);
          },
          5_000,
        ),
      ),
    );
    // Mutual exclusion: in/out pairs never interleave.
    expect(order[0]!.slice(0, 1)).toBe(order[1]!.slice(0, 1));
    expect(order[2]!.slice(0, 1)).toBe(order[3]!.slice(0, 1));

    await a.stop();
    await b.stop();
    for (const bundle of bundles) expect(closed(bundle), 'stop() closed the shared connections').toBe(true);
  });

  it('the queue of one bundle feeds the consumer of another', async () => {
    const name = uniqueName('app');
    const bundles = [createRedisAdapters({ url, keyPrefix }), createRedisAdapters({ url, keyPrefix })];
    const [a, b] = bundles.map((bundle) => compose(name, bundle)) as [Cluster, Cluster];
    cleanups.push(
      () => a.stop(),
      () => b.stop(),
    );
    const tasks: unknown[] = [];
    b.eventQueue.subscribe('jobs', { process: async (payload) => void tasks.push(payload) });
    await a.start();
    await b.start();
    await a.eventQueue.publish('jobs', { n: 1 });
    await waitFor(() => tasks.length === 1, {
      timeout: 10_000,
      message: 'the task reaches the other instance',
    });
    expect(tasks).toEqual([{ n: 1 }]);
    await a.stop();
    await b.stop();
    for (const bundle of bundles) expect(closed(bundle)).toBe(true);
  });

  it('parts the app does not use are never created, so they hold nothing open', async () => {
    const redis = createRedisAdapters({ url, keyPrefix });
    const app = createCluster({
      name: uniqueName('app'),
      cache: { defaultStore: 'redis', stores: { redis: redis.cacheStore } },
      pubSub: { adapter: redis.pubSub },
    });
    cleanups.push(() => app.stop());
    await app.start();
    await app.cache.set('k', 1);
    expect(closed(redis)).toBe(false);
    await app.stop();
    expect(closed(redis), 'the unused queue and lock did not keep the connections open').toBe(true);
    await redis.close();
  });

  it('close() of the bundle closes what it created and is idempotent', async () => {
    const redis = createRedisAdapters({ url, keyPrefix });
    const store = redis.cacheStore;
    await store.connect();
    await store.set('x', '1');
    await redis.close();
    await redis.close();
    expect(closed(redis)).toBe(true);
    expect(ClusterError.is(await store.get('x').catch((e) => e), 'CLOSED')).toBe(true);
  });

  it('with a given client: uses it, duplicates it for subscriptions, and never closes it', async () => {
    const client = new Redis(url);
    cleanups.push(async () => void client.disconnect());
    const redis = createRedisAdapters({ client, keyPrefix });
    const name = uniqueName('app');
    const [a, b] = [compose(name, redis), compose(name, createRedisAdapters({ url, keyPrefix }))];
    cleanups.push(
      () => a.stop(),
      () => b.stop(),
    );
    const box = inbox();
    await a.pubSubManager.subscribe('ch', box.handler);
    await a.start();
    await b.start();
    await b.pubSubManager.publish('ch', 'to a');
    await waitFor(() => box.messages.includes('to a'));
    await a.cache.set('k', 'v');
    // The given client is the command connection: the key is there, under keyPrefix:app:cache:key.
    expect(await client.get(`${keyPrefix}:${name}:default:k`)).toBe(JSON.stringify('v'));
    const numsub = async () =>
      ((await raw.pubsub('NUMSUB', `${keyPrefix}:${name}:ch`)) as [string, number])[1];
    expect(await numsub()).toBe(1);
    await a.stop();
    expect(closed(redis)).toBe(true);
    // The given client stays open and usable; the subscriber duplicate the adapter made is gone.
    expect(client.status).toBe('ready');
    expect(await client.ping()).toBe('PONG');
    await waitFor(async () => (await numsub()) === 0, { message: 'the duplicated subscriber closed' });
  });

  it('inspect and JSON show neither credentials nor create parts', () => {
    const redis = createRedisAdapters({ url: 'redis://default:s3ntinel-pw@127.0.0.1:1', keyPrefix });
    const shown = `${inspect(redis, { depth: 10 })} ${JSON.stringify(redis)} ${inspect(redis.connections)}`;
    expect(shown).not.toContain('s3ntinel-pw');
    expect(JSON.parse(JSON.stringify(redis))).toEqual({ adapter: 'redis', parts: 0 });
    void redis.close();
  });
});
