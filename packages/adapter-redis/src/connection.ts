import { ClusterError, errorFields, type Logger, noopLogger } from '@cluster/core';
import { Cluster, Redis, type RedisOptions } from 'ioredis';

/** A single-server client or a Redis Cluster client. */
export type RedisClient = Redis | Cluster;

export interface RedisConnectionOptions {
  /** `redis://[user:password@]host:port/db` or `rediss://` for TLS. Default redis://127.0.0.1:6379. */
  url?: string;
  /**
   * An existing client. The adapter uses it for commands and `duplicate()`s it for subscriptions
   * and blocking reads; it closes only the duplicates, never the client you gave.
   */
  client?: RedisClient;
  /** ioredis options passed through (tls, username, password, db, ...), merged over the URL. */
  redisOptions?: RedisOptions;
  /** Deadline of every non-blocking command in ms. Default 2,000. */
  commandTimeout?: number;
  /** Prefix of every key and channel, before the app name (shares a database with other software). Default `cluster`. */
  keyPrefix?: string;
  logger?: Logger;
}

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** A client's own deadline per command in ms (a Cluster's is in its redisOptions), if it has one. */
export function commandTimeoutOf(client: RedisClient): number | undefined {
  const options = (
    client as { options?: { commandTimeout?: number; redisOptions?: { commandTimeout?: number } } }
  ).options;
  return options?.commandTimeout ?? options?.redisOptions?.commandTimeout;
}

/** Removes credentials from any text that may contain a URL or a password. */
export function redact(text: string, secrets: readonly string[] = []): string {
  let out = text.replace(/(rediss?:\/\/)[^@/\s]*@/gi, '$1***@');
  for (const secret of secrets) if (secret) out = out.split(secret).join('***');
  return out;
}

/**
 * The connections one adapter uses: a command connection (with a command timeout), and on demand a
 * subscriber connection and blocking connections, each separate because a subscribed or blocked
 * connection can run nothing else. Every connection has an `error` listener routed to the logger,
 * with credentials removed. Only connections created here are closed here.
 */
export class RedisConnections {
  readonly logger: Logger;
  readonly keyPrefix: string;
  readonly #options: RedisConnectionOptions;
  readonly #secrets: string[];
  readonly #owned: RedisClient[] = [];
  readonly #unwatch: (() => void)[] = [];
  #command: RedisClient | undefined;
  #closed = false;
  #users = 0;

  constructor(options: RedisConnectionOptions = {}) {
    this.#options = options;
    this.logger = (options.logger ?? noopLogger).child({ component: 'adapter-redis' });
    this.keyPrefix = options.keyPrefix ?? 'cluster';
    // Braces would move the Redis Cluster hash tag; whitespace and control characters break tooling.
    if (
      typeof this.keyPrefix !== 'string' ||
      this.keyPrefix.length === 0 ||
      /[{}\s\p{Cc}]/u.test(this.keyPrefix)
    ) {
      throw new ClusterError(
        'INVALID_ARGUMENT',
        'keyPrefix must be a non-empty string without braces, spaces or control characters',
      );
    }
    this.#secrets = collectSecrets(options);
  }

  /** The shared command connection. */
  get command(): RedisClient {
    this.#assertOpen();
    if (!this.#command) {
      const commandTimeout = this.#options.commandTimeout ?? 2_000;
      // socketTimeout: a connection that stops answering while commands are pending is dropped and
      // reconnected. Without it, commands lost in a partition stay in ioredis' reply queue and every
      // later reply is matched to the wrong command (the client never recovers; measured).
      this.#command = this.#options.client ?? this.#create({ commandTimeout, socketTimeout: commandTimeout });
      this.#watch(this.#command, 'command');
    }
    return this.#command;
  }

  /** A new connection for subscriptions or blocking reads; closed by `close()`. */
  dedicated(role: string, overrides: RedisOptions = {}): RedisClient {
    this.#assertOpen();
    const given = this.#options.client;
    // A Cluster duplicates with (startupNodes, options); a single server with (options).
    const client = given
      ? given instanceof Cluster
        ? given.duplicate(undefined, { redisOptions: overrides })
        : (given as Redis).duplicate(overrides)
      : this.#create(overrides);
    if (given) this.#owned.push(client);
    this.#watch(client, role);
    return client;
  }

  /**
   * Waits until `client` is ready (connecting it if lazy), bounded by `timeout` ms. Fails at once
   * when the server rejects the credentials (waiting would not help), and with the last connection
   * error (redacted) when the deadline passes.
   */
  async ready(client: RedisClient, timeout = 5_000): Promise<void> {
    if (client.status === 'ready') return;
    if (client.status === 'end') throw new ClusterError('CLOSED', 'the redis connection is closed');
    if (client.status === 'wait') client.connect().catch(() => {});
    await new Promise<void>((resolve, reject) => {
      let last: unknown;
      const timer = setTimeout(() => {
        cleanup();
        const why =
          last === undefined
            ? ''
            : `: ${redact(last instanceof Error ? last.message : String(last), this.#secrets)}`;
        reject(
          new ClusterError('BACKEND_UNAVAILABLE', `Redis did not become ready within ${timeout} ms${why}`, {
            details: { status: client.status },
          }),
        );
      }, timeout);
      const onReady = () => {
        cleanup();
        resolve();
      };
      const onError = (error: unknown) => {
        last = error;
        const message = error instanceof Error ? error.message : String(error);
        if (!/WRONGPASS|NOAUTH|NOPERM|invalid password|invalid username/i.test(message)) return;
        cleanup();
        reject(
          new ClusterError('BACKEND_UNAVAILABLE', 'Redis rejected the credentials', {
            cause: this.error(error, 'auth').cause,
          }),
        );
      };
      const cleanup = () => {
        clearTimeout(timer);
        client.off('ready', onReady);
        client.off('error', onError);
      };
      client.on('ready', onReady);
      client.on('error', onError);
    });
  }

  /** Wraps a failed Redis call in a ClusterError whose message and cause carry no credentials. */
  error(error: unknown, what: string): ClusterError {
    if (ClusterError.is(error)) return error;
    const message = redact(error instanceof Error ? error.message : String(error), this.#secrets);
    const code = /timed out/i.test(message) ? 'TIMEOUT' : 'BACKEND_UNAVAILABLE';
    const cause = new Error(message);
    cause.name = error instanceof Error ? error.name : 'Error';
    return new ClusterError(code, `${what} failed: ${message}`, { cause });
  }

  /** Adapters sharing these connections each retain them; the last `close()` really closes. */
  retain(): this {
    this.#assertOpen();
    this.#users += 1;
    return this;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#users > 1) {
      this.#users -= 1;
      return;
    }
    this.#closed = true;
    for (const unwatch of this.#unwatch.splice(0)) unwatch();
    await Promise.all(
      this.#owned.map(async (client) => {
        // quit() on a never-connected lazy client would connect first, and on a partitioned one it
        // never gets its reply: bound it, then drop the socket.
        if (client.status === 'wait' || client.status === 'end') {
          client.disconnect();
          return;
        }
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            client.quit(),
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error('quit timed out')), 1_000);
            }),
          ]);
        } catch {
          // closing anyway
        } finally {
          clearTimeout(timer);
          if ((client.status as string) !== 'end') client.disconnect();
        }
      }),
    );
  }

  #create(overrides: RedisOptions): RedisClient {
    const url = this.#options.url ?? DEFAULT_REDIS_URL;
    const options: RedisOptions = {
      keepAlive: 10_000,
      connectTimeout: 5_000,
      // A fast, bounded reconnect: ioredis retries for ever; commands fail after maxRetriesPerRequest.
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2_000),
      maxRetriesPerRequest: 3,
      lazyConnect: true,
      ...this.#options.redisOptions,
      ...overrides,
    };
    const client = new Redis(url, options);
    this.#owned.push(client);
    return client;
  }

  #watch(client: RedisClient, role: string): void {
    const listener = (error: unknown) => {
      this.logger.warn({ role, ...redactedFields(error, this.#secrets) }, 'redis connection error');
    };
    client.on('error', listener);
    // A given client outlives these connections: take the listener off it again on close.
    if (client === this.#options.client) this.#unwatch.push(() => client.off('error', listener));
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClusterError('CLOSED', 'redis connections are closed');
  }

  /** Keeps client options (and their passwords) out of util.inspect and JSON.stringify. */
  toJSON(): Record<string, unknown> {
    return { keyPrefix: this.keyPrefix, closed: this.#closed };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `RedisConnections { keyPrefix: ${JSON.stringify(this.keyPrefix)} }`;
  }
}

function collectSecrets(options: RedisConnectionOptions): string[] {
  const secrets: string[] = [];
  if (options.redisOptions?.password) secrets.push(options.redisOptions.password);
  // A given client carries its own password (a Cluster in its redisOptions).
  const given = options.client as
    | { options?: { password?: unknown; redisOptions?: { password?: unknown } } }
    | undefined;
  for (const password of [given?.options?.password, given?.options?.redisOptions?.password]) {
    if (typeof password === 'string' && password) secrets.push(password);
  }
  if (options.url) {
    try {
      const parsed = new URL(options.url);
      if (parsed.password) secrets.push(decodeURIComponent(parsed.password), parsed.password);
    } catch {
      // not a URL: nothing to collect
    }
  }
  return secrets;
}

function redactedFields(error: unknown, secrets: readonly string[]): Record<string, unknown> {
  const fields = errorFields(error) as { err: { message: string } };
  fields.err.message = redact(fields.err.message, secrets);
  return fields;
}
