import { ClusterError, closedError, invalidArgument } from '../errors.js';
import { randomId } from '../internal/async.js';
import { assertName, assertPositiveMs, namespaced } from '../internal/names.js';
import { errorFields, type Logger, noopLogger } from '../logger.js';
import { defaultSerializer, type Serializer } from '../serializer.js';
import {
  type EventQueueBackoffOptions,
  jitteredDelay,
  type ResolvedBackoff,
  resolveBackoff,
} from './backoff.js';
import type {
  QueueAdapter,
  QueueCapabilities,
  QueueConsumer,
  QueueDelivery,
  QueuePublishResult,
  QueueStats,
} from './types.js';

export interface EventQueueOptions {
  /** Prefix of every channel; instances of one app share queues, other apps never see them. */
  appName: string;
  adapter: QueueAdapter;
  serializer?: Serializer;
  logger?: Logger;
  /** Per-attempt timeout in ms for tasks published without one. Default 15 000. */
  defaultTimeout?: number;
  backoff?: EventQueueBackoffOptions;
  /** How long close() and unsubscribe() wait for running handlers, in ms. Default 10 000. */
  closeTimeout?: number;
  /** How often idle() is polled in ms, which is how a paused consumer notices it may resume. Default 250. */
  idleInterval?: number;
  /**
   * Poison guard: how many times a task may be redelivered because its consumer died (or lost the
   * claim) on top of its maxRetries + 1 attempts, before it is dead-lettered unrun. Default 5.
   */
  maxLostDeliveries?: number;
}

export interface EventQueueTaskContext {
  /** Aborted when the attempt times out (reason: TASK_TIMEOUT), the queue closes, or the claim is lost. */
  readonly signal: AbortSignal;
  readonly id: string;
  /** 1 for the first attempt. */
  readonly attempt: number;
  /** attempt - 1, the name NocoBase handlers read. */
  readonly retried: number;
}

export interface EventQueueSubscribeOptions<T = any> {
  process(payload: T, context: EventQueueTaskContext): unknown;
  /** Tasks this instance runs at once on this channel. Default 1. */
  concurrency?: number;
  /** While it returns false this instance takes no new tasks from the channel. Default: always true. */
  idle?: () => boolean;
}

export interface EventQueuePublishOptions {
  /** Per-attempt timeout in ms. Default: the queue's defaultTimeout. */
  timeout?: number;
  /** Failed attempts retried before the task is dead-lettered. Default 0. */
  maxRetries?: number;
  /** ms before the task becomes visible to consumers. Default 0. */
  delay?: number;
  /** Idempotency key: while a task with this id exists (see capabilities.dedupe) publishing it again is a no-op. */
  id?: string;
}

export interface EventQueueDeadLetter {
  readonly id: string;
  /** The decoded payload; undefined when it could not be decoded (see decodeError). */
  readonly payload: unknown;
  readonly attempts: number;
  readonly error: string;
  readonly publishedAt: number;
  readonly failedAt: number;
  readonly decodeError?: string;
}

export interface EventQueueDeadLetters {
  list(channel: string, options?: { limit?: number }): Promise<EventQueueDeadLetter[]>;
  /** Re-enqueues dead letters (all, or those ids) as fresh tasks; resolves how many. */
  replay(channel: string, ids?: readonly string[]): Promise<number>;
  purge(channel: string, ids?: readonly string[]): Promise<number>;
}

const MAX_TIMER_MS = 2_147_483_647;
const DEFAULT_TOUCH_INTERVAL = 10_000;
const MIN_TOUCH_INTERVAL = 10;

function assertTimerMs(value: unknown, what: string, allowZero = false): asserts value is number {
  assertPositiveMs(value, what, allowZero);
  if (value > MAX_TIMER_MS) throw invalidArgument(`${what} must be at most ${MAX_TIMER_MS} ms`);
}

function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

function assertIds(ids: unknown): void {
  if (ids === undefined) return;
  if (!Array.isArray(ids)) throw invalidArgument('ids must be an array of strings');
  for (const id of ids) assertName(id, 'id');
}

/**
 * Waits for `promise` (ignoring its outcome) or `ms`, whichever comes first. The timer is left
 * referenced on purpose: someone is awaiting close(), so the process must live until the deadline.
 */
async function settleWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      promise.then(
        () => {},
        () => {},
      ),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

interface Run {
  readonly delivery: QueueDelivery;
  /** Created when the handler first reads its signal, or when the run is aborted (a signal costs µs). */
  controller: AbortController | undefined;
  /** Set once the outcome is decided (success, failure, timeout, or abandoned at shutdown). */
  decided: boolean;
  /** Date.now() ms at which the attempt times out. */
  deadline: number;
  timeout: number;
  /** Date.now() ms of the next claim touch; Infinity once the claim is known lost. */
  touchAt: number;
}

function signalOf(run: Run): AbortSignal {
  run.controller ??= new AbortController();
  return run.controller.signal;
}

function abortRun(run: Run, reason: unknown): void {
  run.controller ??= new AbortController();
  run.controller.abort(reason);
}

interface Drain {
  readonly promise: Promise<void>;
  resolve(): void;
}

type ConsumerState = 'registered' | 'starting' | 'active' | 'stopped';

/** One subscription of one EventQueue: gates the adapter consumer with idle() and runs deliveries. */
class ChannelConsumer {
  readonly channel: string;
  readonly fullName: string;
  readonly #internals: QueueInternals;
  readonly #process: EventQueueSubscribeOptions['process'];
  readonly #concurrency: number;
  readonly #idle: () => boolean;
  readonly #runs = new Set<Run>();
  #state: ConsumerState = 'registered';
  #consumer: QueueConsumer | undefined;
  /** The consume() attempt in progress, if any. */
  #activation: Promise<void> | undefined;
  #paused = false;
  #stopping = false;
  #pollTimer: NodeJS.Timeout | undefined;
  #idleFailing = false;
  #consumeFailing = false;
  #drain: Drain | undefined;
  /**
   * One timer per consumer for every running task's timeout and claim touch (instead of a timeout
   * and an interval per task), armed for the earliest one that is due.
   */
  #clock: NodeJS.Timeout | undefined;
  #clockAt = Number.POSITIVE_INFINITY;

  constructor(
    internals: QueueInternals,
    channel: string,
    fullName: string,
    options: Required<EventQueueSubscribeOptions>,
  ) {
    this.#internals = internals;
    this.channel = channel;
    this.fullName = fullName;
    this.#process = options.process;
    this.#concurrency = options.concurrency;
    this.#idle = options.idle;
  }

  get #logger(): Logger {
    return this.#internals.logger;
  }

  /** Starts polling idle() and consumes as soon as it returns true. */
  activate(): Promise<void> {
    if (this.#state !== 'registered') return this.#activation ?? Promise.resolve();
    this.#state = 'starting';
    this.#pollTimer = setInterval(() => this.#evaluate(), this.#internals.idleInterval);
    this.#pollTimer.unref();
    return this.#tryConsume();
  }

  #isIdle(): boolean {
    try {
      const idle = Boolean(this.#idle());
      this.#idleFailing = false;
      return idle;
    } catch (error) {
      // Logged once per failing streak: idle() is polled several times a second.
      if (!this.#idleFailing) {
        this.#logger.error({ channel: this.channel, ...errorFields(error) }, 'idle() threw; treated as busy');
      }
      this.#idleFailing = true;
      return false;
    }
  }

  /** Pauses or resumes the adapter consumer to match idle(); before the first consume, decides when to start it. */
  #evaluate(): void {
    if (this.#stopping) return;
    if (this.#state === 'starting') {
      void this.#tryConsume();
      return;
    }
    if (this.#state !== 'active' || this.#consumer === undefined) return;
    const idle = this.#isIdle();
    try {
      if (!idle && !this.#paused) {
        this.#paused = true;
        this.#consumer.pause();
      } else if (idle && this.#paused) {
        this.#paused = false;
        this.#consumer.resume();
      }
    } catch (error) {
      this.#logger.error(
        { channel: this.channel, ...errorFields(error) },
        'pausing or resuming the consumer failed',
      );
    }
  }

  /** Opens the adapter consumer once idle() allows it, so a busy instance never receives a first task. */
  #tryConsume(): Promise<void> {
    if (this.#activation !== undefined) return this.#activation;
    if (this.#stopping || this.#state !== 'starting' || !this.#isIdle()) return Promise.resolve();
    const attempt = this.#consume();
    this.#activation = attempt;
    void attempt.finally(() => {
      if (this.#activation === attempt) this.#activation = undefined;
    });
    return attempt;
  }

  async #consume(): Promise<void> {
    try {
      const consumer = await this.#internals.adapter.consume(this.fullName, {
        concurrency: this.#concurrency,
        deliver: (delivery) => this.#onDelivery(delivery),
      });
      if (this.#stopping) {
        await consumer.close();
        return;
      }
      this.#consumer = consumer;
      this.#state = 'active';
      this.#consumeFailing = false;
      this.#evaluate();
    } catch (error) {
      // Retried at the next idle poll; logged once per failing streak.
      const fields = { channel: this.channel, ...errorFields(error) };
      if (!this.#consumeFailing) this.#logger.error(fields, 'could not start consuming; retrying');
      else this.#logger.debug(fields, 'could not start consuming; retrying');
      this.#consumeFailing = true;
    }
  }

  #onDelivery(delivery: QueueDelivery): void {
    try {
      if (this.#stopping) {
        // Arrived while shutting down: hand it straight back rather than holding its claim.
        this.#settle(undefined, delivery, () => delivery.retry(0, 'consumer stopped'), 'release');
        return;
      }
      this.#run(delivery);
      // An idle() that tracks the app's own load may say "busy" as soon as this task started.
      this.#evaluate();
    } catch (error) {
      this.#logger.error(
        { channel: this.channel, id: delivery.id, ...errorFields(error) },
        'delivery failed',
      );
    }
  }

  #run(delivery: QueueDelivery): void {
    const run: Run = {
      delivery,
      controller: undefined,
      decided: false,
      deadline: Number.POSITIVE_INFINITY,
      timeout: 0,
      touchAt: Number.POSITIVE_INFINITY,
    };
    this.#runs.add(run);
    const fields = { channel: this.channel, id: delivery.id, attempt: delivery.attempt };
    // Poison guard: a task redelivered past its attempts (its consumers died or lost the claim each
    // time) never ran to a verdict; running it again could kill another consumer. Dead-letter it.
    if (delivery.attempt > delivery.maxRetries + 1 + this.#internals.maxLostDeliveries) {
      run.decided = true;
      this.#logger.error(
        fields,
        'task exhausted its attempts without a verdict (consumers died); dead-lettered',
      );
      this.#settle(
        run,
        delivery,
        () =>
          delivery.deadLetter(
            `delivered ${delivery.attempt} times without completing; consumers died or lost the claim`,
          ),
        'deadLetter',
      );
      return;
    }
    let payload: unknown;
    try {
      payload = this.#internals.serializer.decode(delivery.payload);
    } catch (error) {
      run.decided = true;
      this.#logger.error(
        { ...fields, ...errorFields(error) },
        'task payload could not be decoded; dead-lettered',
      );
      this.#settle(
        run,
        delivery,
        () => delivery.deadLetter(`payload could not be decoded: ${messageOf(error)}`),
        'deadLetter',
      );
      return;
    }
    const timeout =
      typeof delivery.timeout === 'number' && delivery.timeout > 0 && delivery.timeout <= MAX_TIMER_MS
        ? delivery.timeout
        : this.#internals.defaultTimeout;
    const now = Date.now();
    run.timeout = timeout;
    run.deadline = now + timeout;
    run.touchAt = now + this.#internals.touchInterval;
    this.#arm(Math.min(run.deadline, run.touchAt), now);
    const context: EventQueueTaskContext = {
      get signal() {
        return signalOf(run);
      },
      id: delivery.id,
      attempt: delivery.attempt,
      retried: delivery.attempt - 1,
    };
    let result: Promise<unknown>;
    try {
      result = Promise.resolve(this.#process(payload, context));
    } catch (error) {
      result = Promise.reject(error);
    }
    result.then(
      () => this.#succeed(run),
      (error: unknown) => this.#fail(run, error),
    );
  }

  #decide(run: Run): boolean {
    if (run.decided) return false;
    run.decided = true;
    return true;
  }

  /** Arms the clock for `at` unless it already fires earlier. */
  #arm(at: number, now = Date.now()): void {
    if (at >= this.#clockAt) return;
    clearTimeout(this.#clock);
    this.#clockAt = at;
    this.#clock = setTimeout(() => this.#tick(), Math.min(Math.max(0, at - now), MAX_TIMER_MS));
    this.#clock.unref();
  }

  /** Times out the runs past their deadline, touches the claims that are due, and re-arms. */
  #tick(): void {
    this.#clock = undefined;
    this.#clockAt = Number.POSITIVE_INFINITY;
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const run of [...this.#runs]) {
      if (run.decided) continue;
      if (run.deadline <= now) {
        const { delivery } = run;
        const error = new ClusterError('TASK_TIMEOUT', `task timed out after ${run.timeout} ms`, {
          details: { channel: this.channel, id: delivery.id, attempt: delivery.attempt },
        });
        abortRun(run, error);
        this.#fail(run, error);
        continue;
      }
      if (run.touchAt <= now) {
        run.touchAt = now + this.#internals.touchInterval;
        this.#touch(run);
      }
      next = Math.min(next, run.deadline, run.touchAt);
    }
    if (next !== Number.POSITIVE_INFINITY) this.#arm(next, now);
  }

  #succeed(run: Run): void {
    if (!this.#decide(run)) return;
    this.#settle(run, run.delivery, () => run.delivery.ack(), 'ack');
  }

  #fail(run: Run, error: unknown): void {
    if (!this.#decide(run)) return;
    const { delivery } = run;
    const fields = {
      channel: this.channel,
      id: delivery.id,
      attempt: delivery.attempt,
      ...errorFields(error),
    };
    const message = messageOf(error);
    if (delivery.attempt <= delivery.maxRetries) {
      const delay = jitteredDelay(delivery.attempt, this.#internals.backoff);
      this.#logger.error({ ...fields, retryInMs: delay }, 'task failed; retrying');
      this.#settle(run, delivery, () => delivery.retry(delay, message), 'retry');
    } else {
      this.#logger.error(fields, 'task failed; dead-lettered');
      this.#settle(run, delivery, () => delivery.deadLetter(message), 'deadLetter');
    }
  }

  #touch(run: Run): void {
    if (run.decided) return;
    let touched: Promise<boolean>;
    try {
      touched = run.delivery.touch();
    } catch (error) {
      touched = Promise.reject(error);
    }
    touched.then(
      (held) => {
        if (held || run.decided) return;
        run.touchAt = Number.POSITIVE_INFINITY;
        this.#logger.warn(
          { channel: this.channel, id: run.delivery.id, attempt: run.delivery.attempt },
          'task claim lost while running (it is redelivered elsewhere); aborting its signal',
        );
        abortRun(run, new ClusterError('ABORTED', 'the task was reclaimed by the queue'));
      },
      (error: unknown) => {
        this.#logger.warn(
          { channel: this.channel, id: run.delivery.id, ...errorFields(error) },
          'could not extend the task claim',
        );
      },
    );
  }

  /** Settles with the adapter; the run leaves the in-flight set only once that settlement is done. */
  #settle(run: Run | undefined, delivery: QueueDelivery, action: () => Promise<boolean>, what: string): void {
    // Pausing before the slot frees keeps a busy instance from being handed the next task.
    this.#evaluate();
    const fields = { channel: this.channel, id: delivery.id, attempt: delivery.attempt };
    let settlement: Promise<boolean>;
    try {
      settlement = action();
    } catch (error) {
      settlement = Promise.reject(error);
    }
    settlement
      .then(
        (held) => {
          if (!held)
            this.#logger.warn(fields, `${what} ignored: the task's claim was lost (it was redelivered)`);
        },
        (error: unknown) => {
          this.#logger.error(
            { ...fields, ...errorFields(error) },
            `${what} failed; the task will be redelivered`,
          );
        },
      )
      .finally(() => {
        if (run !== undefined) this.#finish(run);
        this.#evaluate();
      });
  }

  #finish(run: Run): void {
    if (!this.#runs.delete(run)) return;
    if (this.#runs.size === 0) this.#drain?.resolve();
  }

  #pauseQuietly(): void {
    try {
      this.#consumer?.pause();
    } catch (error) {
      this.#logger.warn({ channel: this.channel, ...errorFields(error) }, 'pausing the consumer failed');
    }
  }

  /**
   * Stops taking tasks, waits up to `timeout` ms for running ones, then aborts the rest and leaves
   * them unsettled so the adapter redelivers them; finally closes the adapter consumer.
   */
  async stop(timeout: number): Promise<void> {
    if (this.#state === 'stopped') return;
    this.#stopping = true;
    clearInterval(this.#pollTimer);
    this.#pauseQuietly();
    await this.#activation;
    this.#pauseQuietly();
    if (this.#runs.size > 0) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => {
        resolve = r;
      });
      this.#drain = { promise, resolve };
      await settleWithin(promise, timeout);
    }
    for (const run of [...this.#runs]) {
      if (run.decided) continue;
      this.#decide(run);
      this.#runs.delete(run);
      this.#logger.warn(
        { channel: this.channel, id: run.delivery.id, attempt: run.delivery.attempt },
        'task still running at shutdown; aborted and left for redelivery',
      );
      abortRun(run, closedError('event queue'));
    }
    clearTimeout(this.#clock);
    this.#clock = undefined;
    this.#clockAt = Number.POSITIVE_INFINITY;
    this.#state = 'stopped';
    const consumer = this.#consumer;
    this.#consumer = undefined;
    if (consumer !== undefined) {
      try {
        await consumer.close();
      } catch (error) {
        this.#logger.warn({ channel: this.channel, ...errorFields(error) }, 'closing the consumer failed');
      }
    }
  }
}

interface QueueInternals {
  readonly adapter: QueueAdapter;
  readonly serializer: Serializer;
  readonly logger: Logger;
  readonly defaultTimeout: number;
  readonly backoff: ResolvedBackoff;
  readonly idleInterval: number;
  readonly touchInterval: number;
  readonly maxLostDeliveries: number;
}

type QueueState = 'idle' | 'starting' | 'started' | 'closed';

/**
 * Durable-by-adapter task queue with competing consumers: each task runs on one instance, with
 * per-channel concurrency, an idle() gate, enforced per-attempt timeouts, exponential backoff with
 * jitter, a dead-letter store, and graceful close.
 */
export class EventQueue implements AsyncDisposable {
  readonly appName: string;
  readonly deadLetters: EventQueueDeadLetters;
  readonly #internals: QueueInternals;
  readonly #closeTimeout: number;
  readonly #consumers = new Map<string, ChannelConsumer>();
  /** Consumers being stopped by unsubscribe(), awaited by close(). */
  readonly #stopping = new Set<Promise<void>>();
  #state: QueueState = 'idle';
  #startPromise: Promise<void> | undefined;
  #closePromise: Promise<void> | undefined;

  constructor(options: EventQueueOptions) {
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    assertName(options.appName, 'appName');
    const adapter = options.adapter;
    if (
      typeof adapter !== 'object' ||
      adapter === null ||
      typeof adapter.connect !== 'function' ||
      typeof adapter.publish !== 'function' ||
      typeof adapter.consume !== 'function' ||
      typeof adapter.close !== 'function'
    ) {
      throw invalidArgument('adapter must be a QueueAdapter');
    }
    const serializer = options.serializer ?? defaultSerializer;
    if (typeof serializer?.encode !== 'function' || typeof serializer?.decode !== 'function') {
      throw invalidArgument('serializer must have encode() and decode()');
    }
    const defaultTimeout = options.defaultTimeout ?? 15_000;
    assertTimerMs(defaultTimeout, 'defaultTimeout');
    const closeTimeout = options.closeTimeout ?? 10_000;
    assertTimerMs(closeTimeout, 'closeTimeout', true);
    const idleInterval = options.idleInterval ?? 250;
    assertTimerMs(idleInterval, 'idleInterval');
    const backoff = resolveBackoff(options.backoff);
    const maxLostDeliveries = options.maxLostDeliveries ?? 5;
    if (!Number.isInteger(maxLostDeliveries) || maxLostDeliveries < 0) {
      throw invalidArgument('maxLostDeliveries must be an integer >= 0');
    }
    const visibility = adapter.capabilities?.visibilityTimeoutMs;
    const touchInterval =
      typeof visibility === 'number' && visibility > 0
        ? Math.max(MIN_TOUCH_INTERVAL, Math.min(DEFAULT_TOUCH_INTERVAL, Math.floor(visibility / 3)))
        : DEFAULT_TOUCH_INTERVAL;
    this.appName = options.appName;
    this.#closeTimeout = closeTimeout;
    this.#internals = {
      adapter,
      serializer,
      logger: (options.logger ?? noopLogger).child({ component: 'event-queue', app: options.appName }),
      defaultTimeout,
      backoff,
      idleInterval,
      touchInterval,
      maxLostDeliveries,
    };
    this.deadLetters = {
      list: (channel, listOptions) => this.#listDeadLetters(channel, listOptions),
      replay: (channel, ids) =>
        this.#call(channel, () => this.#adapter.replayDeadLetters(this.getFullChannel(channel), ids), ids),
      purge: (channel, ids) =>
        this.#call(channel, () => this.#adapter.purgeDeadLetters(this.getFullChannel(channel), ids), ids),
    };
  }

  get #adapter(): QueueAdapter {
    return this.#internals.adapter;
  }

  get capabilities(): QueueCapabilities {
    return this.#adapter.capabilities;
  }

  /** The adapter-level name of `channel`: the app name and the channel, each escaped. */
  getFullChannel(channel: string): string {
    assertName(channel, 'channel');
    return namespaced(this.appName, channel);
  }

  isConnected(): boolean {
    return this.#state === 'started';
  }

  /** Connects the adapter and starts the consumers subscribed so far. Idempotent; retried after a failure. */
  start(): Promise<void> {
    if (this.#state === 'closed') return Promise.reject(closedError('event queue'));
    if (this.#startPromise !== undefined) return this.#startPromise;
    this.#state = 'starting';
    const promise = (async () => {
      await this.#adapter.connect();
      if (this.#state === 'closed') return;
      this.#state = 'started';
      await Promise.all([...this.#consumers.values()].map((consumer) => consumer.activate()));
    })();
    this.#startPromise = promise;
    promise.catch(() => {
      if (this.#startPromise === promise && this.#state === 'starting') {
        this.#startPromise = undefined;
        this.#state = 'idle';
      }
    });
    return promise;
  }

  /**
   * Registers the consumer of `channel` on this instance; it starts consuming once the queue has
   * started. Throws ALREADY_SUBSCRIBED when this instance already consumes the channel.
   */
  subscribe<T = any>(channel: string, options: EventQueueSubscribeOptions<T>): void {
    if (this.#state === 'closed') throw closedError('event queue');
    assertName(channel, 'channel');
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    if (typeof options.process !== 'function') throw invalidArgument('process must be a function');
    const concurrency = options.concurrency ?? 1;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw invalidArgument('concurrency must be an integer >= 1', { channel });
    }
    if (options.idle !== undefined && typeof options.idle !== 'function') {
      throw invalidArgument('idle must be a function', { channel });
    }
    if (this.#consumers.has(channel)) {
      throw new ClusterError(
        'ALREADY_SUBSCRIBED',
        `channel ${JSON.stringify(channel)} already has a consumer`,
        {
          details: { channel },
        },
      );
    }
    const consumer = new ChannelConsumer(this.#internals, channel, this.getFullChannel(channel), {
      process: options.process as EventQueueSubscribeOptions['process'],
      concurrency,
      idle: options.idle ?? (() => true),
    });
    this.#consumers.set(channel, consumer);
    if (this.#state === 'started') void consumer.activate();
  }

  /** Stops consuming `channel`, waiting up to closeTimeout for its running tasks. No-op when not subscribed. */
  async unsubscribe(channel: string): Promise<void> {
    if (this.#state === 'closed') throw closedError('event queue');
    assertName(channel, 'channel');
    const consumer = this.#consumers.get(channel);
    if (consumer === undefined) return;
    this.#consumers.delete(channel);
    const stopping = consumer.stop(this.#closeTimeout);
    this.#stopping.add(stopping);
    try {
      await stopping;
    } finally {
      this.#stopping.delete(stopping);
    }
  }

  /**
   * Enqueues a task for whichever instance consumes `channel` (none needs to exist yet). Resolves
   * `{ id, duplicate }`; `duplicate` is true when `options.id` matched an existing task and nothing was enqueued.
   */
  async publish(
    channel: string,
    payload: unknown,
    options: EventQueuePublishOptions = {},
  ): Promise<QueuePublishResult> {
    this.#assertStarted();
    assertName(channel, 'channel');
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    const timeout = options.timeout ?? this.#internals.defaultTimeout;
    assertTimerMs(timeout, 'timeout');
    const maxRetries = options.maxRetries ?? 0;
    if (!Number.isInteger(maxRetries) || maxRetries < 0) {
      throw invalidArgument('maxRetries must be an integer >= 0', { channel });
    }
    const delay = options.delay ?? 0;
    assertPositiveMs(delay, 'delay', true);
    if (options.id !== undefined) assertName(options.id, 'id');
    const encoded = this.#internals.serializer.encode(payload);
    const limit = this.capabilities.maxPayloadBytes;
    if (encoded.length * 3 > limit && Buffer.byteLength(encoded) > limit) {
      throw new ClusterError(
        'PAYLOAD_TOO_LARGE',
        `payload is ${Buffer.byteLength(encoded)} bytes, the adapter's limit is ${limit}`,
        { details: { channel } },
      );
    }
    return this.#adapter.publish(this.getFullChannel(channel), {
      id: options.id ?? randomId(),
      payload: encoded,
      maxRetries,
      timeout,
      delay,
      dedupe: options.id !== undefined,
    });
  }

  stats(channel: string): Promise<QueueStats> {
    return this.#call(channel, () => this.#adapter.stats(this.getFullChannel(channel)));
  }

  async #listDeadLetters(channel: string, options?: { limit?: number }): Promise<EventQueueDeadLetter[]> {
    this.#assertStarted();
    assertName(channel, 'channel');
    const limit = options?.limit;
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
      throw invalidArgument('limit must be an integer >= 1');
    }
    const records = await this.#adapter.listDeadLetters(
      this.getFullChannel(channel),
      limit === undefined ? {} : { limit },
    );
    return records.map((record) => {
      const base = {
        id: record.id,
        attempts: record.attempts,
        error: record.error,
        publishedAt: record.publishedAt,
        failedAt: record.failedAt,
      };
      try {
        return { ...base, payload: this.#internals.serializer.decode(record.payload) };
      } catch (error) {
        return { ...base, payload: undefined, decodeError: messageOf(error) };
      }
    });
  }

  async #call<T>(channel: string, action: () => Promise<T>, ids?: unknown): Promise<T> {
    this.#assertStarted();
    assertName(channel, 'channel');
    assertIds(ids);
    return action();
  }

  #assertStarted(): void {
    if (this.#state === 'closed') throw closedError('event queue');
    if (this.#state !== 'started') {
      throw new ClusterError('NOT_STARTED', 'event queue has not started; await start() first');
    }
  }

  /**
   * Stops pulling, waits up to `timeout` (default closeTimeout) for running tasks, aborts the signals
   * of those still running and leaves them for redelivery, then closes the adapter. Idempotent.
   */
  close(options: { timeout?: number } = {}): Promise<void> {
    if (this.#closePromise !== undefined) return this.#closePromise;
    const timeout = options?.timeout ?? this.#closeTimeout;
    try {
      assertTimerMs(timeout, 'timeout', true);
    } catch (error) {
      return Promise.reject(error);
    }
    const starting = this.#startPromise;
    this.#state = 'closed';
    this.#closePromise = (async () => {
      // A connect() that hangs must not hold close() past its deadline.
      if (starting !== undefined) await settleWithin(starting, timeout);
      const consumers = [...this.#consumers.values()];
      this.#consumers.clear();
      await Promise.all([...consumers.map((consumer) => consumer.stop(timeout)), ...this.#stopping]);
      try {
        await this.#adapter.close();
      } catch (error) {
        this.#internals.logger.warn(errorFields(error), 'closing the queue adapter failed');
      }
    })();
    return this.#closePromise;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
