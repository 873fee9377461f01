import { ClusterError, errorFields, invalidArgument, type Logger, noopLogger } from '@cluster/core';
import amqp, {
  type Channel,
  type ChannelModel,
  type ConfirmChannel,
  type Options,
  type SocketOptions,
} from 'amqplib';
import { withDeadline } from './deadline.js';

/** TLS and socket settings passed through to amqplib (`ca`, `cert`, `key`, `passphrase`, `servername`, ...). */
export type RabbitSocketOptions = SocketOptions;

export interface RabbitConnectionOptions {
  /** `amqp://user:password@host:port/vhost` or `amqps://` for TLS. Default amqp://guest:guest@127.0.0.1:5672. */
  url?: string;
  /** Connection settings as an object instead of a URL (hostname, port, username, password, vhost, ...). */
  connection?: Options.Connect;
  /** Socket and TLS options passed through to amqplib. `noDelay` is on unless you turn it off. */
  socketOptions?: RabbitSocketOptions;
  /** Heartbeat in seconds: a dead or blackholed connection is noticed after about two of them. Default 10. */
  heartbeat?: number;
  /** How long one connection attempt may take, in ms. Default 5,000. */
  connectTimeout?: number;
  /** Reconnect backoff: the first delay and the cap, in ms (full jitter in between). Default 100 / 5,000. */
  reconnectDelay?: { initial?: number; max?: number };
  /** Prefix of every exchange and queue the adapters declare. Default `cluster`. */
  prefix?: string;
  logger?: Logger;
}

export const DEFAULT_AMQP_URL = 'amqp://guest:guest@127.0.0.1:5672';
const DEFAULT_HEARTBEAT_S = 10;
const DEFAULT_CONNECT_TIMEOUT = 5_000;
const MAX_PREFIX_LENGTH = 32;

/** Removes credentials from any text that may contain an AMQP URL or a password. */
export function redact(text: string, secrets: readonly string[] = []): string {
  let out = text.replace(/(amqps?:\/\/)[^@/\s]*@/gi, '$1***@');
  for (const secret of secrets) if (secret) out = out.split(secret).join('***');
  return out;
}

function sleepUnref(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function assertPositive(value: unknown, what: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0)
    throw invalidArgument(`${what} must be a positive number`);
}

type ConnectionState = 'idle' | 'connecting' | 'open' | 'closed';

/**
 * The supervisor of ONE AMQP connection shared by the adapters made over it. amqplib does not
 * reconnect by itself: this class does, with exponential backoff and jitter, after any loss
 * (socket error, heartbeat timeout, broker close). Adapters register `onOpen` listeners that
 * re-declare their topology and re-open their consumers on every new connection; every channel
 * they open through `channel()` gets `error` and `close` handlers, so a channel error (a 404, a
 * 406) is logged and never reaches the process or the connection.
 */
export class RabbitConnection {
  readonly logger: Logger;
  readonly prefix: string;
  #target: string | Options.Connect;
  readonly #socketOptions: RabbitSocketOptions;
  readonly #secrets: string[];
  readonly #connectTimeout: number;
  readonly #initialDelay: number;
  readonly #maxDelay: number;
  readonly #openListeners = new Set<(model: ChannelModel) => void>();
  readonly #lostListeners = new Set<() => void>();
  readonly #waiters = new Set<{ resolve(model: ChannelModel): void; reject(error: ClusterError): void }>();
  #model: ChannelModel | undefined;
  #state: ConnectionState = 'idle';
  #loop: Promise<void> | undefined;
  #lastError: unknown;
  #authFailed = false;
  #blocked = false;
  #everOpened = false;
  #users = 0;

  constructor(options: RabbitConnectionOptions = {}) {
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    this.logger = (options.logger ?? noopLogger).child({ component: 'adapter-rabbitmq' });
    this.prefix = options.prefix ?? 'cluster';
    if (
      typeof this.prefix !== 'string' ||
      this.prefix.length === 0 ||
      this.prefix.length > MAX_PREFIX_LENGTH ||
      !/^[A-Za-z0-9_.-]+$/.test(this.prefix)
    ) {
      throw invalidArgument(
        `prefix must be 1-${MAX_PREFIX_LENGTH} characters of letters, digits, '_', '.' or '-'`,
      );
    }
    const heartbeat = options.heartbeat ?? DEFAULT_HEARTBEAT_S;
    if (typeof heartbeat !== 'number' || !Number.isInteger(heartbeat) || heartbeat < 0)
      throw invalidArgument('heartbeat must be a whole number of seconds >= 0');
    this.#connectTimeout = options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT;
    assertPositive(this.#connectTimeout, 'connectTimeout');
    this.#initialDelay = options.reconnectDelay?.initial ?? 100;
    this.#maxDelay = options.reconnectDelay?.max ?? 5_000;
    assertPositive(this.#initialDelay, 'reconnectDelay.initial');
    assertPositive(this.#maxDelay, 'reconnectDelay.max');
    this.#secrets = collectSecrets(options);
    if (options.url !== undefined && options.connection !== undefined)
      throw invalidArgument('give either url or connection, not both');
    if (options.connection !== undefined) {
      if (typeof options.connection !== 'object' || options.connection === null)
        throw invalidArgument('connection must be an object');
      this.#target = { heartbeat, ...options.connection };
    } else {
      const url = options.url ?? DEFAULT_AMQP_URL;
      if (typeof url !== 'string') throw invalidArgument('url must be a string');
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        throw invalidArgument('url is not a valid amqp:// or amqps:// URL');
      }
      if (parsed.protocol !== 'amqp:' && parsed.protocol !== 'amqps:')
        throw invalidArgument('url must start with amqp:// or amqps://');
      if (!parsed.searchParams.has('heartbeat')) parsed.searchParams.set('heartbeat', String(heartbeat));
      this.#target = parsed.toString();
    }
    this.#socketOptions = {
      noDelay: true,
      keepAlive: true,
      timeout: this.#connectTimeout,
      ...options.socketOptions,
    };
  }

  /** True while a connection is open. */
  get isOpen(): boolean {
    return this.#state === 'open' && this.#model !== undefined;
  }

  /** True while the broker has blocked publishing (a memory or disk alarm). */
  get isBlocked(): boolean {
    return this.#blocked;
  }

  /**
   * Starts supervision (once) and waits for an open connection, at most `timeout` ms. Rejects at
   * once when the broker refused the credentials; with BACKEND_UNAVAILABLE (the last error,
   * redacted) when the deadline passes. Supervision keeps trying in the background either way.
   */
  async connect(timeout = this.#connectTimeout + 1_000): Promise<void> {
    await this.open(timeout);
  }

  /** The open connection, waiting up to `timeout` ms for one. */
  async open(timeout: number): Promise<ChannelModel> {
    this.#assertNotClosed();
    if (this.#model !== undefined && this.#state === 'open') return this.#model;
    this.#loop ??= this.#supervise();
    return await new Promise<ChannelModel>((resolve, reject) => {
      const waiter = {
        resolve: (model: ChannelModel) => {
          clearTimeout(timer);
          this.#waiters.delete(waiter);
          resolve(model);
        },
        reject: (error: ClusterError) => {
          clearTimeout(timer);
          this.#waiters.delete(waiter);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        waiter.reject(this.#unavailable(`RabbitMQ did not become available within ${timeout} ms`));
      }, timeout);
      this.#waiters.add(waiter);
      if (this.#authFailed && !this.#everOpened) {
        waiter.reject(this.#unavailable('RabbitMQ rejected the credentials'));
      }
    });
  }

  /**
   * Calls `listener` with every new connection (and at once when one is open). Returns a function
   * that removes it.
   */
  onOpen(listener: (model: ChannelModel) => void): () => void {
    this.#openListeners.add(listener);
    if (this.#model !== undefined && this.#state === 'open') this.#safeCall(() => listener(this.#model!));
    return () => this.#openListeners.delete(listener);
  }

  /** Calls `listener` whenever the open connection is lost. */
  onLost(listener: () => void): () => void {
    this.#lostListeners.add(listener);
    return () => this.#lostListeners.delete(listener);
  }

  /**
   * Opens a channel on the current connection with `error` and `close` handlers attached before
   * anything else can happen on it. `onClose` runs once when it closes for any reason.
   */
  async channel<C extends Channel = Channel>(
    role: string,
    confirm: boolean,
    timeout: number,
    onClose?: (error: unknown) => void,
  ): Promise<C> {
    const model = await this.open(timeout);
    let channel: Channel;
    try {
      // A blackholed connection never answers channel.open: bounded like everything else.
      const opening: Promise<Channel> = confirm ? model.createConfirmChannel() : model.createChannel();
      try {
        channel = await withDeadline(opening, timeout, `opening a ${role} channel`);
      } catch (error) {
        // One that opens after its deadline is closed, not leaked.
        opening.then(
          (late) => void late.close().catch(() => {}),
          () => {},
        );
        throw error;
      }
    } catch (error) {
      throw this.error(error, `opening a ${role} channel`);
    }
    let lastError: unknown;
    channel.on('error', (error: unknown) => {
      lastError = error;
      this.logger.warn({ role, ...this.#fields(error) }, 'rabbitmq channel error');
    });
    channel.once('close', () => {
      if (onClose) this.#safeCall(() => onClose(lastError));
    });
    channel.on('handler-error', (error: unknown) => {
      this.logger.error({ role, ...this.#fields(error) }, 'rabbitmq channel handler threw');
    });
    return channel as C;
  }

  /** Closes a channel, ignoring the errors of one that is already gone. */
  async closeChannel(channel: Channel | ConfirmChannel | undefined): Promise<void> {
    if (channel === undefined) return;
    try {
      await channel.close();
    } catch {
      // already closed, or its connection is gone
    }
  }

  /**
   * Rotates the password (an expiring OAuth 2 token, say): the open connection gets it with
   * `connection.update-secret` (RabbitMQ 3.8+), and every later reconnect uses it.
   */
  async updateSecret(secret: string, reason = 'credential rotation'): Promise<void> {
    this.#assertNotClosed();
    if (typeof secret !== 'string' || secret.length === 0)
      throw invalidArgument('secret must be a non-empty string');
    this.#secrets.push(secret, encodeURIComponent(secret));
    if (typeof this.#target === 'string') {
      const url = new URL(this.#target);
      url.password = encodeURIComponent(secret);
      this.#target = url.toString();
    } else {
      this.#target = { ...this.#target, password: secret };
    }
    const model = this.#model;
    if (model === undefined) return;
    try {
      await withDeadline(
        model.updateSecret(Buffer.from(secret), reason),
        this.#connectTimeout,
        'update-secret',
      );
    } catch (error) {
      throw this.error(error, 'updating the rabbitmq secret');
    }
  }

  /** Wraps a failure in a ClusterError whose message and cause carry no credentials. */
  error(error: unknown, what: string): ClusterError {
    if (ClusterError.is(error)) return error;
    const message = redact(error instanceof Error ? error.message : String(error), this.#secrets);
    const cause = new Error(message);
    cause.name = error instanceof Error ? error.name : 'Error';
    const code = (error as { code?: unknown } | undefined)?.code;
    if (code !== undefined) (cause as { code?: unknown }).code = code;
    return new ClusterError(
      /timed? ?out/i.test(message) ? 'TIMEOUT' : 'BACKEND_UNAVAILABLE',
      `${what} failed: ${message}`,
      {
        cause,
      },
    );
  }

  /** Adapters sharing this connection each retain it; the last `close()` really closes it. */
  retain(): this {
    this.#assertNotClosed();
    this.#users += 1;
    return this;
  }

  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    if (this.#users > 1) {
      this.#users -= 1;
      return;
    }
    this.#state = 'closed';
    for (const waiter of [...this.#waiters])
      waiter.reject(new ClusterError('CLOSED', 'the rabbitmq connection is closed'));
    const model = this.#model;
    this.#model = undefined;
    if (model !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      try {
        // A blackholed connection never answers connection.close: bound it.
        await Promise.race([
          model.close(),
          new Promise((resolve) => {
            timer = setTimeout(resolve, 1_000);
          }),
        ]);
      } catch {
        // closing anyway
      } finally {
        clearTimeout(timer);
        destroySocket(model);
      }
    }
  }

  async #supervise(): Promise<void> {
    let attempt = 0;
    while (this.#state !== 'closed') {
      this.#state = 'connecting';
      let model: ChannelModel;
      try {
        model = await this.#connectOnce();
      } catch (error) {
        this.#lastError = error;
        const message = error instanceof Error ? error.message : String(error);
        this.#authFailed = /ACCESS[-_]REFUSED|403/.test(message);
        if (this.#authFailed && !this.#everOpened) {
          for (const waiter of [...this.#waiters])
            waiter.reject(this.#unavailable('RabbitMQ rejected the credentials'));
        }
        if (this.#isClosed()) return;
        attempt += 1;
        const ceiling = Math.min(this.#maxDelay, this.#initialDelay * 2 ** Math.min(attempt - 1, 16));
        const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
        this.logger.debug(
          { attempt, delayMs: delay, ...this.#fields(error) },
          'rabbitmq connect failed; retrying',
        );
        await sleepUnref(delay);
        continue;
      }
      if (this.#isClosed()) {
        void model.close().catch(() => {});
        return;
      }
      attempt = 0;
      this.#authFailed = false;
      const lost = new Promise<void>((resolve) => {
        model.once('close', (error?: unknown) => {
          if (error !== undefined) this.#lastError = error;
          resolve();
        });
      });
      const reconnected = this.#everOpened;
      this.#everOpened = true;
      this.#model = model;
      this.#blocked = false;
      this.#state = 'open';
      if (reconnected) this.logger.info({}, 'rabbitmq connection re-established');
      for (const waiter of [...this.#waiters]) waiter.resolve(model);
      for (const listener of [...this.#openListeners]) this.#safeCall(() => listener(model));
      await lost;
      if (this.#model === model) this.#model = undefined;
      this.#blocked = false;
      if (this.#isClosed()) return;
      this.logger.warn({ ...this.#fields(this.#lastError) }, 'rabbitmq connection lost; reconnecting');
      for (const listener of [...this.#lostListeners]) this.#safeCall(listener);
      await sleepUnref(Math.round(this.#initialDelay * Math.random()));
    }
  }

  async #connectOnce(): Promise<ChannelModel> {
    let timer: NodeJS.Timeout | undefined;
    const attempt = amqp.connect(this.#target as string, this.#socketOptions);
    try {
      const model = await Promise.race([
        attempt,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`connect timed out after ${this.#connectTimeout} ms`)),
            this.#connectTimeout,
          );
        }),
      ]);
      coalesceWrites(model);
      model.on('error', (error: unknown) => {
        this.logger.warn({ ...this.#fields(error) }, 'rabbitmq connection error');
      });
      model.on('blocked', (reason: unknown) => {
        this.#blocked = true;
        this.logger.warn({ reason: redact(String(reason), this.#secrets) }, 'rabbitmq blocked publishing');
      });
      model.on('unblocked', () => {
        this.#blocked = false;
        this.logger.info({}, 'rabbitmq unblocked publishing');
      });
      model.on('handler-error', (error: unknown) => {
        this.logger.error({ ...this.#fields(error) }, 'rabbitmq connection handler threw');
      });
      return model;
    } catch (error) {
      // A connect that completes after its deadline must not leak an open connection.
      attempt.then(
        (late) => void late.close().catch(() => {}),
        () => {},
      );
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  #isClosed(): boolean {
    return this.#state === 'closed';
  }

  #unavailable(message: string): ClusterError {
    const last = this.#lastError;
    const why =
      last === undefined
        ? ''
        : `: ${redact(last instanceof Error ? last.message : String(last), this.#secrets)}`;
    const cause = last === undefined ? undefined : this.error(last, 'connect').cause;
    return new ClusterError('BACKEND_UNAVAILABLE', `${message}${why}`, cause === undefined ? {} : { cause });
  }

  #fields(error: unknown): Record<string, unknown> {
    const fields = errorFields(error) as { err: { message: string } };
    fields.err.message = redact(fields.err.message, this.#secrets);
    return fields;
  }

  #safeCall(fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.logger.error({ ...this.#fields(error) }, 'rabbitmq connection listener threw');
    }
  }

  #assertNotClosed(): void {
    if (this.#state === 'closed') throw new ClusterError('CLOSED', 'the rabbitmq connection is closed');
  }

  /** Keeps connection options (and their passwords) out of util.inspect and JSON.stringify. */
  toJSON(): Record<string, unknown> {
    return { prefix: this.prefix, state: this.#state };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `RabbitConnection { prefix: ${JSON.stringify(this.prefix)}, state: ${this.#state} }`;
  }
}

/**
 * amqplib writes every frame with its own write() and, with `noDelay`, its own syscall: two per
 * task (publish and ack). Corking the socket on the first write of an event-loop turn and uncorking
 * at the end of it sends them as one writev (measured: 60,000 writes became about 1,300, -10 to -20 %
 * CPU per task). Nothing waits longer than the current turn. Skipped if amqplib's internals differ.
 */
function coalesceWrites(model: ChannelModel): void {
  const socket = (model as unknown as { connection?: { stream?: unknown } }).connection?.stream as
    | { write?: (...args: unknown[]) => boolean; cork?: () => void; uncork?: () => void }
    | undefined;
  if (
    typeof socket?.write !== 'function' ||
    typeof socket.cork !== 'function' ||
    typeof socket.uncork !== 'function'
  )
    return;
  const write = socket.write.bind(socket);
  const cork = socket.cork.bind(socket);
  const uncork = socket.uncork.bind(socket);
  let corked = false;
  const flush = () => {
    corked = false;
    uncork();
  };
  socket.write = (...args: unknown[]) => {
    if (!corked) {
      corked = true;
      cork();
      process.nextTick(flush);
    }
    return write(...args);
  };
}

/** A connection whose close handshake never completes (blackholed) is torn down at the socket. */
function destroySocket(model: ChannelModel): void {
  const stream = (model as unknown as { connection?: { stream?: { destroy?(): void } } }).connection?.stream;
  try {
    stream?.destroy?.();
  } catch {
    // already gone
  }
}

function collectSecrets(options: RabbitConnectionOptions): string[] {
  const secrets: string[] = [];
  const add = (value: unknown) => {
    if (typeof value === 'string' && value.length > 0) secrets.push(value);
  };
  add(options.connection?.password);
  add(options.socketOptions?.passphrase);
  add((options.socketOptions?.credentials as { password?: unknown } | undefined)?.password);
  add((options.connection?.credentials as { password?: unknown } | undefined)?.password);
  if (typeof options.url === 'string') {
    try {
      const parsed = new URL(options.url);
      if (parsed.password) {
        add(parsed.password);
        try {
          add(decodeURIComponent(parsed.password));
        } catch {
          // not percent-decodable: the raw form is covered
        }
      }
    } catch {
      // not a URL: nothing to collect
    }
  }
  return secrets;
}
