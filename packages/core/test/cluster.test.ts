import {
  type CacheStore,
  ClusterError,
  createCluster,
  createMemoryCacheStore,
  createMemoryHub,
  createMemoryPubSub,
  type MemoryHub,
  Plugin,
  type PubSubAdapter,
} from '@cluster/core';
import { recordingLogger, startInstances, TestTransaction, waitFor } from '@cluster/testkit';
import { afterEach, describe, expect, it } from 'vitest';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Wraps a memory pub/sub adapter and records calls, to observe lifecycle order and subscriptions. */
function recordingPubSub(hub: MemoryHub, calls: string[]): PubSubAdapter {
  const inner = createMemoryPubSub({ hub });
  return {
    capabilities: inner.capabilities,
    connect: async () => {
      calls.push('pubsub:connect');
      await inner.connect();
    },
    subscribe: async (channel, listener) => {
      calls.push(`pubsub:subscribe:${channel}`);
      await inner.subscribe(channel, listener);
    },
    unsubscribe: (channel) => inner.unsubscribe(channel),
    publish: (channel, payload) => inner.publish(channel, payload),
    close: async () => {
      calls.push('pubsub:close');
      await inner.close();
    },
    [Symbol.asyncDispose]: () => inner.close(),
  };
}

function recordingStore(calls: string[]): CacheStore {
  const inner = createMemoryCacheStore();
  return Object.assign(Object.create(inner) as CacheStore, {
    connect: async () => void calls.push('cache:connect'),
    close: async () => {
      calls.push('cache:close');
      await inner.close();
    },
  });
}

class HookPlugin extends Plugin {
  constructor(
    name: string,
    readonly calls: string[],
  ) {
    super({ name });
  }
  beforeLoad() {
    this.calls.push(`${this.name}:beforeLoad`);
  }
  load() {
    this.calls.push(`${this.name}:load`);
  }
  afterStart() {
    this.calls.push(`${this.name}:afterStart`);
  }
  beforeStop() {
    this.calls.push(`${this.name}:beforeStop`);
  }
  afterStop() {
    this.calls.push(`${this.name}:afterStop`);
  }
}

class SyncingPlugin extends HookPlugin {
  received: unknown[] = [];
  async handleSyncMessage(message: unknown) {
    this.received.push(message);
  }
}

describe('createCluster', () => {
  it('exposes the six parts the seed names and starts and stops idempotently', async () => {
    const app = createCluster({ name: 'shop' });
    for (const part of [
      'cache',
      'cacheManager',
      'pubSubManager',
      'syncMessageManager',
      'eventQueue',
      'lockManager',
    ]) {
      expect(app[part as keyof typeof app], part).toBeDefined();
    }
    await Promise.all([app.start(), app.start()]);
    expect(app.state).toBe('started');
    await app.cache.set('k', 1);
    expect(await app.cache.get('k')).toBe(1);
    await Promise.all([app.stop(), app.stop()]);
    expect(app.state).toBe('stopped');
    expect(ClusterError.is(await app.start().catch((e) => e), 'CLOSED')).toBe(true);
  });

  it('is AsyncDisposable', async () => {
    let stopped: ReturnType<typeof createCluster> | undefined;
    {
      await using app = createCluster({ name: 'shop' });
      await app.start();
      stopped = app;
    }
    expect(stopped.state).toBe('stopped');
  });

  it('runs plugin hooks in order, after the parts start and before they close, in reverse on stop', async () => {
    const calls: string[] = [];
    const hub = createMemoryHub();
    const app = createCluster({
      name: 'shop',
      hub,
      pubSub: { adapter: recordingPubSub(hub, calls) },
      cache: { stores: { rec: recordingStore(calls) } },
      plugins: [new HookPlugin('a', calls), new HookPlugin('b', calls)],
    });
    await app.start();
    await app.stop();
    const order = calls.filter((c) => !c.startsWith('pubsub:subscribe'));
    expect(order).toEqual([
      'cache:connect',
      'pubsub:connect',
      'a:beforeLoad',
      'b:beforeLoad',
      'a:load',
      'b:load',
      'a:afterStart',
      'b:afterStart',
      'b:beforeStop',
      'a:beforeStop',
      'pubsub:close',
      'cache:close',
      'b:afterStop',
      'a:afterStop',
    ]);
  });

  it('subscribes handleSyncMessage during beforeLoad, only for plugins that define it', async () => {
    const calls: string[] = [];
    const hub = createMemoryHub();
    const app = createCluster({
      name: 'shop',
      hub,
      pubSub: { adapter: recordingPubSub(hub, calls) },
      plugins: [new SyncingPlugin('withSync', calls), new HookPlugin('withoutSync', calls)],
    });
    cleanups.push(() => app.stop());
    await app.start();
    const subscribes = calls.filter((c) => c.startsWith('pubsub:subscribe'));
    expect(subscribes).toEqual(['pubsub:subscribe:shop:__sync.withSync']);
    expect(calls.indexOf('pubsub:subscribe:shop:__sync.withSync')).toBeLessThan(
      calls.indexOf('withSync:beforeLoad'),
    );
  });

  it('delivers sendSyncMessage to the same plugin on the other instances after commit', async () => {
    const hub = createMemoryHub();
    const plugins = [0, 1, 2].map(() => new SyncingPlugin('schema', []));
    const cluster = await startInstances(3, (i) => ({ name: 'shop', hub, plugins: [plugins[i]!] }));
    cleanups.push(() => cluster.stop());
    const tx = new TestTransaction();
    await plugins[0]!.sendSyncMessage(
      { type: 'syncCollection', collectionName: 'posts' },
      { transaction: tx },
    );
    await plugins[0]!.sendSyncMessage({ type: 'marker' });
    await waitFor(() => plugins[1]!.received.length === 1 && plugins[2]!.received.length === 1);
    expect(plugins[1]!.received).toEqual([{ type: 'marker' }]);
    tx.commit();
    await waitFor(() => plugins[1]!.received.length === 2 && plugins[2]!.received.length === 2);
    expect(plugins[2]!.received[1]).toEqual({ type: 'syncCollection', collectionName: 'posts' });
    expect(plugins[0]!.received).toEqual([]);
  });

  it('runs the seed examples as written', async () => {
    const hub = createMemoryHub();
    const sharedStore = () => createMemoryCacheStore({ hub });
    const cancelled: unknown[] = [];
    const ran: unknown[] = [];
    class AsyncTaskPlugin extends Plugin {
      name = 'async-task';
      concurrency = 2;
      idle = () => true;
      async load() {
        this.cache = await this.app.cacheManager.createCache({
          name: 'auth',
          prefix: 'auth',
          store: 'redis',
        });
        await this.cache.wrap('token:config', async () => ({ policy: 'default' }), 60 * 1000);
        const channel = `${this.name}.task.cancel`;
        await this.app.pubSubManager.subscribe(channel, async ({ id }: { id: number }) => {
          cancelled.push(id);
        });
        this.app.eventQueue.subscribe(`${this.name}.task`, {
          concurrency: this.concurrency,
          idle: this.idle,
          process: async (payload: { id: number }, { signal }) => {
            expect(signal).toBeInstanceOf(AbortSignal);
            ran.push(payload.id);
          },
        });
      }
      cache: Awaited<ReturnType<typeof this.app.cacheManager.createCache>> | undefined;
    }
    const plugins = [new AsyncTaskPlugin(), new AsyncTaskPlugin()];
    const cluster = await startInstances(2, (i) => ({
      name: 'main',
      hub,
      cache: { stores: { redis: sharedStore() } },
      plugins: [plugins[i]!],
    }));
    cleanups.push(() => cluster.stop());
    const [app1, app2] = cluster.apps;
    expect(await plugins[1]!.cache!.get('token:config')).toEqual({ policy: 'default' });
    await app1!.pubSubManager.publish('async-task.task.cancel', { id: 7 }, { skipSelf: true });
    await waitFor(() => cancelled.length === 1);
    expect(cancelled).toEqual([7]);
    for (let id = 0; id < 10; id++)
      await app2!.eventQueue.publish('async-task.task', { id }, { maxRetries: 3 });
    await waitFor(() => ran.length === 10);
    expect([...ran].sort((a, b) => (a as number) - (b as number))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const lockKey = 'data-source-main:fields.beforeDestroy:posts';
    let inside = 0;
    let peak = 0;
    await Promise.all(
      cluster.apps.flatMap((app) =>
        [1, 2, 3].map(() =>
          app.lockManager.runExclusive(lockKey, async () => {
            inside += 1;
            peak = Math.max(peak, inside);
            await new Promise((r) => setTimeout(r, 5));
            inside -= 1;
          }),
        ),
      ),
    );
    expect(peak).toBe(1);
  });

  it('stops the parts that started when a start fails', async () => {
    const calls: string[] = [];
    const hub = createMemoryHub();
    class Broken extends Plugin {
      load() {
        throw new Error('load failed');
      }
    }
    const logger = recordingLogger();
    const app = createCluster({
      name: 'shop',
      hub,
      logger,
      pubSub: { adapter: recordingPubSub(hub, calls) },
      plugins: [new Broken()],
    });
    await expect(app.start()).rejects.toThrow('load failed');
    expect(calls).toContain('pubsub:close');
    expect(app.state).toBe('stopped');
    expect(logger.records.some((r) => r.level === 'error')).toBe(true);
  });

  it('validates its options and plugins', () => {
    expect(() => createCluster({ name: '' })).toThrow(ClusterError);
    const app = createCluster({ name: 'x' });
    app.plugin(new HookPlugin('p', []));
    expect(() => app.plugin(new HookPlugin('p', []))).toThrow(ClusterError);
    expect(() => createCluster({ name: 'x', cache: { defaultStore: 'nope' } })).toThrow(ClusterError);
  });
});

describe('subscriptions', () => {
  it('are AsyncDisposable', async () => {
    const hub = createMemoryHub();
    const cluster = await startInstances(2, () => ({ name: 'shop', hub }));
    cleanups.push(() => cluster.stop());
    const [a, b] = cluster.apps;
    const got: unknown[] = [];
    const probe: unknown[] = [];
    await b!.pubSubManager.subscribe('probe', (m) => void probe.push(m));
    {
      await using _sub = await b!.pubSubManager.subscribe('ch', (m) => void got.push(m));
      await a!.pubSubManager.publish('ch', 1);
      await waitFor(() => got.length === 1);
    }
    await a!.pubSubManager.publish('ch', 2);
    await a!.pubSubManager.publish('probe', 'after');
    await waitFor(() => probe.length === 1);
    expect(got).toEqual([1]);
  });
});
