import { ClusterError, errorFields, type Logger, noopLogger } from '@cluster/core';
import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { ConnectionOptions, NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';

export {
  credsAuthenticator,
  jwtAuthenticator,
  nkeyAuthenticator,
  tokenAuthenticator,
  usernamePasswordAuthenticator,
} from '@nats-io/nats-core';

export interface NatsConnectionOptions {
  /** One URL or several (`nats://[user:pass@]host:port`, `tls://...`). Default nats://127.0.0.1:4222. */
  servers?: string | string[];
  /**
   * An existing connection. The adapter uses it as is and never closes it (you opened it, you close
   * it); its reconnect settings are yours.
   */
  connection?: NatsConnection;
  /**
   * nats.js connection options passed through (tls, user/pass, token, `authenticator` from
   * `usernamePasswordAuthenticator`, `tokenAuthenticator`, `nkeyAuthenticator`, `credsAuthenticator`,
   * `jwtAuthenticator`, ...). `servers` above wins over `connectOptions.servers`.
   */
  connectOptions?: Partial<ConnectionOptions>;
  /**
   * First token of every subject and part of every stream and bucket name, so several deployments
   * (or test runs) share one server without meeting. Letters, digits, `-` and `_`. Default `cluster`.
   */
  subjectPrefix?: string;
  /** Deadline of JetStream API calls and KV operations in ms. Default 5,000. */
  requestTimeout?: number;
  logger?: Logger;
}

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';

const PREFIX_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** Removes credentials from any text that may contain a URL, a password, a token or a seed. */
export function redact(text: string, secrets: readonly string[] = []): string {
  let out = text.replace(/([a-z]+:\/\/)[^@/\s]*@/gi, '$1***@');
  for (const secret of secrets) if (secret) out = out.split(secret).join('***');
  return out;
}

/** Server version as [major, minor, patch]; unknown parts are 0. */
export function parseVersion(version: string | undefined): [number, number, number] {
  const [major = 0, minor = 0, patch = 0] = (version ?? '')
    .split(/[.-]/)
    .slice(0, 3)
    .map((part) => Number.parseInt(part, 10) || 0);
  return [major, minor, patch];
}

/**
 * The one NATS connection a set of adapters shares, opened on first use with unlimited reconnects,
 * plus the JetStream and KV handles built on it. A status watch logs disconnects and reconnects
 * (credentials removed) and tells reconnect listeners. Only a connection opened here is closed here.
 */
export class NatsConnections {
  readonly logger: Logger;
  readonly subjectPrefix: string;
  readonly requestTimeout: number;
  readonly #options: NatsConnectionOptions;
  readonly #secrets: string[];
  readonly #reconnectListeners = new Set<() => void>();
  #connecting: Promise<NatsConnection> | undefined;
  #connection: NatsConnection | undefined;
  #jsm: Promise<JetStreamManager> | undefined;
  #js: JetStreamClient | undefined;
  #kvm: Kvm | undefined;
  #closed = false;
  #users = 0;

  constructor(options: NatsConnectionOptions = {}) {
    this.#options = options;
    this.logger = (options.logger ?? noopLogger).child({ component: 'adapter-nats' });
    this.subjectPrefix = options.subjectPrefix ?? 'cluster';
    if (typeof this.subjectPrefix !== 'string' || !PREFIX_PATTERN.test(this.subjectPrefix)) {
      throw new ClusterError(
        'INVALID_ARGUMENT',
        'subjectPrefix must be 1 to 64 letters, digits, "-" or "_" (it becomes a subject token and part of stream names)',
      );
    }
    const timeout = options.requestTimeout ?? 5_000;
    if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout <= 0)
      throw new ClusterError('INVALID_ARGUMENT', 'requestTimeout must be a positive number of milliseconds');
    this.requestTimeout = timeout;
    this.#secrets = collectSecrets(options);
  }

  /** The connection, opened (once) on first call. */
  connection(): Promise<NatsConnection> {
    this.#assertOpen();
    this.#connecting ??= this.#open().catch((error: unknown) => {
      // A failed first connect may be retried by the next call.
      this.#connecting = undefined;
      throw this.error(error, 'nats connect');
    });
    return this.#connecting;
  }

  /** The connection when it is open already, for synchronous fast paths. */
  get current(): NatsConnection | undefined {
    return this.#connection;
  }

  async jetstreamManager(): Promise<JetStreamManager> {
    const nc = await this.connection();
    this.#jsm ??= jetstreamManager(nc, { timeout: this.requestTimeout }).catch((error: unknown) => {
      this.#jsm = undefined;
      throw this.error(error, 'jetstream');
    });
    return this.#jsm;
  }

  async jetstream(): Promise<JetStreamClient> {
    const nc = await this.connection();
    this.#js ??= jetstream(nc, { timeout: this.requestTimeout });
    return this.#js;
  }

  async kvm(): Promise<Kvm> {
    this.#kvm ??= new Kvm(await this.jetstream());
    return this.#kvm;
  }

  /** The server's version, `[0,0,0]` before connecting. */
  get serverVersion(): [number, number, number] {
    return parseVersion(this.#connection?.info?.version);
  }

  /** The server's max_payload in bytes (1 MiB, the server default, before connecting). */
  get maxPayload(): number {
    return this.#connection?.info?.max_payload ?? 1024 * 1024;
  }

  /** Called after the connection came back from a loss. */
  onReconnect(listener: () => void): () => void {
    this.#reconnectListeners.add(listener);
    return () => this.#reconnectListeners.delete(listener);
  }

  /** Wraps a failed NATS call in a ClusterError whose message and cause carry no credentials. */
  error(error: unknown, what: string): ClusterError {
    if (ClusterError.is(error)) return error;
    const message = redact(error instanceof Error ? error.message : String(error), this.#secrets);
    const name = error instanceof Error ? error.name : 'Error';
    let code: ClusterError['code'] = 'BACKEND_UNAVAILABLE';
    if (/timeout|timed out/i.test(message) || name === 'TimeoutError') code = 'TIMEOUT';
    else if (/closed/i.test(message) && this.#closed) code = 'CLOSED';
    const cause = new Error(message);
    cause.name = name;
    return new ClusterError(code, `${what} failed: ${message}`, { cause });
  }

  /** Adapters sharing this connection each retain it; the last `close()` really closes. */
  retain(): this {
    this.#assertOpen();
    this.#users += 1;
    return this;
  }

  get closed(): boolean {
    return this.#closed;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#users > 1) {
      this.#users -= 1;
      return;
    }
    this.#closed = true;
    this.#reconnectListeners.clear();
    const connecting = this.#connecting;
    if (!connecting || this.#options.connection) return;
    const nc = await connecting.catch(() => undefined);
    if (!nc || nc.isClosed()) return;
    // drain() would wait for a partitioned server; close() flushes what it can and drops the socket.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      nc.close().catch(() => {}),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, 2_000);
      }),
    ]);
    clearTimeout(timer);
  }

  async #open(): Promise<NatsConnection> {
    const given = this.#options.connection;
    const { servers, auth } = splitCredentials(
      [this.#options.servers ?? this.#options.connectOptions?.servers ?? DEFAULT_NATS_URL].flat(),
    );
    const nc =
      given ??
      (await connect({
        // Apps run for weeks: keep reconnecting for ever, quickly, and notice a dead server fast.
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        pingInterval: 10_000,
        maxPingOut: 2,
        timeout: 5_000,
        name: 'cluster',
        // nats.js builds two Error objects per request to keep the caller's stack; the adapters wrap
        // every failure in a ClusterError anyway, and those Errors were a third of the queue's CPU.
        noAsyncTraces: true,
        // Credentials in a URL apply unless given as options; the URLs themselves go out without them.
        ...auth,
        ...this.#options.connectOptions,
        servers,
      }));
    if (this.#closed && !given) {
      await nc.close().catch(() => {});
      throw new ClusterError('CLOSED', 'nats connections are closed');
    }
    this.#connection = nc;
    void this.#watch(nc);
    return nc;
  }

  async #watch(nc: NatsConnection): Promise<void> {
    try {
      for await (const status of nc.status()) {
        if (this.#closed) return;
        switch (status.type) {
          case 'disconnect':
            this.logger.warn({ server: redact(status.server, this.#secrets) }, 'nats disconnected');
            break;
          case 'reconnect':
            this.logger.info({ server: redact(status.server, this.#secrets) }, 'nats reconnected');
            for (const listener of this.#reconnectListeners) {
              try {
                listener();
              } catch (error) {
                this.logger.error({ ...errorFields(error) }, 'nats reconnect listener failed');
              }
            }
            break;
          case 'error':
            this.logger.warn(
              { err: { message: redact(String(status.error?.message ?? status.error), this.#secrets) } },
              'nats connection error',
            );
            break;
          default:
            break;
        }
      }
    } catch (error) {
      this.logger.warn({ err: { message: this.error(error, 'status').message } }, 'nats status watch ended');
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClusterError('CLOSED', 'nats connections are closed');
  }

  /** Keeps connection options (and their secrets) out of util.inspect and JSON.stringify. */
  toJSON(): Record<string, unknown> {
    return { subjectPrefix: this.subjectPrefix, closed: this.#closed };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `NatsConnections { subjectPrefix: ${JSON.stringify(this.subjectPrefix)} }`;
  }
}

/**
 * Takes `user:pass@` (or a lone `token@`) out of server URLs, as nats.js does not read them there,
 * and so that no URL the client keeps or reports carries them.
 */
function splitCredentials(urls: string[]): { servers: string[]; auth: Partial<ConnectionOptions> } {
  let auth: Partial<ConnectionOptions> = {};
  const servers = urls.map((server) => {
    const at = server.lastIndexOf('@');
    const scheme = server.indexOf('://');
    if (at < 0 || scheme < 0 || at < scheme) return server;
    const userinfo = server.slice(scheme + 3, at);
    const colon = userinfo.indexOf(':');
    const decode = (text: string) => {
      try {
        return decodeURIComponent(text);
      } catch {
        return text;
      }
    };
    if (Object.keys(auth).length === 0) {
      auth =
        colon < 0
          ? { token: decode(userinfo) }
          : { user: decode(userinfo.slice(0, colon)), pass: decode(userinfo.slice(colon + 1)) };
    }
    return server.slice(0, scheme + 3) + server.slice(at + 1);
  });
  return { servers, auth };
}

function collectSecrets(options: NatsConnectionOptions): string[] {
  const secrets: string[] = [];
  const co = options.connectOptions ?? {};
  for (const value of [co.pass, co.token]) if (typeof value === 'string' && value) secrets.push(value);
  const servers = [options.servers ?? co.servers ?? []].flat();
  for (const server of servers) {
    try {
      const parsed = new URL(server);
      if (parsed.password) secrets.push(decodeURIComponent(parsed.password), parsed.password);
      // A URL with only a user part carries a token there.
      if (parsed.username && !parsed.password)
        secrets.push(decodeURIComponent(parsed.username), parsed.username);
    } catch {
      // not a URL: nothing to collect
    }
  }
  return secrets;
}
