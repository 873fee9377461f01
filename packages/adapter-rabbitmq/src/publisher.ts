import { createHash } from 'node:crypto';
import { ClusterError } from '@cluster/core';
import type { ConfirmChannel, Options } from 'amqplib';
import type { RabbitConnection } from './connection.js';
import { withDeadline } from './deadline.js';

/** AMQP names and routing keys are at most 255 bytes; longer parts are replaced by a hash. */
const MAX_WIRE_BYTES = 180;

/**
 * A core name (already namespaced and escaped by core: a literal `%` arrives as `%25`) as an
 * AMQP name part. `~` separates our own suffixes, so it is escaped as `%7E`; a name too long for
 * AMQP becomes `%H<sha256>`, which no escaped core name can equal (core never emits `%H`).
 */
export function wirePart(name: string): string {
  const escaped = name.includes('~') ? name.replace(/~/g, '%7E') : name;
  if (Buffer.byteLength(escaped) <= MAX_WIRE_BYTES) return escaped;
  return `%H${createHash('sha256').update(name).digest('base64url')}`;
}

type Outcome = 'confirmed' | 'nacked' | 'lost' | 'timeout' | 'unroutable';

/** Thrown by a mandatory publish that no queue took (its queue was deleted): declare it again and retry. */
export class UnroutableError extends ClusterError {
  constructor(what: string) {
    super('BACKEND_UNAVAILABLE', `${what} failed: no queue took the message (was it deleted?)`);
    this.name = 'UnroutableError';
  }
}

let tokenSeq = 0;
const TOKEN_PREFIX = `${process.pid.toString(36)}.${Date.now().toString(36)}.`;

/** A publish waiting for its confirm, until its deadline. */
interface Waiting {
  readonly deadline: number;
  settle(outcome: Outcome): void;
}

/** Deadlines of waiting publishes are checked this often (one timer for all, not one per publish). */
const SWEEP_MS = 50;

/**
 * Publishes over one confirm channel that it re-opens after any loss. `publish()` resolves only
 * once the broker confirmed the message; a message whose channel died before its confirm is sent
 * again on a new channel (its outcome was unknown: the consumer may see it twice) until the
 * deadline, after which it rejects with TIMEOUT. A broker nack rejects with BACKEND_UNAVAILABLE.
 */
export class ConfirmPublisher {
  readonly #connection: RabbitConnection;
  readonly #role: string;
  #channel: ConfirmChannel | undefined;
  #opening: Promise<ConfirmChannel> | undefined;
  /** Bumped whenever the channel is replaced: per-channel caches (declared exchanges) key on it. */
  generation = 0;
  #drain: Promise<void> | undefined;
  #closed = false;
  readonly #waiting = new Set<Waiting>();
  /** Tokens of mandatory publishes the broker returned as unroutable (until their confirm arrives). */
  readonly #returned = new Set<string>();
  #sweep: NodeJS.Timeout | undefined;

  constructor(connection: RabbitConnection, role: string) {
    this.#connection = connection;
    this.#role = role;
  }

  /** The open confirm channel, opening one (waiting for the connection) within `timeout` ms. */
  async channel(timeout: number): Promise<ConfirmChannel> {
    if (this.#closed) throw new ClusterError('CLOSED', `${this.#role} publisher is closed`);
    if (this.#channel !== undefined) return this.#channel;
    this.#opening ??= (async () => {
      try {
        const channel = await this.#connection.channel<ConfirmChannel>(this.#role, true, timeout, () => {
          if (this.#channel === channel) {
            this.#channel = undefined;
            this.#drain = undefined;
          }
        });
        // Many publishes wait on one channel; a listener per waiting publish is expected.
        channel.setMaxListeners(0);
        // A mandatory message no queue took comes back (before its confirm) with its token.
        channel.on('return', (message: { properties: { correlationId?: unknown } }) => {
          const token = message.properties.correlationId;
          if (typeof token === 'string') this.#returned.add(token);
        });
        if (this.#closed) {
          void this.#connection.closeChannel(channel);
          throw new ClusterError('CLOSED', `${this.#role} publisher is closed`);
        }
        this.generation += 1;
        this.#channel = channel;
        return channel;
      } finally {
        this.#opening = undefined;
      }
    })();
    return this.#opening;
  }

  /**
   * Publishes and waits for the confirm, within `timeout` ms in all (waiting for a connection
   * included). `prepare` runs on every channel used, before the publish (declaring an exchange).
   */
  async publish(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
    timeout: number,
    what: string,
    prepare?: (channel: ConfirmChannel, generation: number) => Promise<void> | undefined,
  ): Promise<void> {
    const deadline = Date.now() + timeout;
    let last: unknown;
    let nacked = false;
    if (options.mandatory && options.correlationId === undefined) {
      tokenSeq += 1;
      options = { ...options, correlationId: TOKEN_PREFIX + tokenSeq.toString(36) };
    }
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      let channel: ConfirmChannel;
      try {
        // The open channel is used as is: no timer on the hot path.
        channel = this.#channel ?? (await withDeadline(this.channel(remaining), remaining, what));
        const prepared = prepare?.(channel, this.generation);
        if (prepared !== undefined) await withDeadline(prepared, deadline - Date.now(), what);
        if (this.#drain !== undefined && !(await this.#waitDrain(this.#drain, deadline))) break;
      } catch (error) {
        if (ClusterError.is(error, 'CLOSED')) throw error;
        last = error;
        if (ClusterError.is(error, 'TIMEOUT') || ClusterError.is(error, 'BACKEND_UNAVAILABLE')) {
          if (Date.now() >= deadline) break;
          // The connection is down or a declare failed: the loop retries until the deadline.
          await pause(Math.min(100, Math.max(0, deadline - Date.now())));
        }
        continue;
      }
      const outcome = await this.#publishOnce(channel, exchange, routingKey, content, options, deadline);
      if (outcome === 'confirmed') return;
      if (outcome === 'timeout') break;
      if (outcome === 'unroutable') throw new UnroutableError(what);
      if (outcome === 'nacked') {
        // The broker did not take it (a quorum queue without a leader yet, a full queue): sending
        // it again cannot duplicate it, so it is retried until the deadline.
        nacked = true;
        await pause(Math.min(25, Math.max(0, deadline - Date.now())));
        continue;
      }
      nacked = false;
      last = new Error('the channel closed before the broker confirmed the message');
    }
    if (nacked) {
      throw new ClusterError(
        'BACKEND_UNAVAILABLE',
        `${what} failed: the broker refused the message (nack) until the deadline of ${timeout} ms`,
      );
    }
    const why = last instanceof Error ? `: ${this.#connection.error(last, what).message}` : '';
    throw new ClusterError(
      'TIMEOUT',
      `${what} was not confirmed within ${timeout} ms; its outcome is unknown${why}`,
    );
  }

  #publishOnce(
    channel: ConfirmChannel,
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
    deadline: number,
  ): Promise<Outcome> {
    return new Promise((resolve) => {
      const waiting: Waiting = {
        deadline,
        settle: (outcome) => {
          if (!this.#waiting.delete(waiting)) return;
          resolve(outcome);
        },
      };
      this.#waiting.add(waiting);
      this.#startSweep();
      const token = options.mandatory ? options.correlationId : undefined;
      let ok: boolean;
      try {
        // One callback per publish (the hot path of every publish: no other per-message objects).
        ok = channel.publish(exchange, routingKey, content, options, (error: unknown) => {
          if (error) {
            // amqplib fails the callbacks of a closing channel; the close handler clears #channel
            // first only sometimes, so a closed channel is told apart from a nack by its state.
            setImmediate(() => waiting.settle(this.#channel === channel ? 'nacked' : 'lost'));
          } else if (token !== undefined && this.#returned.delete(token)) waiting.settle('unroutable');
          else waiting.settle('confirmed');
        });
      } catch {
        // Writing to a channel that just closed throws: the message never left.
        if (this.#channel === channel) this.#channel = undefined;
        waiting.settle('lost');
        return;
      }
      if (!ok && this.#drain === undefined) {
        this.#drain = new Promise<void>((done) => {
          const finish = () => {
            channel.off('drain', finish);
            channel.off('close', finish);
            if (this.#channel === channel || this.#channel === undefined) this.#drain = undefined;
            done();
          };
          channel.on('drain', finish);
          channel.on('close', finish);
        });
      }
    });
  }

  /**
   * Waits for the channel's write buffer to drain (false at the deadline). Many publishes wait at
   * once in a burst, so the deadline is the shared sweep's, not a timer per publish.
   */
  #waitDrain(drain: Promise<void>, deadline: number): Promise<boolean> {
    return new Promise((resolve) => {
      const waiting: Waiting = {
        deadline,
        settle: (outcome) => {
          if (!this.#waiting.delete(waiting)) return;
          resolve(outcome !== 'timeout');
        },
      };
      this.#waiting.add(waiting);
      this.#startSweep();
      void drain.then(() => waiting.settle('confirmed'));
    });
  }

  #startSweep(): void {
    if (this.#sweep !== undefined) return;
    this.#sweep = setInterval(() => {
      // Stopped here, not when the last waiter settles: sequential publishes would restart it each time.
      if (this.#waiting.size === 0) {
        this.#stopSweep();
        return;
      }
      const now = Date.now();
      for (const waiting of [...this.#waiting]) if (waiting.deadline <= now) waiting.settle('timeout');
    }, SWEEP_MS);
  }

  #stopSweep(): void {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const channel = this.#channel;
    this.#channel = undefined;
    if (channel !== undefined) {
      // Confirms still on their way are given a moment; close() never hangs on a dead socket.
      await withDeadline(this.#connection.closeChannel(channel), 1_000, 'closing a channel').catch(() => {});
    }
  }
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

export { withDeadline };
