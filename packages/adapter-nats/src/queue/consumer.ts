import { errorFields, type QueueConsumer, type QueueDelivery } from '@cluster/core';
import { type Consumer, type ConsumerMessages, JetStreamApiError, type JsMsg } from '@nats-io/jetstream';
import { headers } from '@nats-io/nats-core';
import type { NatsConnections } from '../connection.js';
import { type ChannelNames, DELAYER, decodeTaskMeta, encodeTaskMeta, TASK_HEADER, WORKERS } from './names.js';

export interface DeadLetterBody {
  id: string;
  payload: string;
  attempts: number;
  error: string;
  publishedAt: number;
  maxRetries: number;
  timeout: number;
  streamSequence: number;
}

const decoder = new TextDecoder();

function sleep(ms: number, interrupt: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
    interrupt,
  ]).finally(() => clearTimeout(timer));
}

/**
 * One pull loop on one durable consumer: fetches at most `capacity()` messages at a time (so the
 * server never hands this instance more than it may hold), waits while capacity is 0, and recovers
 * by itself from every failure (missed heartbeats, a restarted server, a deleted consumer) with a
 * bounded backoff, re-creating the channel's streams and consumers when they are gone.
 */
class PullLoop {
  #consumer: Consumer | undefined;
  #iterator: ConsumerMessages | undefined;
  #changed: (() => void) | undefined;
  #stopped = false;
  readonly #stop: Promise<void>;
  #resolveStop!: () => void;
  readonly done: Promise<void>;

  constructor(
    private readonly connections: NatsConnections,
    private readonly stream: string,
    private readonly durable: string,
    private readonly fetchExpires: number,
    private readonly capacity: () => number,
    private readonly receive: (message: JsMsg) => void,
    private readonly ensure: () => Promise<void>,
  ) {
    this.#stop = new Promise((resolve) => {
      this.#resolveStop = resolve;
    });
    this.done = this.#run();
  }

  /** Capacity or pause state changed: a waiting loop looks again. */
  poke(): void {
    this.#changed?.();
  }

  stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.#resolveStop();
      this.#changed?.();
      // Unsubscribes the pull inbox; the server skips pull requests without interest.
      void this.#iterator?.close().catch(() => {});
    }
    return this.done;
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#stopped) {
      const room = this.capacity();
      if (room <= 0) {
        await Promise.race([
          new Promise<void>((resolve) => {
            this.#changed = resolve;
          }),
          this.#stop,
        ]);
        this.#changed = undefined;
        continue;
      }
      try {
        const js = await this.connections.jetstream();
        this.#consumer ??= await js.consumers.get(this.stream, this.durable);
        if (this.#stopped) break;
        const iterator = await this.#consumer.fetch({ max_messages: room, expires: this.fetchExpires });
        this.#iterator = iterator;
        if (this.#stopped) {
          await iterator.close().catch(() => {});
          break;
        }
        for await (const message of iterator) this.receive(message);
        failures = 0;
      } catch (error) {
        if (this.#stopped) break;
        failures += 1;
        this.#consumer = undefined;
        const fields = { stream: this.stream, consumer: this.durable, failures, ...errorFields(error) };
        if (failures === 1) this.connections.logger.warn(fields, 'nats pull failed; retrying');
        else this.connections.logger.debug(fields, 'nats pull failed; retrying');
        if (error instanceof JetStreamApiError || /not found/i.test(String(error)))
          await this.ensure().catch(() => {});
        await sleep(Math.min(50 * 2 ** Math.min(failures, 6), 2_000), this.#stop);
      } finally {
        this.#iterator = undefined;
      }
    }
  }
}

/** One received work message and its claim, as this instance sees it. */
class Claim implements QueueDelivery {
  readonly id: string;
  readonly payload: string;
  readonly attempt: number;
  readonly maxRetries: number;
  readonly timeout: number;
  readonly publishedAt: number;
  /** Local time until which the claim is surely still ours (the server's ack_wait, counted from before). */
  #validUntil: number;
  #settled = false;
  /** Handed out to the manager (not held while paused). */
  handedOut = false;

  constructor(
    readonly message: JsMsg,
    private readonly owner: ChannelConsumer,
    receivedAt: number,
  ) {
    const meta = decodeTaskMeta(message.headers?.get(TASK_HEADER));
    this.id = meta?.id || String(message.seq);
    this.payload = decoder.decode(message.data);
    // Each nak (retry) and each redelivery after a lost claim is one more delivery.
    this.attempt = message.info.deliveryCount;
    this.maxRetries = meta?.maxRetries ?? 0;
    this.timeout = meta?.timeout ?? 15_000;
    this.publishedAt = meta?.publishedAt || Math.floor(Number(message.info.timestampNanos) / 1e6);
    this.#validUntil = receivedAt + owner.claimMs;
  }

  /** Ms left of the claim on the local clock. */
  remaining(): number {
    return this.#validUntil - Date.now();
  }

  get valid(): boolean {
    return !this.#settled && Date.now() < this.#validUntil;
  }

  /**
   * Frees the slot when the claim ran out unsettled (the task now belongs to whoever gets it next).
   * Called by the consumer's sweep: one interval for all claims instead of a timer per message.
   */
  expireIfStale(now: number): void {
    if (!this.#settled && now >= this.#validUntil) this.#finish();
  }

  /** Keeps a message held while paused; returns false once the claim is gone. */
  keepAlive(): boolean {
    if (!this.valid) return false;
    const sentAt = Date.now();
    this.message.working();
    this.#validUntil = sentAt + this.owner.claimMs;
    return true;
  }

  async ack(): Promise<boolean> {
    if (!this.valid) return this.#finish(false);
    this.message.ack();
    return this.#finish(true);
  }

  async retry(delayMs: number): Promise<boolean> {
    if (!this.valid) return this.#finish(false);
    this.message.nak(delayMs > 0 ? Math.ceil(delayMs) : undefined);
    return this.#finish(true);
  }

  async deadLetter(error: string): Promise<boolean> {
    if (!this.valid) return this.#finish(false);
    await this.owner.deadLetter({
      id: this.id,
      payload: this.payload,
      attempts: this.attempt,
      error,
      publishedAt: this.publishedAt,
      maxRetries: this.maxRetries,
      timeout: this.timeout,
      streamSequence: this.message.seq,
    });
    // Stored as a dead letter; term() stops every further delivery of the original. No reason
    // text: server 2.9 does not parse `+TERM <reason>` and would ignore the whole ack.
    this.message.term();
    return this.#finish(true);
  }

  async touch(): Promise<boolean> {
    if (this.keepAlive()) return true;
    return this.#finish(false);
  }

  /** Gives the message back at once (held and never handed out). */
  release(): void {
    if (this.#settled) return;
    this.message.nak();
    this.#finish();
  }

  #finish(result = false): boolean {
    if (!this.#settled) {
      this.#settled = true;
      this.owner.settled(this);
    }
    return result;
  }
}

export interface ChannelConsumerOptions {
  connections: NatsConnections;
  names: ChannelNames;
  concurrency: number;
  deliver(delivery: QueueDelivery): void;
  visibilityTimeout: number;
  fetchExpires: number;
  ensure(): Promise<void>;
  deadLetter(body: DeadLetterBody): Promise<void>;
  onClose(consumer: ChannelConsumer): void;
}

/**
 * The consumer of one channel in one instance. `concurrency` bounds the messages it has claimed
 * (delivered and unsettled, or held while paused): it never pulls more than the free slots. A message
 * that arrives while paused is held with `working()` and handed out on resume. A second pull loop
 * moves due delayed tasks into the work subject.
 */
export class ChannelConsumer implements QueueConsumer {
  /** How long a claim counts as ours locally: the ack_wait less a margin for the trip. */
  readonly claimMs: number;
  readonly #options: ChannelConsumerOptions;
  readonly #claims = new Set<Claim>();
  readonly #held: Claim[] = [];
  #work: PullLoop | undefined;
  #delayer: PullLoop | undefined;
  #keepAlive: NodeJS.Timeout | undefined;
  #paused = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: ChannelConsumerOptions) {
    this.#options = options;
    const margin = Math.max(50, Math.min(1_000, options.visibilityTimeout * 0.1));
    this.claimMs = options.visibilityTimeout - margin;
  }

  start(): void {
    const { connections, names, fetchExpires, ensure } = this.#options;
    this.#work = new PullLoop(
      connections,
      names.stream,
      WORKERS,
      fetchExpires,
      () => (this.#paused || this.#closed ? 0 : this.#options.concurrency - this.#claims.size),
      (message) => this.#receive(message),
      ensure,
    );
    this.#delayer = new PullLoop(
      connections,
      names.stream,
      DELAYER,
      fetchExpires,
      () => (this.#closed ? 0 : 256),
      (message) => void this.#moveDue(message),
      ensure,
    );
    this.#keepAlive = setInterval(() => this.#sweep(), Math.max(50, this.claimMs / 10));
    this.#keepAlive.unref();
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (this.#closed || !this.#paused) return;
    this.#paused = false;
    while (!this.#paused && this.#held.length > 0) {
      const claim = this.#held.shift()!;
      if (claim.valid) this.#handOut(claim);
      else claim.release();
    }
    this.#work?.poke();
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      clearInterval(this.#keepAlive);
      await Promise.all([this.#work?.stop(), this.#delayer?.stop()]);
      // Held messages were never handed out: give them back now rather than at ack_wait.
      for (const claim of this.#held.splice(0)) claim.release();
      this.#options.onClose(this);
    })();
    return this.#closing;
  }

  settled(claim: Claim): void {
    this.#claims.delete(claim);
    this.#work?.poke();
  }

  deadLetter(body: DeadLetterBody): Promise<void> {
    return this.#options.deadLetter(body);
  }

  #receive(message: JsMsg): void {
    const claim = new Claim(message, this, Date.now());
    this.#claims.add(claim);
    if (this.#paused || this.#closed) {
      this.#held.push(claim);
      return;
    }
    this.#handOut(claim);
  }

  #handOut(claim: Claim): void {
    claim.handedOut = true;
    try {
      this.#options.deliver(claim);
    } catch (error) {
      this.#options.connections.logger.error({ ...errorFields(error) }, 'queue deliver callback threw');
    }
  }

  /** Keeps held claims alive and frees the slots of handed-out claims that ran out. */
  #sweep(): void {
    const now = Date.now();
    for (const claim of this.#claims) if (claim.handedOut) claim.expireIfStale(now);
    this.#keepHeld();
  }

  #keepHeld(): void {
    for (let i = this.#held.length - 1; i >= 0; i--) {
      const claim = this.#held[i]!;
      // working() once a third of the claim has passed, not on every sweep.
      if (claim.remaining() > (this.claimMs * 2) / 3) continue;
      if (!claim.keepAlive()) {
        this.#held.splice(i, 1);
        claim.release();
      }
    }
  }

  /** A delayed task: nak'ed until its time, then published to the work subject and acked. */
  async #moveDue(message: JsMsg): Promise<void> {
    const meta = decodeTaskMeta(message.headers?.get(TASK_HEADER));
    const notBefore = meta?.notBefore ?? 0;
    const wait = notBefore - Date.now();
    if (wait > 0) {
      message.nak(Math.ceil(wait));
      return;
    }
    try {
      const js = await this.#options.connections.jetstream();
      const h = headers();
      if (meta) h.set(TASK_HEADER, encodeTaskMeta({ ...meta, notBefore: 0 }));
      // Keyed by the delayed message: moved twice (a lost ack) it still becomes one task.
      await js.publish(this.#options.names.subject, message.data, {
        headers: h,
        msgID: `due:${this.#options.names.stream}:${message.seq}`,
      });
      message.ack();
    } catch (error) {
      this.#options.connections.logger.warn(
        { ...errorFields(error) },
        'moving a due delayed task failed; retried',
      );
      message.nak(200);
    }
  }
}
