import {
  ClusterError,
  type PubSubAdapter,
  type PubSubListener,
  PubSubManager,
  type SyncGap,
  SyncMessageManager,
  type TransactionLike,
} from '@cluster/core';
import { afterEach, describe, expect, it } from 'vitest';
import { type Backend, type SuiteOptions, uniqueName } from './backend.js';
import { inbox } from './pubsub.js';
import { waitFor, within } from './wait.js';

/** A transaction stand-in with the afterCommit / afterRollback hooks ORMs provide. */
export class TestTransaction implements TransactionLike {
  readonly #commit: (() => unknown)[] = [];
  readonly #rollback: (() => unknown)[] = [];
  afterCommit(callback: () => unknown): void {
    this.#commit.push(callback);
  }
  afterRollback(callback: () => unknown): void {
    this.#rollback.push(callback);
  }
  commit(): void {
    for (const cb of this.#commit.splice(0)) cb();
    this.#rollback.length = 0;
  }
  rollback(): void {
    for (const cb of this.#rollback.splice(0)) cb();
    this.#commit.length = 0;
  }
}

/** Wraps an adapter so a test can drop incoming messages, to create a real gap in a sequence. */
function lossy(adapter: PubSubAdapter): PubSubAdapter & { dropIncoming: boolean; dropped: number } {
  // Forwarding (not Object.create) so class adapters with private fields keep their `this`.
  const wrapped: PubSubAdapter & { dropIncoming: boolean; dropped: number } = {
    dropIncoming: false,
    dropped: 0,
    get capabilities() {
      return adapter.capabilities;
    },
    connect: () => adapter.connect(),
    subscribe: (channel: string, listener: PubSubListener) =>
      adapter.subscribe(channel, (payload) => {
        if (!wrapped.dropIncoming) listener(payload);
        else wrapped.dropped += 1;
      }),
    unsubscribe: (channel) => adapter.unsubscribe(channel),
    publish: (channel, payload) => adapter.publish(channel, payload),
    close: () => adapter.close(),
    [Symbol.asyncDispose]: () => adapter.close(),
  };
  if (adapter.onReconnect) wrapped.onReconnect = (listener) => adapter.onReconnect!(listener);
  return wrapped;
}

/** The sync-message conformance suite, run over any pub/sub adapter. */
export function describeSyncConformance(options: SuiteOptions<PubSubAdapter>): void {
  describe(`sync message conformance: ${options.name}`, () => {
    let backend: Backend<PubSubAdapter> | undefined;
    const closers: (() => Promise<void>)[] = [];

    async function node(appName: string) {
      backend ??= await options.backend();
      const adapter = lossy(await backend.create());
      const pubSub = new PubSubManager({ appName, adapter });
      const sync = new SyncMessageManager({ pubSub });
      closers.push(async () => {
        await sync.stop();
        await pubSub.close();
      });
      await pubSub.start();
      return { adapter, pubSub, sync };
    }
    async function nodes(n: number) {
      const appName = uniqueName('app');
      const out = [];
      for (let i = 0; i < n; i++) out.push(await node(appName));
      return out;
    }

    afterEach(async () => {
      for (const close of closers.splice(0)) await close();
      await backend?.cleanup?.();
      backend = undefined;
    });

    it('delivers to the other instances only, with a sequence number', async () => {
      const [a, b, c] = await nodes(3);
      const inA = inbox();
      const inB = inbox();
      const inC = inbox();
      await a!.sync.subscribe('plugin', inA.handler);
      await b!.sync.subscribe('plugin', inB.handler);
      await c!.sync.subscribe('plugin', inC.handler);
      await a!.sync.publish('plugin', { type: 'syncCollection', collectionName: 'posts' });
      await a!.sync.publish('plugin', { type: 'second' });
      await waitFor(() => inB.messages.length === 2 && inC.messages.length === 2);
      expect(inB.messages[0]).toEqual({ type: 'syncCollection', collectionName: 'posts' });
      expect(inB.metas.map((m) => (m as unknown as { seq: number }).seq)).toEqual([1, 2]);
      // The publisher's own handler: a probe on A sees its skipSelf: false marker after both.
      await a!.pubSub.publish('probe', 'x', { skipSelf: false });
      const probe = inbox();
      await a!.pubSub.subscribe('probe', probe.handler);
      await a!.pubSub.publish('probe', 'y', { skipSelf: false });
      await waitFor(() => probe.messages.includes('y'));
      expect(inA.messages).toEqual([]);
    });

    it('sends after commit, never before; the caller settles at once', async () => {
      const [a, b] = await nodes(2);
      const box = inbox();
      await b!.sync.subscribe('ch', box.handler);
      const tx = new TestTransaction();
      await within(a!.sync.publish('ch', 'in-tx', { transaction: tx }), 1_000, 'publish with a transaction');
      await a!.sync.publish('ch', 'marker');
      await waitFor(() => box.messages.includes('marker'));
      expect(box.messages).toEqual(['marker']);
      tx.commit();
      await waitFor(() => box.messages.includes('in-tx'));
      expect(box.messages).toEqual(['marker', 'in-tx']);
    });

    it('never sends on rollback, and leaves no gap behind', async () => {
      const [a, b] = await nodes(2);
      const box = inbox();
      const gaps: SyncGap[] = [];
      await b!.sync.subscribe('ch', box.handler, { onGap: (g) => void gaps.push(g) });
      await a!.sync.publish('ch', 'before');
      const tx = new TestTransaction();
      await within(
        a!.sync.publish('ch', 'rolled-back', { transaction: tx }),
        1_000,
        'publish with a transaction',
      );
      tx.rollback();
      await a!.sync.publish('ch', 'after');
      await waitFor(() => box.messages.includes('after'));
      expect(box.messages).toEqual(['before', 'after']);
      expect(gaps).toEqual([]);
    });

    it('detects a gap in a publisher sequence and runs the resync hook', async () => {
      const [a, b] = await nodes(2);
      const box = inbox();
      const gaps: SyncGap[] = [];
      await b!.sync.subscribe('ch', box.handler, { onGap: (g) => void gaps.push(g) });
      await a!.sync.publish('ch', 1);
      await waitFor(() => box.messages.length === 1);
      b!.adapter.dropIncoming = true;
      await a!.sync.publish('ch', 2);
      await a!.sync.publish('ch', 3);
      await waitFor(() => b!.adapter.dropped === 2);
      b!.adapter.dropIncoming = false;
      await a!.sync.publish('ch', 4);
      await waitFor(() => gaps.length === 1 && box.messages.includes(4));
      expect(gaps[0]).toMatchObject({
        channel: 'ch',
        publisherId: a!.pubSub.instanceId,
        expected: 2,
        received: 4,
      });
      expect(box.messages.filter((m) => m === 1 || m === 4)).toEqual([1, 4]);
    });

    it('handles nothing after stop', async () => {
      const [a, b] = await nodes(2);
      const box = inbox();
      await b!.sync.subscribe('ch', box.handler);
      // A raw probe registered after the sync handler on B: by the time it runs, the sync handler had its turn.
      const probe = inbox();
      await a!.sync.publish('ch', 'first');
      await waitFor(() => box.messages.length === 1);
      await b!.sync.stop();
      await b!.pubSub.subscribe('__sync.ch', probe.handler);
      await a!.sync.publish('ch', 'second');
      await waitFor(() => probe.messages.length === 1);
      expect(box.messages).toEqual(['first']);
      expect(ClusterError.is(await b!.sync.publish('ch', 1).catch((e) => e), 'CLOSED')).toBe(true);
    });

    it('rejects an unserialisable message at the call site, also with a transaction', async () => {
      const [a] = await nodes(1);
      const tx = new TestTransaction();
      const error = await a!.sync.publish('ch', { fn: () => 1 }, { transaction: tx }).catch((e) => e);
      expect(ClusterError.is(error, 'SERIALIZATION')).toBe(true);
      expect(ClusterError.is(await a!.sync.publish('', 1).catch((e) => e), 'INVALID_ARGUMENT')).toBe(true);
    });
  });
}
