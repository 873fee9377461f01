import { ClusterError, closedError, invalidArgument } from '../errors.js';
import { MemoryHub } from '../hub.js';
import { assertName, assertPositiveMs } from '../internal/names.js';
import { DEFAULT_MAX_PAYLOAD_BYTES } from '../serializer.js';
import type {
  DeadLetterRecord,
  QueueAdapter,
  QueueCapabilities,
  QueueConsumer,
  QueueConsumerOptions,
  QueueDelivery,
  QueuePublishRequest,
  QueuePublishResult,
  QueueStats,
} from './types.js';
import { assertDeadLetterIds, assertQueuePublishRequest } from './validate.js';

export interface MemoryQueueOptions {
  /** Adapters created on one hub share their channels, as nodes sharing one broker. Default: a private hub. */
  hub?: MemoryHub;
  /** ms a delivery stays claimed without `touch()` before the task goes back to the queue. Default 30 000. */
  visibilityTimeout?: number;
  /**
   * When set, a caller-given id dedupes for this many ms after its first publish (`dedupe: 'window'`)
   * instead of for as long as its task lives (`dedupe: 'pending'`, the default).
   */
  dedupeWindow?: number;
}

/** setTimeout stores its delay in 32 bits; longer delays are reached in several hops. */
const MAX_TIMER_MS = 2_147_483_647;
const DEFAULT_VISIBILITY_TIMEOUT = 30_000;

interface MemoryTask {
  readonly id: string;
  readonly payload: string;
  readonly maxRetries: number;
  readonly timeout: number;
  readonly publishedAt: number;
  attempt: number;
}

interface Claim {
  readonly task: MemoryTask;
  readonly consumer: ConsumerState;
  readonly timer: NodeJS.Timeout;
  active: boolean;
  /**
   * The consumer's concurrency slot stays taken until the consumer settles this delivery, even after
   * the claim expired: its handler may still be running, and a consumer that is stuck gets nothing more.
   */
  holdsSlot: boolean;
}

interface ConsumerState {
  readonly owner: MemoryQueueAdapter;
  readonly channel: ChannelState;
  readonly concurrency: number;
  readonly deliver: (delivery: QueueDelivery) => void;
  readonly visibilityTimeout: number;
  /** Active claims of this consumer, released when its adapter closes. */
  readonly claims: Set<Claim>;
  paused: boolean;
  registered: boolean;
  outstanding: number;
}

interface StoredDeadLetter {
  readonly record: DeadLetterRecord;
  readonly task: MemoryTask;
}

/** FIFO with O(1) shift; the backing array is compacted once its consumed head dominates. */
class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  get size(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  shift(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head += 1;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
}

class ChannelState {
  readonly ready = new Fifo<MemoryTask>();
  /** Delayed tasks and tasks waiting for a retry, with the timer that makes them ready. */
  readonly waiting = new Map<MemoryTask, NodeJS.Timeout>();
  readonly claims = new Set<Claim>();
  consumers: ConsumerState[] = [];
  /** Round-robin position, so consumers with free capacity take turns. */
  cursor = 0;
  /** Ids of tasks that are pending, delayed, running or waiting for a retry (a count: undeduped ids may repeat). */
  readonly liveIds = new Map<string, number>();
  /** `window` dedupe: id -> when its window ends. */
  readonly recentIds = new Map<string, number>();
  readonly deadLetters = new Map<string, StoredDeadLetter>();
  pumpScheduled = false;
}

interface QueueHubState {
  readonly channels: Map<string, ChannelState>;
}

function hubState(hub: MemoryHub): QueueHubState {
  return hub.part<QueueHubState>('queue', () => ({ channels: new Map() }));
}

function addLive(channel: ChannelState, id: string): void {
  channel.liveIds.set(id, (channel.liveIds.get(id) ?? 0) + 1);
}

function dropLive(channel: ChannelState, id: string): void {
  const count = channel.liveIds.get(id) ?? 0;
  if (count <= 1) channel.liveIds.delete(id);
  else channel.liveIds.set(id, count - 1);
}

function schedulePump(channel: ChannelState): void {
  if (channel.pumpScheduled) return;
  channel.pumpScheduled = true;
  // Dispatch runs outside the caller's stack, so a publish or settlement never re-enters a handler.
  queueMicrotask(() => {
    channel.pumpScheduled = false;
    pump(channel);
  });
}

function nextConsumer(channel: ChannelState): ConsumerState | undefined {
  const consumers = channel.consumers;
  const count = consumers.length;
  for (let i = 0; i < count; i++) {
    const index = (channel.cursor + i) % count;
    const consumer = consumers[index]!;
    if (!consumer.paused && consumer.outstanding < consumer.concurrency) {
      channel.cursor = (index + 1) % count;
      return consumer;
    }
  }
  return undefined;
}

function pump(channel: ChannelState): void {
  while (channel.ready.size > 0) {
    const consumer = nextConsumer(channel);
    if (consumer === undefined) return;
    startDelivery(channel, consumer, channel.ready.shift()!);
  }
}

function makeReady(channel: ChannelState, task: MemoryTask, delayMs: number): void {
  if (delayMs <= 0) {
    channel.ready.push(task);
    schedulePump(channel);
    return;
  }
  const visibleAt = Date.now() + delayMs;
  const arm = (): void => {
    const remaining = visibleAt - Date.now();
    const clamped = remaining > MAX_TIMER_MS;
    const timer = setTimeout(
      () => {
        if (clamped) return arm();
        channel.waiting.delete(task);
        channel.ready.push(task);
        schedulePump(channel);
      },
      Math.max(0, Math.min(remaining, MAX_TIMER_MS)),
    );
    timer.unref();
    channel.waiting.set(task, timer);
  };
  arm();
}

/** Ends a claim; false when it had already ended (settled, expired or released). */
function endClaim(channel: ChannelState, claim: Claim): boolean {
  if (!claim.active) return false;
  claim.active = false;
  clearTimeout(claim.timer);
  channel.claims.delete(claim);
  claim.consumer.claims.delete(claim);
  claim.consumer.owner.forgetIfDone(claim.consumer);
  return true;
}

function releaseSlot(channel: ChannelState, claim: Claim): void {
  if (!claim.holdsSlot) return;
  claim.holdsSlot = false;
  claim.consumer.outstanding -= 1;
  schedulePump(channel);
}

/** The claim was lost (expiry, or its adapter closed): the task goes back for any consumer, attempt + 1. */
function requeue(channel: ChannelState, claim: Claim): void {
  if (!endClaim(channel, claim)) return;
  claim.task.attempt += 1;
  makeReady(channel, claim.task, 0);
}

function startDelivery(channel: ChannelState, consumer: ConsumerState, task: MemoryTask): void {
  const timer = setTimeout(() => requeue(channel, claim), consumer.visibilityTimeout);
  timer.unref();
  const claim: Claim = { task, consumer, timer, active: true, holdsSlot: true };
  consumer.outstanding += 1;
  consumer.claims.add(claim);
  channel.claims.add(claim);
  const delivery: QueueDelivery = {
    id: task.id,
    payload: task.payload,
    attempt: task.attempt,
    maxRetries: task.maxRetries,
    timeout: task.timeout,
    publishedAt: task.publishedAt,
    async ack() {
      releaseSlot(channel, claim);
      if (!endClaim(channel, claim)) return false;
      dropLive(channel, task.id);
      return true;
    },
    async retry(delayMs: number, _error: string) {
      if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
        throw invalidArgument('retry delay must be a non-negative number of milliseconds');
      }
      releaseSlot(channel, claim);
      if (!endClaim(channel, claim)) return false;
      task.attempt += 1;
      makeReady(channel, task, delayMs);
      return true;
    },
    async deadLetter(error: string) {
      releaseSlot(channel, claim);
      if (!endClaim(channel, claim)) return false;
      dropLive(channel, task.id);
      // Re-inserting moves the id to the end, so listing stays oldest-failure first.
      channel.deadLetters.delete(task.id);
      channel.deadLetters.set(task.id, {
        task,
        record: {
          id: task.id,
          payload: task.payload,
          attempts: task.attempt,
          error: String(error),
          publishedAt: task.publishedAt,
          failedAt: Date.now(),
        },
      });
      return true;
    },
    async touch() {
      if (!claim.active) return false;
      claim.timer.refresh();
      return true;
    },
  };
  try {
    consumer.deliver(delivery);
  } catch {
    // The contract forbids deliver() to throw; if it does anyway, the claim expiry recovers the task.
  }
}

class MemoryQueueAdapter implements QueueAdapter {
  readonly capabilities: QueueCapabilities;
  readonly #state: QueueHubState;
  readonly #visibilityTimeout: number;
  readonly #dedupeWindow: number | undefined;
  /** Consumers created here that are registered or still hold claims. */
  readonly #consumers = new Set<ConsumerState>();
  #connected = false;
  #closed = false;

  constructor(options: MemoryQueueOptions) {
    const hub = options.hub ?? new MemoryHub();
    if (!(hub instanceof MemoryHub)) throw invalidArgument('hub must be a MemoryHub');
    const visibilityTimeout = options.visibilityTimeout ?? DEFAULT_VISIBILITY_TIMEOUT;
    assertPositiveMs(visibilityTimeout, 'visibilityTimeout');
    if (visibilityTimeout > MAX_TIMER_MS)
      throw invalidArgument(`visibilityTimeout must be <= ${MAX_TIMER_MS}`);
    if (options.dedupeWindow !== undefined) assertPositiveMs(options.dedupeWindow, 'dedupeWindow');
    this.#state = hubState(hub);
    this.#visibilityTimeout = visibilityTimeout;
    this.#dedupeWindow = options.dedupeWindow;
    this.capabilities = Object.freeze({
      durable: false,
      crossProcess: false,
      delivery: 'at-least-once',
      delayed: true,
      deadLetter: true,
      dedupe: options.dedupeWindow === undefined ? 'pending' : 'window',
      ...(options.dedupeWindow === undefined ? {} : { dedupeWindowMs: options.dedupeWindow }),
      redelivery: true,
      visibilityTimeoutMs: visibilityTimeout,
      maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES,
    });
  }

  #assertOpen(): void {
    if (this.#closed) throw closedError('memory queue adapter');
    if (!this.#connected) {
      throw new ClusterError('NOT_STARTED', 'memory queue adapter is not connected; call connect() first');
    }
  }

  #channel(name: string): ChannelState {
    let channel = this.#state.channels.get(name);
    if (channel === undefined) {
      channel = new ChannelState();
      this.#state.channels.set(name, channel);
    }
    return channel;
  }

  /** Drops a closed consumer from the bookkeeping once nothing of it is left to release. */
  forgetIfDone(consumer: ConsumerState): void {
    if (!consumer.registered && consumer.claims.size === 0) this.#consumers.delete(consumer);
  }

  async connect(): Promise<void> {
    if (this.#closed) throw closedError('memory queue adapter');
    this.#connected = true;
  }

  async publish(channelName: string, task: QueuePublishRequest): Promise<QueuePublishResult> {
    this.#assertOpen();
    assertName(channelName, 'channel');
    assertQueuePublishRequest(task, this.capabilities.maxPayloadBytes);
    const channel = this.#channel(channelName);
    const now = Date.now();
    if (task.dedupe) {
      if (this.#dedupeWindow !== undefined) {
        for (const [id, endsAt] of channel.recentIds) {
          if (endsAt > now) break;
          channel.recentIds.delete(id);
        }
        const endsAt = channel.recentIds.get(task.id);
        if (endsAt !== undefined && endsAt > now) return { id: task.id, duplicate: true };
        channel.recentIds.delete(task.id);
        channel.recentIds.set(task.id, now + this.#dedupeWindow);
      } else if (channel.liveIds.has(task.id)) {
        return { id: task.id, duplicate: true };
      }
    }
    const stored: MemoryTask = {
      id: task.id,
      payload: task.payload,
      maxRetries: task.maxRetries,
      timeout: task.timeout,
      publishedAt: now,
      attempt: 1,
    };
    addLive(channel, stored.id);
    makeReady(channel, stored, task.delay);
    return { id: task.id, duplicate: false };
  }

  async consume(channelName: string, options: QueueConsumerOptions): Promise<QueueConsumer> {
    this.#assertOpen();
    assertName(channelName, 'channel');
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
      throw invalidArgument('concurrency must be an integer >= 1');
    }
    if (typeof options.deliver !== 'function') throw invalidArgument('deliver must be a function');
    const channel = this.#channel(channelName);
    const consumer: ConsumerState = {
      owner: this,
      channel,
      concurrency: options.concurrency,
      deliver: options.deliver,
      visibilityTimeout: this.#visibilityTimeout,
      claims: new Set(),
      paused: false,
      registered: true,
      outstanding: 0,
    };
    channel.consumers = [...channel.consumers, consumer];
    this.#consumers.add(consumer);
    schedulePump(channel);
    return {
      pause() {
        consumer.paused = true;
      },
      resume() {
        if (!consumer.registered || !consumer.paused) return;
        consumer.paused = false;
        schedulePump(channel);
      },
      close: async () => {
        this.#unregister(consumer);
      },
    };
  }

  #unregister(consumer: ConsumerState): void {
    if (!consumer.registered) return;
    consumer.registered = false;
    const channel = consumer.channel;
    channel.consumers = channel.consumers.filter((c) => c !== consumer);
    if (channel.cursor >= channel.consumers.length) channel.cursor = 0;
    this.forgetIfDone(consumer);
  }

  async listDeadLetters(channelName: string, options: { limit?: number } = {}): Promise<DeadLetterRecord[]> {
    this.#assertOpen();
    assertName(channelName, 'channel');
    const limit = options?.limit;
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
      throw invalidArgument('limit must be an integer >= 1');
    }
    const stored = this.#state.channels.get(channelName)?.deadLetters;
    if (stored === undefined) return [];
    const out: DeadLetterRecord[] = [];
    for (const { record } of stored.values()) {
      if (limit !== undefined && out.length >= limit) break;
      out.push({ ...record });
    }
    return out;
  }

  async replayDeadLetters(channelName: string, ids?: readonly string[]): Promise<number> {
    this.#assertOpen();
    assertName(channelName, 'channel');
    assertDeadLetterIds(ids);
    const channel = this.#state.channels.get(channelName);
    if (channel === undefined) return 0;
    let replayed = 0;
    for (const id of ids ?? [...channel.deadLetters.keys()]) {
      const stored = channel.deadLetters.get(id);
      // A dead letter whose id has a live task again stays put: replaying it would run that id twice.
      if (stored === undefined || channel.liveIds.has(id)) continue;
      channel.deadLetters.delete(id);
      const task: MemoryTask = { ...stored.task, publishedAt: Date.now(), attempt: 1 };
      addLive(channel, id);
      makeReady(channel, task, 0);
      replayed += 1;
    }
    return replayed;
  }

  async purgeDeadLetters(channelName: string, ids?: readonly string[]): Promise<number> {
    this.#assertOpen();
    assertName(channelName, 'channel');
    assertDeadLetterIds(ids);
    const deadLetters = this.#state.channels.get(channelName)?.deadLetters;
    if (deadLetters === undefined) return 0;
    if (ids === undefined) {
      const count = deadLetters.size;
      deadLetters.clear();
      return count;
    }
    let purged = 0;
    for (const id of new Set(ids)) if (deadLetters.delete(id)) purged += 1;
    return purged;
  }

  async stats(channelName: string): Promise<QueueStats> {
    this.#assertOpen();
    assertName(channelName, 'channel');
    const channel = this.#state.channels.get(channelName);
    if (channel === undefined) return { pending: 0, delayed: 0, inFlight: 0, deadLetters: 0 };
    return {
      pending: channel.ready.size,
      delayed: channel.waiting.size,
      inFlight: channel.claims.size,
      deadLetters: channel.deadLetters.size,
    };
  }

  /**
   * Stops this adapter's consumers and hands their unsettled deliveries straight back to the queue
   * (attempt + 1) for the other adapters on the hub, as a broker does when a connection drops. Their
   * late settlements resolve false. Tasks themselves live in the hub and outlive the adapter.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#connected = false;
    for (const consumer of [...this.#consumers]) {
      this.#unregister(consumer);
      for (const claim of [...consumer.claims]) requeue(consumer.channel, claim);
    }
    this.#consumers.clear();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * The in-process queue adapter. It keeps the same contract as the durable adapters (competing
 * consumers, claims with a visibility timeout, delayed tasks, dedupe, dead letters); only
 * durability is missing: tasks live as long as the hub.
 */
export function createMemoryQueue(options: MemoryQueueOptions = {}): QueueAdapter {
  if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
  return new MemoryQueueAdapter(options);
}
