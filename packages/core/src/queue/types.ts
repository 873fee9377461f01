/**
 * The queue adapter contract. The EventQueue manager owns policy (concurrency gating, idle(),
 * timeouts, backoff, when to dead-letter, payload encoding); an adapter owns storage and delivery
 * (durability, competing consumers, redelivery of tasks whose consumer died, delayed visibility,
 * dedupe, the dead-letter store). Channels reaching the adapter are already namespaced by app.
 */
export interface QueueCapabilities {
  /** Tasks survive a restart of the process that holds them (memory: false). */
  readonly durable: boolean;
  /** Consumers in other processes compete for the same tasks. */
  readonly crossProcess: boolean;
  readonly delivery: 'at-least-once' | 'at-most-once';
  /** `delay` on publish is honoured. */
  readonly delayed: boolean;
  /** Dead-letter store with list / replay / purge. */
  readonly deadLetter: boolean;
  /**
   * How a caller-given `id` dedupes: `pending` while a task with that id is pending, delayed,
   * running or waiting for a retry; `window` for `dedupeWindowMs` after the first publish; `none`.
   */
  readonly dedupe: 'pending' | 'window' | 'none';
  readonly dedupeWindowMs?: number;
  /** A delivery that is neither settled nor touched within the visibility timeout is redelivered. */
  readonly redelivery: boolean;
  /**
   * How long a delivery's claim lasts without `touch()`, when the adapter has such a timeout. The
   * manager touches running tasks at a third of it (every 10 s when absent).
   */
  readonly visibilityTimeoutMs?: number;
  readonly maxPayloadBytes: number;
}

export interface QueuePublishRequest {
  readonly id: string;
  /** Encoded by the manager's serializer. */
  readonly payload: string;
  readonly maxRetries: number;
  /** Per-attempt timeout in ms, carried with the task so every consumer applies the same one. */
  readonly timeout: number;
  /** Visible to consumers only after this many ms. */
  readonly delay: number;
  /** True when the id came from the caller and must dedupe. */
  readonly dedupe: boolean;
}

export interface QueuePublishResult {
  readonly id: string;
  /** True when a task with this id already existed and nothing new was enqueued. */
  readonly duplicate: boolean;
}

/**
 * One delivery of a task to one consumer. Exactly one of ack / retry / deadLetter settles it.
 * Each resolves `false` when the delivery is no longer this consumer's (its claim expired and the
 * task went to someone else): the settlement is then ignored, so a reclaimed task is never
 * completed twice.
 */
export interface QueueDelivery {
  readonly id: string;
  readonly payload: string;
  /** 1 for the first delivery, incremented by every retry and every redelivery after a lost claim. */
  readonly attempt: number;
  readonly maxRetries: number;
  readonly timeout: number;
  readonly publishedAt: number;
  ack(): Promise<boolean>;
  /** Failed attempt: deliver again (attempt + 1) after `delayMs`. */
  retry(delayMs: number, error: string): Promise<boolean>;
  /** Failed for good: move to the dead-letter store with `error`. */
  deadLetter(error: string): Promise<boolean>;
  /** Keeps the claim alive while a long task runs. */
  touch(): Promise<boolean>;
}

export interface QueueConsumerOptions {
  /** The adapter never has more than this many unsettled deliveries outstanding for this consumer. */
  readonly concurrency: number;
  /** Called for each delivery; must not throw (the manager catches everything). */
  deliver(delivery: QueueDelivery): void;
}

export interface QueueConsumer {
  /** Stop handing out new deliveries (already delivered ones stay with the consumer). */
  pause(): void;
  resume(): void;
  /** Stops the consumer. Unsettled deliveries keep their claim until settled or until it expires. */
  close(): Promise<void>;
}

export interface DeadLetterRecord {
  readonly id: string;
  readonly payload: string;
  readonly attempts: number;
  readonly error: string;
  readonly publishedAt: number;
  readonly failedAt: number;
}

export interface QueueStats {
  readonly pending: number;
  readonly delayed: number;
  readonly inFlight: number;
  readonly deadLetters: number;
}

export interface QueueAdapter extends AsyncDisposable {
  readonly capabilities: QueueCapabilities;
  connect(): Promise<void>;
  publish(channel: string, task: QueuePublishRequest): Promise<QueuePublishResult>;
  consume(channel: string, options: QueueConsumerOptions): Promise<QueueConsumer>;
  listDeadLetters(channel: string, options?: { limit?: number }): Promise<DeadLetterRecord[]>;
  /** Re-enqueues dead letters (all, or the given ids) as fresh tasks with attempt 1; returns how many. */
  replayDeadLetters(channel: string, ids?: readonly string[]): Promise<number>;
  purgeDeadLetters(channel: string, ids?: readonly string[]): Promise<number>;
  stats(channel: string): Promise<QueueStats>;
  close(): Promise<void>;
}
