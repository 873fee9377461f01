import {
  ClusterError,
  EventQueue,
  type EventQueueOptions,
  type EventQueueTaskContext,
  type QueueAdapter,
  type QueueConsumer,
  type QueueDelivery,
  type QueuePublishRequest,
} from '@cluster/core';
import { afterEach, describe, expect, it } from 'vitest';
import { type Backend, type SuiteOptions, uniqueName } from './backend.js';
import { PeakCounter, signal, waitFor, within } from './wait.js';

export interface QueueSuiteOptions extends SuiteOptions<QueueAdapter> {
  /**
   * Upper bound in ms for a task whose consumer died, or whose queue closed without settling it, to
   * reach another instance: a little over the visibility timeout the backend's adapters use (memory
   * with `visibilityTimeout: 500` passes with 1 000). Default 10 000.
   */
  redeliveryWithinMs?: number;
  /** Lateness allowed on timed checks (backoff gaps) on a loaded machine, in ms. Default 250. */
  timingToleranceMs?: number;
}

/** Small backoff so retries take tens of ms; the retry test checks each gap against these bounds. */
const BACKOFF = { baseMs: 20, maxMs: 200, factor: 2 } as const;
/** Clock difference allowed between this process and a server on the same host, in ms. */
const CLOCK_SLACK_MS = 50;
/** Timers may fire up to a ms early against a coarser clock. */
const EARLY_MS = 3;

function ceilingFor(attempt: number): number {
  return Math.min(BACKOFF.maxMs, BACKOFF.baseMs * BACKOFF.factor ** (attempt - 1));
}

/** Simulated work inside handlers; never used as the thing a test asserts. */
function work(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * The event-queue conformance suite. It drives adapters through the EventQueue manager, as
 * applications do, and directly where a test needs a consumer that misbehaves (dies, stalls).
 * Tests for optional behaviour skip themselves when `adapter.capabilities` does not claim it.
 */
export function describeQueueConformance(options: QueueSuiteOptions): void {
  const redeliveryWithinMs = options.redeliveryWithinMs ?? 10_000;
  const tolerance = options.timingToleranceMs ?? 250;

  describe(`queue conformance: ${options.name}`, () => {
    let backend: Backend<QueueAdapter> | undefined;
    const queues: EventQueue[] = [];
    const rawAdapters: QueueAdapter[] = [];
    /** Releases handlers a test left hanging on purpose. */
    const releases: (() => void)[] = [];

    async function backendOf(): Promise<Backend<QueueAdapter>> {
      backend ??= await options.backend();
      return backend;
    }

    /** One EventQueue instance (a node) of `appName`, started. */
    async function node(appName: string, extra: Partial<EventQueueOptions> = {}): Promise<EventQueue> {
      const adapter = await (await backendOf()).create();
      const queue = new EventQueue({
        appName,
        adapter,
        backoff: BACKOFF,
        defaultTimeout: 10_000,
        closeTimeout: 2_000,
        idleInterval: 20,
        ...extra,
      });
      queues.push(queue);
      await queue.start();
      return queue;
    }

    async function nodes(count: number, appName = uniqueName('app')): Promise<EventQueue[]> {
      const out: EventQueue[] = [];
      for (let i = 0; i < count; i++) out.push(await node(appName));
      return out;
    }

    /** A connected adapter used directly, for consumers that behave badly on purpose. */
    async function rawAdapter(): Promise<QueueAdapter> {
      const adapter = await (await backendOf()).create();
      rawAdapters.push(adapter);
      await adapter.connect();
      return adapter;
    }

    /** Nothing pending, delayed or running on the channel: no further delivery can happen. */
    function drained(queue: EventQueue, channel: string): () => Promise<boolean> {
      return async () => {
        const stats = await queue.stats(channel);
        return stats.pending === 0 && stats.delayed === 0 && stats.inFlight === 0;
      };
    }

    afterEach(async () => {
      for (const release of releases.splice(0)) release();
      await Promise.all(queues.splice(0).map((queue) => queue.close({ timeout: 1_000 })));
      for (const adapter of rawAdapters.splice(0)) await adapter.close();
      await backend?.cleanup?.();
      backend = undefined;
    });

    it('runs each task once across three competing instances', async () => {
      const instances = await nodes(3);
      const runs = new Map<number, number>();
      for (const queue of instances) {
        queue.subscribe<number>('jobs', {
          concurrency: 2,
          process: async (n) => {
            runs.set(n, (runs.get(n) ?? 0) + 1);
            await nextTurn();
          },
        });
      }
      const total = 30;
      for (let n = 0; n < total; n++) await instances[n % 3]!.publish('jobs', n);
      await waitFor(() => runs.size === total, { message: 'every task ran' });
      await waitFor(drained(instances[0]!, 'jobs'), { message: 'queue drained' });
      const repeated = [...runs].filter(([, count]) => count !== 1);
      expect(repeated).toEqual([]);
    });

    it('never runs more tasks at once than the concurrency of each instance', async () => {
      const [a, b] = await nodes(2);
      const limits = [3, 2];
      const peaks = [new PeakCounter(), new PeakCounter()];
      const total = 24;
      let done = 0;
      for (let n = 0; n < total; n++) await a!.publish('work', n);
      [a!, b!].forEach((queue, i) => {
        queue.subscribe('work', {
          concurrency: limits[i]!,
          process: async () => {
            peaks[i]!.enter();
            try {
              await work(5);
            } finally {
              peaks[i]!.leave();
              done += 1;
            }
          },
        });
      });
      await waitFor(() => done === total, { message: 'every task ran' });
      expect(peaks[0]!.peak).toBeLessThanOrEqual(3);
      expect(peaks[1]!.peak).toBeLessThanOrEqual(2);
      // With a backlog, the instance allowed 3 does run tasks side by side.
      expect(peaks[0]!.peak).toBeGreaterThan(1);
    });

    it('takes no task while idle() is false and resumes when it is true again', async () => {
      const [queue] = await nodes(1);
      let idle = false;
      let polls = 0;
      const processed: number[] = [];
      queue!.subscribe<number>('gated', {
        idle: () => {
          polls += 1;
          return idle;
        },
        process: async (n) => {
          processed.push(n);
          // The first task makes the instance busy: it must not be handed a second one.
          if (processed.length === 1) idle = false;
        },
      });
      for (const n of [1, 2, 3, 4]) await queue!.publish('gated', n);
      let seen = polls;
      await waitFor(() => polls >= seen + 5, { message: 'idle() polled while busy' });
      expect(processed).toEqual([]);
      expect((await queue!.stats('gated')).pending).toBe(4);

      idle = true;
      await waitFor(() => processed.length >= 1, { message: 'resumed' });
      seen = polls;
      await waitFor(() => polls >= seen + 5, { message: 'idle() polled after pausing again' });
      expect(processed).toHaveLength(1);

      idle = true;
      await waitFor(() => processed.length === 4, { message: 'resumed again' });
      expect(new Set(processed)).toEqual(new Set([1, 2, 3, 4]));
    });

    it('a timeout aborts the signal, fails the attempt even when ignored, and frees the slot', async () => {
      const [queue] = await nodes(1);
      const hung = signal();
      releases.push(() => hung.resolve());
      const slowAttempts: number[] = [];
      let abortReason: unknown;
      let hungHandlerReturned = false;
      const fastRan = signal();
      queue!.subscribe<string>('timeouts', {
        concurrency: 1,
        process: async (kind, { signal: abort, attempt }) => {
          if (kind === 'fast') return fastRan.resolve();
          slowAttempts.push(attempt);
          if (attempt > 1) return;
          abort.addEventListener('abort', () => {
            abortReason = abort.reason;
          });
          await hung.promise; // ignores the signal on purpose
          hungHandlerReturned = true;
        },
      });
      await queue!.publish('timeouts', 'slow', { timeout: 150, maxRetries: 1 });
      await waitFor(() => slowAttempts.length === 1, { message: 'slow task started' });
      await queue!.publish('timeouts', 'fast');
      // Concurrency 1 and the first handler still hangs: the second task can only run if the timeout freed the slot.
      await within(fastRan.promise, 5_000, 'second task on the freed slot');
      expect(hungHandlerReturned).toBe(false);
      expect(ClusterError.is(abortReason, 'TASK_TIMEOUT')).toBe(true);
      await waitFor(() => slowAttempts.length === 2, { message: 'timed-out attempt retried' });
      expect(slowAttempts).toEqual([1, 2]);
      await waitFor(drained(queue!, 'timeouts'), { message: 'queue drained' });
    });

    it('retries with growing, jittered, bounded delays, then dead-letters; the dead letter replays', async (ctx) => {
      const [queue] = await nodes(1);
      ctx.skip(!queue!.capabilities.deadLetter, 'the adapter has no dead-letter store');
      const starts: number[] = [];
      let firstStartWall = 0;
      const retried: number[] = [];
      let failing = true;
      const healed: { attempt: number }[] = [];
      queue!.subscribe('flaky', {
        process: async (_payload, context) => {
          if (!failing) {
            healed.push({ attempt: context.attempt });
            return;
          }
          starts.push(performance.now());
          firstStartWall ||= Date.now();
          retried.push(context.retried);
          throw new Error('boom');
        },
      });
      const maxRetries = 4;
      const publishing = Date.now();
      const { id } = await queue!.publish('flaky', { order: 7 }, { maxRetries });
      const letters = await waitFor(
        async () => {
          const list = await queue!.deadLetters.list('flaky');
          return list.length === 1 ? list : undefined;
        },
        { message: 'task dead-lettered' },
      );
      expect(starts).toHaveLength(maxRetries + 1);
      expect(retried).toEqual([0, 1, 2, 3, 4]);
      for (let attempt = 1; attempt <= maxRetries; attempt++) {
        const gap = starts[attempt]! - starts[attempt - 1]!;
        const ceiling = ceilingFor(attempt);
        expect(gap, `gap after attempt ${attempt}`).toBeGreaterThanOrEqual(ceiling / 2 - EARLY_MS);
        expect(gap, `gap after attempt ${attempt}`).toBeLessThanOrEqual(ceiling + tolerance);
      }
      const [letter] = letters;
      expect(letter).toMatchObject({ id, payload: { order: 7 }, attempts: maxRetries + 1 });
      expect(letter!.error).toContain('boom');
      expect(letter!.failedAt).toBeGreaterThanOrEqual(letter!.publishedAt);
      // The first publish's time, kept through every retry (not the time of the last attempt, which
      // came at least 150 ms later). The server is on this host: its clock is ours, within slack.
      expect(letter!.publishedAt).toBeGreaterThanOrEqual(publishing - CLOCK_SLACK_MS);
      expect(letter!.publishedAt).toBeLessThanOrEqual(firstStartWall + CLOCK_SLACK_MS);
      expect((await queue!.stats('flaky')).deadLetters).toBe(1);

      failing = false;
      expect(await queue!.deadLetters.replay('flaky')).toBe(1);
      await waitFor(() => healed.length === 1, { message: 'replayed task ran' });
      expect(healed[0]!.attempt).toBe(1);
      await waitFor(drained(queue!, 'flaky'), { message: 'queue drained' });
      expect(await queue!.deadLetters.list('flaky')).toEqual([]);
    });

    it('lists dead letters with a limit, replays by id and purges', async (ctx) => {
      const [queue] = await nodes(1);
      ctx.skip(!queue!.capabilities.deadLetter, 'the adapter has no dead-letter store');
      const healed = new Set<string>();
      const ran: string[] = [];
      queue!.subscribe<string>('dlq', {
        process: async (name) => {
          if (!healed.has(name)) throw new Error(`${name} failed`);
          ran.push(name);
        },
      });
      const ids: string[] = [];
      for (const name of ['a', 'b', 'c']) ids.push((await queue!.publish('dlq', name)).id);
      await waitFor(async () => (await queue!.deadLetters.list('dlq')).length === 3, {
        message: 'three dead letters',
      });
      expect(await queue!.deadLetters.list('dlq', { limit: 2 })).toHaveLength(2);
      const all = await queue!.deadLetters.list('dlq');
      expect(new Set(all.map((letter) => letter.payload))).toEqual(new Set(['a', 'b', 'c']));
      expect(all.find((letter) => letter.id === ids[1])?.error).toContain('b failed');

      healed.add('a');
      expect(await queue!.deadLetters.replay('dlq', [ids[0]!])).toBe(1);
      await waitFor(() => ran.includes('a'), { message: 'replayed task ran' });
      expect(await queue!.deadLetters.purge('dlq', [ids[1]!])).toBe(1);
      await waitFor(drained(queue!, 'dlq'));
      expect((await queue!.deadLetters.list('dlq')).map((letter) => letter.id)).toEqual([ids[2]]);
      expect(await queue!.deadLetters.purge('dlq')).toBe(1);
      expect(await queue!.deadLetters.list('dlq')).toEqual([]);
      expect((await queue!.stats('dlq')).deadLetters).toBe(0);
    });

    it('a delayed task stays invisible until its delay elapses, without holding back others', async (ctx) => {
      const [queue] = await nodes(1);
      ctx.skip(!queue!.capabilities.delayed, 'the adapter does not support delay');
      const seen: { name: string; at: number }[] = [];
      queue!.subscribe<string>('later', {
        process: async (name) => {
          seen.push({ name, at: performance.now() });
        },
      });
      const publishedAt = performance.now();
      await queue!.publish('later', 'delayed', { delay: 300 });
      await queue!.publish('later', 'now');
      await waitFor(() => seen.length === 2, { message: 'both tasks ran' });
      expect(seen.map((s) => s.name)).toEqual(['now', 'delayed']);
      expect(seen[1]!.at - publishedAt).toBeGreaterThanOrEqual(300 - EARLY_MS);
    });

    it('a caller-given id dedupes, across instances and while the task runs', async (ctx) => {
      const [a, b] = await nodes(2);
      const mode = a!.capabilities.dedupe;
      ctx.skip(mode === 'none', 'the adapter does not dedupe');
      expect(await a!.publish('orders', { n: 1 }, { id: 'order-1' })).toEqual({
        id: 'order-1',
        duplicate: false,
      });
      expect(await b!.publish('orders', { n: 2 }, { id: 'order-1' })).toEqual({
        id: 'order-1',
        duplicate: true,
      });
      const gate = signal();
      releases.push(() => gate.resolve());
      const runs: unknown[] = [];
      a!.subscribe('orders', {
        process: async (payload) => {
          runs.push(payload);
          await gate.promise;
        },
      });
      await waitFor(() => runs.length === 1, { message: 'task started' });
      expect((await b!.publish('orders', { n: 3 }, { id: 'order-1' })).duplicate).toBe(true);
      gate.resolve();
      await waitFor(drained(a!, 'orders'), { message: 'queue drained' });
      expect(runs).toEqual([{ n: 1 }]);
      if (mode === 'pending') {
        // Once its task is done the id is free again.
        expect((await b!.publish('orders', { n: 4 }, { id: 'order-1' })).duplicate).toBe(false);
        await waitFor(() => runs.length === 2, { message: 'republished task ran' });
        expect(runs[1]).toEqual({ n: 4 });
      }
      // Without an id nothing dedupes, even identical payloads.
      const first = await a!.publish('orders', 'same');
      const second = await a!.publish('orders', 'same');
      expect(first.duplicate || second.duplicate).toBe(false);
      expect(first.id).not.toBe(second.id);
    });

    it('keeps tasks published while nobody consumes and delivers them to the first subscriber', async () => {
      const [producer, worker] = await nodes(2);
      for (const n of [1, 2, 3]) await producer!.publish('inbox', n);
      expect((await producer!.stats('inbox')).pending).toBe(3);
      const got: number[] = [];
      worker!.subscribe<number>('inbox', {
        process: async (n) => {
          got.push(n);
        },
      });
      await waitFor(() => got.length === 3, { message: 'all three delivered' });
      await waitFor(drained(producer!, 'inbox'));
      expect(got.sort()).toEqual([1, 2, 3]);
    });

    it('gives the handler { signal, id, attempt, retried }', async () => {
      const [queue] = await nodes(1);
      const contexts: { context: EventQueueTaskContext; aborted: boolean }[] = [];
      queue!.subscribe('context', {
        process: async (_payload, context) => {
          contexts.push({ context, aborted: context.signal.aborted });
        },
      });
      const given = await queue!.publish('context', 1, { id: 'ctx-1' });
      const generated = await queue!.publish('context', 2);
      await waitFor(() => contexts.length === 2, { message: 'both ran' });
      expect(given.id).toBe('ctx-1');
      expect(typeof generated.id).toBe('string');
      expect(new Set(contexts.map((c) => c.context.id))).toEqual(new Set(['ctx-1', generated.id]));
      for (const { context, aborted } of contexts) {
        expect(context.signal).toBeInstanceOf(AbortSignal);
        expect(aborted).toBe(false);
        expect(context.attempt).toBe(1);
        expect(context.retried).toBe(0);
      }
    });

    it('close() waits for running tasks to finish before it resolves', async () => {
      const [worker, observer] = await nodes(2);
      const started = signal();
      const gate = signal();
      releases.push(() => gate.resolve());
      let finished = false;
      worker!.subscribe('drain', {
        process: async () => {
          started.resolve();
          await gate.promise;
          finished = true;
        },
      });
      await observer!.publish('drain', 'job');
      await within(started.promise, 5_000, 'task start');
      let closed = false;
      const closing = worker!.close({ timeout: 10_000 }).then(() => {
        closed = true;
      });
      await nextTurn();
      expect(closed).toBe(false);
      await expect(worker!.publish('drain', 'late')).rejects.toMatchObject({ code: 'CLOSED' });
      expect(() => worker!.subscribe('other', { process: () => {} })).toThrow(
        expect.objectContaining({ code: 'CLOSED' }),
      );
      gate.resolve();
      await within(closing, 5_000, 'close');
      expect(finished).toBe(true);
      // Settled, not left for redelivery.
      await waitFor(drained(observer!, 'drain'), { message: 'task acknowledged' });
      expect((await observer!.stats('drain')).deadLetters).toBe(0);
    });

    it('close() aborts tasks still running at its deadline and leaves them to another instance', async (ctx) => {
      const [leaving, staying] = await nodes(2);
      ctx.skip(!leaving!.capabilities.redelivery, 'the adapter does not redeliver');
      const started = signal();
      const hung = signal();
      releases.push(() => hung.resolve());
      let abortedSignal: AbortSignal | undefined;
      leaving!.subscribe('handover', {
        process: async (_payload, { signal: abort }) => {
          abortedSignal = abort;
          started.resolve();
          await hung.promise; // ignores the abort, as a stuck handler would
        },
      });
      const { id } = await staying!.publish('handover', { job: 1 }, { timeout: 60_000 });
      await within(started.promise, 5_000, 'task start');
      await within(leaving!.close({ timeout: 100 }), 5_000, 'close past its deadline');
      expect(abortedSignal?.aborted).toBe(true);
      const redelivered = signal<{ payload: unknown; context: EventQueueTaskContext }>();
      staying!.subscribe('handover', {
        process: async (payload, context) => redelivered.resolve({ payload, context }),
      });
      const { payload, context } = await within(
        redelivered.promise,
        redeliveryWithinMs + 2_000,
        'redelivery to the remaining instance',
      );
      expect(payload).toEqual({ job: 1 });
      expect(context.id).toBe(id);
      expect(context.attempt).toBeGreaterThanOrEqual(2);
      await waitFor(drained(staying!, 'handover'), { message: 'queue drained' });
    });

    it('stops consuming a channel on unsubscribe(); another instance takes over', async () => {
      const [first, second] = await nodes(2);
      const ran: string[] = [];
      first!.subscribe<string>('handoff', {
        process: async (name) => {
          ran.push(`first:${name}`);
        },
      });
      await first!.publish('handoff', 'one');
      await waitFor(() => ran.length === 1, { message: 'first task ran' });
      await first!.unsubscribe('handoff');
      await first!.publish('handoff', 'two');
      expect((await first!.stats('handoff')).pending).toBe(1);
      second!.subscribe<string>('handoff', {
        process: async (name) => {
          ran.push(`second:${name}`);
        },
      });
      await waitFor(() => ran.length === 2, { message: 'second task ran' });
      expect(ran).toEqual(['first:one', 'second:two']);
      // The channel can be subscribed again after unsubscribe().
      first!.subscribe('handoff', { process: () => {} });
    });

    it('redelivers the task of a consumer that died mid-task to another instance', async (ctx) => {
      const [queue] = await nodes(1);
      ctx.skip(!queue!.capabilities.redelivery, 'the adapter does not redeliver');
      const dead = await rawAdapter();
      const taken = signal<QueueDelivery>();
      const doomed = await dead.consume(queue!.getFullChannel('crash'), {
        concurrency: 1,
        deliver: (delivery) => taken.resolve(delivery),
      });
      const { id } = await queue!.publish('crash', { job: 'crash' });
      const first = await within(taken.promise, 5_000, 'first delivery');
      expect(first.id).toBe(id);
      await doomed.close(); // gone without settling, like a killed process

      const redelivered = signal<{ payload: unknown; context: EventQueueTaskContext }>();
      queue!.subscribe('crash', {
        process: async (payload, context) => redelivered.resolve({ payload, context }),
      });
      const { payload, context } = await within(
        redelivered.promise,
        redeliveryWithinMs + 2_000,
        'redelivery to a live instance',
      );
      expect(payload).toEqual({ job: 'crash' });
      expect(context.id).toBe(id);
      expect(context.attempt).toBeGreaterThan(first.attempt);
      await waitFor(drained(queue!, 'crash'), { message: 'queue drained' });
    });

    it('a slow consumer whose claim expired cannot settle the task any more', async (ctx) => {
      const [queue] = await nodes(1);
      ctx.skip(!queue!.capabilities.redelivery, 'the adapter does not redeliver');
      const channel = queue!.getFullChannel('reclaim');
      const slow = await rawAdapter();
      const fast = await rawAdapter();
      const slowTook = signal<QueueDelivery>();
      const fastTook = signal<QueueDelivery>();
      let slowConsumer: QueueConsumer | undefined;
      slowConsumer = await slow.consume(channel, {
        concurrency: 1,
        deliver: (delivery) => {
          slowConsumer?.pause(); // it takes nothing more, so the reclaimed task must go to `fast`
          slowTook.resolve(delivery);
        },
      });
      const { id } = await queue!.publish('reclaim', 'work');
      const stale = await within(slowTook.promise, 5_000, 'first delivery');
      const fastConsumer = await fast.consume(channel, {
        concurrency: 1,
        deliver: (delivery) => fastTook.resolve(delivery),
      });
      const fresh = await within(fastTook.promise, redeliveryWithinMs + 2_000, 'redelivery');
      expect(fresh.id).toBe(id);
      expect(fresh.attempt).toBeGreaterThan(stale.attempt);

      expect(await stale.touch()).toBe(false);
      expect(await stale.ack()).toBe(false);
      expect(await stale.retry(0, 'late')).toBe(false);
      expect(await stale.deadLetter('late')).toBe(false);
      expect(await fresh.ack()).toBe(true);
      await waitFor(drained(queue!, 'reclaim'), { message: 'queue drained' });
      expect((await queue!.stats('reclaim')).deadLetters).toBe(0);
      await slowConsumer.close();
      await fastConsumer.close();
    });

    it('keeps the claim of a task that runs longer than the visibility timeout', async (ctx) => {
      const [a, b] = await nodes(2);
      const visibility = a!.capabilities.visibilityTimeoutMs;
      ctx.skip(
        !a!.capabilities.redelivery || visibility === undefined || visibility > 2_000,
        'needs an adapter declaring a visibility timeout of at most 2 s',
      );
      const attempts: number[] = [];
      for (const queue of [a!, b!]) {
        queue.subscribe('long', {
          process: async (_payload, { attempt }) => {
            attempts.push(attempt);
            await work(visibility! * 3);
          },
        });
      }
      await a!.publish('long', 'job');
      await waitFor(() => attempts.length >= 1, { message: 'task started' });
      await waitFor(drained(a!, 'long'), { timeout: visibility! * 3 + 10_000, message: 'task finished' });
      expect(attempts).toEqual([1]);
    });

    it('keeps the tasks of different apps apart on one backend', async () => {
      const base = uniqueName('app');
      // `base` + `eu:jobs` and `base:eu` + `jobs` must not meet, nor two apps on the same channel name.
      const apps = [
        { appName: base, channel: 'eu:jobs' },
        { appName: `${base}:eu`, channel: 'jobs' },
        { appName: `${base}-other`, channel: 'eu:jobs' },
      ];
      const received = apps.map(() => [] as string[]);
      const instances: EventQueue[] = [];
      for (const [i, app] of apps.entries()) {
        const queue = await node(app.appName);
        instances.push(queue);
        queue.subscribe<string>(app.channel, {
          process: async (tag) => {
            received[i]!.push(tag);
          },
        });
      }
      for (const [i, app] of apps.entries()) {
        for (let n = 0; n < 3; n++) await instances[i]!.publish(app.channel, `${i}:${n}`);
      }
      await waitFor(() => received.every((list) => list.length >= 3), { message: 'every app got its tasks' });
      for (const [i, app] of apps.entries()) await waitFor(drained(instances[i]!, app.channel));
      for (const [i, list] of received.entries()) {
        expect(list.sort()).toEqual([`${i}:0`, `${i}:1`, `${i}:2`]);
      }
    });

    it('round-trips every payload type', async () => {
      const [producer, worker] = await nodes(2);
      const payloads: Record<string, unknown> = {
        date: new Date('2024-02-29T12:34:56.789Z'),
        map: new Map<unknown, unknown>([
          ['a', 1],
          [2, { b: [3] }],
        ]),
        set: new Set(['x', 1, null]),
        bigint: 12345678901234567890123n,
        buffer: Buffer.from([0, 1, 2, 250, 255]),
        bytes: new Uint8Array([9, 8, 7]),
        nested: { list: [1, 'two', { three: new Date(0), four: [new Set([4n])] }], empty: {}, none: null },
        null: null,
        zero: 0,
        emptyString: '',
        false: false,
        undefined: undefined,
        text: 'héllo ✓ 😀 "quoted" \\ back',
        dollarTag: { $t: 'd', v: 1 },
      };
      const received = new Map<string, unknown>();
      worker!.subscribe('types', {
        process: async (payload, { id }) => {
          received.set(id, payload);
        },
      });
      for (const [name, payload] of Object.entries(payloads)) {
        await producer!.publish('types', payload, { id: `type-${name}` });
      }
      const count = Object.keys(payloads).length;
      await waitFor(() => received.size === count, { message: 'every payload arrived' });
      for (const [name, payload] of Object.entries(payloads)) {
        const got = received.get(`type-${name}`);
        expect(got, name).toEqual(payload);
        if (payload === null || typeof payload !== 'object') expect(Object.is(got, payload), name).toBe(true);
      }
      expect(received.get('type-date')).toBeInstanceOf(Date);
      expect(received.get('type-map')).toBeInstanceOf(Map);
      expect(received.get('type-set')).toBeInstanceOf(Set);
      expect(typeof received.get('type-bigint')).toBe('bigint');
      expect(Buffer.isBuffer(received.get('type-buffer'))).toBe(true);
      expect(received.get('type-bytes')).toBeInstanceOf(Uint8Array);
      expect(received.has('type-undefined')).toBe(true);
    });

    it('rejects what it cannot carry at publish time and enqueues nothing', async () => {
      const [queue] = await nodes(1);
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      const code = (c: string) => expect.objectContaining({ code: c });
      await expect(queue!.publish('bad', () => 1)).rejects.toEqual(code('SERIALIZATION'));
      await expect(queue!.publish('bad', { nested: { fn: () => 1 } })).rejects.toEqual(code('SERIALIZATION'));
      await expect(queue!.publish('bad', cyclic, { id: 'bad-1' })).rejects.toEqual(code('SERIALIZATION'));
      const tooLarge = 'x'.repeat(queue!.capabilities.maxPayloadBytes);
      await expect(queue!.publish('bad', tooLarge)).rejects.toEqual(code('PAYLOAD_TOO_LARGE'));
      await expect(queue!.publish('bad', 1, { maxRetries: -1 })).rejects.toEqual(code('INVALID_ARGUMENT'));
      await expect(queue!.publish('bad', 1, { maxRetries: 1.5 })).rejects.toEqual(code('INVALID_ARGUMENT'));
      await expect(queue!.publish('bad', 1, { delay: -1 })).rejects.toEqual(code('INVALID_ARGUMENT'));
      await expect(queue!.publish('bad', 1, { timeout: 0 })).rejects.toEqual(code('INVALID_ARGUMENT'));
      await expect(queue!.publish('bad', 1, { id: '' })).rejects.toEqual(code('INVALID_ARGUMENT'));
      await expect(queue!.publish('', 1)).rejects.toEqual(code('INVALID_ARGUMENT'));
      expect(await queue!.stats('bad')).toMatchObject({ pending: 0, delayed: 0, inFlight: 0 });
      // The failed publish did not reserve its id.
      expect((await queue!.publish('bad', 'fine', { id: 'bad-1' })).duplicate).toBe(false);
      expect((await queue!.stats('bad')).pending).toBe(1);
    });

    it('the adapter itself refuses a malformed request with INVALID_ARGUMENT and enqueues nothing', async () => {
      // Another manager (or a test) may call an adapter directly: its boundary checks what core checks.
      const adapter = await rawAdapter();
      const channel = `${uniqueName('app')}:bad`;
      const task = { id: 'ok', payload: '1', maxRetries: 0, timeout: 1_000, delay: 0, dedupe: false };
      const code = (c: string) => expect.objectContaining({ code: c });
      const malformed: Record<string, unknown>[] = [
        { id: '' },
        { payload: 1 },
        { maxRetries: -1 },
        { maxRetries: 0.5 },
        { timeout: 0 },
        { delay: -1 },
        { dedupe: 'yes' },
      ];
      for (const change of malformed) {
        await expect(
          adapter.publish(channel, { ...task, ...change } as unknown as QueuePublishRequest),
          JSON.stringify(change),
        ).rejects.toEqual(code('INVALID_ARGUMENT'));
      }
      const tooLarge = { ...task, payload: 'x'.repeat(adapter.capabilities.maxPayloadBytes + 1) };
      await expect(adapter.publish(channel, tooLarge)).rejects.toEqual(code('PAYLOAD_TOO_LARGE'));
      await expect(adapter.replayDeadLetters(channel, 'ok' as unknown as string[])).rejects.toEqual(
        code('INVALID_ARGUMENT'),
      );
      await expect(adapter.purgeDeadLetters(channel, [1] as unknown as string[])).rejects.toEqual(
        code('INVALID_ARGUMENT'),
      );
      expect(await adapter.stats(channel)).toMatchObject({ pending: 0, delayed: 0, inFlight: 0 });
    });
  });
}
