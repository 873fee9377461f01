import {
  ClusterError,
  type Logger,
  type PubSubAdapter,
  type PubSubHandler,
  PubSubManager,
  type PubSubMessageMeta,
} from '@cluster/core';
import { afterEach, describe, expect, it } from 'vitest';
import { type Backend, type SuiteOptions, uniqueName } from './backend.js';
import { waitFor } from './wait.js';

/** A logger that records what it was given, for asserting that errors reach it. */
export function recordingLogger(): Logger & { records: { level: string; obj: object; msg?: string }[] } {
  const records: { level: string; obj: object; msg?: string }[] = [];
  const make = (): Logger => ({
    debug: (obj, msg) => records.push({ level: 'debug', obj, ...(msg !== undefined && { msg }) }),
    info: (obj, msg) => records.push({ level: 'info', obj, ...(msg !== undefined && { msg }) }),
    warn: (obj, msg) => records.push({ level: 'warn', obj, ...(msg !== undefined && { msg }) }),
    error: (obj, msg) => records.push({ level: 'error', obj, ...(msg !== undefined && { msg }) }),
    child: () => make(),
  });
  return Object.assign(make(), { records });
}

/** Collects messages a handler receives. */
export function inbox<T = unknown>(): {
  handler: PubSubHandler<T>;
  messages: T[];
  metas: PubSubMessageMeta[];
} {
  const messages: T[] = [];
  const metas: PubSubMessageMeta[] = [];
  return {
    messages,
    metas,
    handler: (message, meta) => {
      messages.push(message);
      metas.push(meta);
    },
  };
}

/**
 * The pub/sub conformance suite. Negative checks ("X was not delivered") never sleep: they send a
 * marker after X from the same publisher on the same channel and rely on per-publisher order, or
 * register a probe handler after the handler under test on the same instance.
 */
export function describePubSubConformance(options: SuiteOptions<PubSubAdapter>): void {
  describe(`pub/sub conformance: ${options.name}`, () => {
    let backend: Backend<PubSubAdapter> | undefined;
    const managers: PubSubManager[] = [];

    async function node(appName: string, start = true, logger?: Logger): Promise<PubSubManager> {
      backend ??= await options.backend();
      const adapter = await backend.create();
      const m = new PubSubManager({ appName, adapter, ...(logger && { logger }) });
      managers.push(m);
      if (start) await m.start();
      return m;
    }
    async function nodes(n: number, appName = uniqueName('app')): Promise<PubSubManager[]> {
      const out: PubSubManager[] = [];
      for (let i = 0; i < n; i++) out.push(await node(appName));
      return out;
    }

    afterEach(async () => {
      for (const m of managers.splice(0)) await m.close();
      await backend?.cleanup?.();
      backend = undefined;
    });

    it('delivers to every other instance, with the publisher id', async () => {
      const [a, b, c] = await nodes(3);
      const inB = inbox();
      const inC = inbox();
      await b!.subscribe('ch', inB.handler);
      await c!.subscribe('ch', inC.handler);
      await a!.publish('ch', { hello: 'world' });
      await waitFor(() => inB.messages.length === 1 && inC.messages.length === 1);
      expect(inB.messages[0]).toEqual({ hello: 'world' });
      expect(inB.metas[0]).toMatchObject({ channel: 'ch', publisherId: a!.instanceId, local: false });
    });

    it('skips the publisher by default, and delivers to it with skipSelf: false', async () => {
      const [a, b] = await nodes(2);
      const inA = inbox();
      const inB = inbox();
      await a!.subscribe('ch', inA.handler);
      await b!.subscribe('ch', inB.handler);
      await a!.publish('ch', 'default');
      await a!.publish('ch', 'with-self', { skipSelf: false });
      await waitFor(() => inA.messages.length === 1 && inB.messages.length === 2);
      expect(inA.messages).toEqual(['with-self']);
      expect(inA.metas[0]!.local).toBe(true);
      expect(inB.messages).toEqual(['default', 'with-self']);
    });

    it('keeps onlySelf messages inside the instance', async () => {
      const [a, b] = await nodes(2);
      const inA = inbox();
      const inB = inbox();
      await a!.subscribe('ch', inA.handler);
      await b!.subscribe('ch', inB.handler);
      await a!.publish('ch', 'local', { onlySelf: true });
      await a!.publish('ch', 'marker');
      await waitFor(() => inA.messages.length === 1 && inB.messages.length === 1);
      expect(inA.messages).toEqual(['local']);
      expect(inB.messages).toEqual(['marker']);
    });

    it('stops delivering after unsubscribe, and the returned function unsubscribes too', async () => {
      const [a, b] = await nodes(2);
      const gone = inbox();
      const probe = inbox();
      const off = await b!.subscribe('ch', gone.handler);
      await b!.subscribe('ch', probe.handler);
      await a!.publish('ch', 1);
      await waitFor(() => probe.messages.length === 1 && gone.messages.length === 1);
      await off();
      await a!.publish('ch', 2);
      await waitFor(() => probe.messages.length === 2);
      expect(gone.messages).toEqual([1]);
      await b!.unsubscribe('ch', probe.handler);
      const again = inbox();
      await b!.subscribe('ch', again.handler);
      await a!.publish('ch', 3);
      await waitFor(() => again.messages.length === 1);
      expect(probe.messages).toEqual([1, 2]);
    });

    it('delivers once to a handler subscribed twice', async () => {
      const [a, b] = await nodes(2);
      const twice = inbox();
      const probe = inbox();
      await b!.subscribe('ch', twice.handler);
      await b!.subscribe('ch', twice.handler);
      await b!.subscribe('ch', probe.handler);
      await a!.publish('ch', 'x');
      await waitFor(() => probe.messages.length === 1);
      expect(twice.messages).toEqual(['x']);
    });

    it('debounces identical payloads per subscriber, and two debounced subscribers both run', async () => {
      const [a, b] = await nodes(2);
      const first = inbox();
      const second = inbox();
      await b!.subscribe('ch', first.handler, { debounce: 100 });
      await b!.subscribe('ch', second.handler, { debounce: 100 });
      for (let i = 0; i < 6; i++) await a!.publish('ch', { m: 1 });
      for (let i = 0; i < 6; i++) await a!.publish('ch', { m: 2 });
      // 'end' is published last, so its own debounce window closes after the others'.
      await a!.publish('ch', 'end');
      await waitFor(() => first.messages.includes('end') && second.messages.includes('end'));
      for (const box of [first, second]) {
        expect(box.messages).toHaveLength(3);
        expect(box.messages).toEqual(expect.arrayContaining([{ m: 1 }, { m: 2 }, 'end']));
      }
    });

    it('isolates a throwing handler and reports it to the logger', async () => {
      const appName = uniqueName('app');
      const logger = recordingLogger();
      const a = await node(appName);
      const b = await node(appName, true, logger);
      const good = inbox();
      await b.subscribe('ch', () => {
        throw new Error('sync boom');
      });
      await b.subscribe('ch', async () => {
        throw new Error('async boom');
      });
      await b.subscribe('ch', good.handler);
      await a.publish('ch', 1);
      await a.publish('ch', 2);
      await waitFor(() => good.messages.length === 2);
      await waitFor(() => logger.records.filter((r) => r.level === 'error').length >= 4);
      expect(good.messages).toEqual([1, 2]);
    });

    it('accepts subscriptions before start and activates them on start', async () => {
      const appName = uniqueName('app');
      const a = await node(appName);
      const b = await node(appName, false);
      const box = inbox();
      await b.subscribe('ch', box.handler);
      await b.start();
      await a.publish('ch', 'after-start');
      await waitFor(() => box.messages.length === 1);
      expect(box.messages).toEqual(['after-start']);
    });

    it('rejects publish after close with a typed error', async () => {
      const [a] = await nodes(1);
      await a!.close();
      const error = await a!.publish('ch', 1).catch((e) => e);
      expect(ClusterError.is(error, 'CLOSED')).toBe(true);
      expect(ClusterError.is(await a!.subscribe('ch', () => {}).catch((e) => e), 'CLOSED')).toBe(true);
    });

    it('isolates apps and channels; wildcard characters never widen a subscription', async () => {
      const appName = uniqueName('app');
      const [a, b] = [await node(appName), await node(appName)];
      // Two foreign apps whose names a prefix match or a glob would confuse with ours.
      const foreignNames = [`${appName}x`, `${appName.slice(0, 3)}*`];
      const foreign: { box: ReturnType<typeof inbox>; peer: PubSubManager }[] = [];
      for (const name of foreignNames) {
        const box = inbox();
        const sub = await node(name);
        await sub.subscribe('a', box.handler);
        foreign.push({ box, peer: await node(name) });
      }
      const names = ['a', 'a.b', 'a.*', 'a.>', '*', '>', 'a:b', 'a b', 'a?', '[a]'];
      const boxes = new Map(names.map((n) => [n, inbox()]));
      for (const [n, box] of boxes) await b.subscribe(n, box.handler);
      for (const n of names) await a.publish(n, n);
      // A marker per channel after our messages; each box must then hold exactly its own name.
      for (const n of names) await a.publish(n, 'marker');
      await waitFor(() => [...boxes.values()].every((box) => box.messages.includes('marker')));
      for (const [n, box] of boxes) expect(box.messages, `channel ${n}`).toEqual([n, 'marker']);
      // Each foreign app gets only its own peer's message, sent after all of ours reached the server.
      for (const { peer } of foreign) await peer.publish('a', 'own');
      await waitFor(() => foreign.every(({ box }) => box.messages.length >= 1));
      for (const { box } of foreign) expect(box.messages).toEqual(['own']);
    });

    it('round-trips every payload type', async () => {
      const [a, b] = await nodes(2);
      const box = inbox();
      await b!.subscribe('ch', box.handler);
      const payloads: unknown[] = [
        null,
        0,
        '',
        false,
        42,
        'text',
        [1, [2]],
        { nested: { date: new Date(1_700_000_000_000) } },
        new Map([['k', new Set([1n])]]),
        Buffer.from([1, 2, 3]),
        new Uint8Array([9]),
        undefined,
      ];
      for (const p of payloads) await a!.publish('ch', p);
      await waitFor(() => box.messages.length === payloads.length);
      expect(box.messages).toEqual(payloads);
      expect(ClusterError.is(await a!.publish('ch', () => 1).catch((e) => e), 'SERIALIZATION')).toBe(true);
      const big = 'x'.repeat(a!.capabilities.maxPayloadBytes + 1);
      expect(ClusterError.is(await a!.publish('ch', big).catch((e) => e), 'PAYLOAD_TOO_LARGE')).toBe(true);
    });

    it('keeps per-publisher order when the adapter claims it', async (ctx) => {
      const [a, b] = await nodes(2);
      if (a!.capabilities.ordering !== 'per-publisher') return ctx.skip();
      const box = inbox<number>();
      await b!.subscribe('ch', box.handler);
      const n = 300;
      await Promise.all(Array.from({ length: n }, (_, i) => a!.publish('ch', i)));
      await waitFor(() => box.messages.length === n);
      expect(box.messages).toEqual(Array.from({ length: n }, (_, i) => i));
    });

    it('rejects bad channel names with a typed error', async () => {
      const [a] = await nodes(1);
      for (const bad of ['', 42, null, 'a\nb', 'x'.repeat(600)]) {
        expect(ClusterError.is(await a!.publish(bad as string, 1).catch((e) => e), 'INVALID_ARGUMENT')).toBe(
          true,
        );
        expect(
          ClusterError.is(await a!.subscribe(bad as string, () => {}).catch((e) => e), 'INVALID_ARGUMENT'),
        ).toBe(true);
      }
    });
  });
}
