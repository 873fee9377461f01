export type EventKind =
  | 'instance'
  | 'sync-sent'
  | 'sync-received'
  | 'sync-gap'
  | 'pubsub-sent'
  | 'pubsub-received'
  | 'cache-miss'
  | 'task-queued'
  | 'task-started'
  | 'task-finished'
  | 'task-failed'
  | 'task-cancelled'
  | 'lock-waiting'
  | 'lock-acquired'
  | 'lock-released';

export interface DemoEvent {
  /** Increases by one per event of this instance's boot. */
  readonly seq: number;
  readonly at: number;
  readonly kind: EventKind;
  readonly text: string;
  readonly data: Record<string, unknown>;
}

/**
 * What one instance did, in order. The dashboard reads it incrementally (`since`); it is a
 * bounded ring, so a dashboard that falls far behind loses the oldest events, never memory.
 */
export class EventLog {
  readonly #events: DemoEvent[] = [];
  readonly #limit: number;
  #seq = 0;

  constructor(limit = 5_000) {
    this.#limit = limit;
  }

  get lastSeq(): number {
    return this.#seq;
  }

  push(kind: EventKind, text: string, data: Record<string, unknown> = {}): void {
    this.#seq += 1;
    this.#events.push({ seq: this.#seq, at: Date.now(), kind, text, data });
    if (this.#events.length > this.#limit) this.#events.splice(0, this.#events.length - this.#limit);
  }

  since(seq: number): DemoEvent[] {
    const first = this.#events.findIndex((event) => event.seq > seq);
    return first === -1 ? [] : this.#events.slice(first);
  }
}

/** A sleep that ends early, rejecting with the signal's reason, when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** An error with the HTTP status the API answers with. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
