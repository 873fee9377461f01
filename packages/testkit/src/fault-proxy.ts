/**
 * A loopback TCP fault proxy for adapter fault tests. The client under test connects to the proxy
 * instead of the server; the test then switches modes to inject delay, a blackhole (partition), refusal
 * of new connections, or cuts (RST) of every live connection.
 *
 * Semantics, per mode:
 * - `pass`: bytes are relayed both ways, byte-exact, with backpressure (a slow reader stalls the sender
 *   instead of growing the proxy's memory). FIN is propagated per direction (half-close works).
 * - `delay(ms)`: every chunk is held for at least `ms` in each direction, order kept per direction. A
 *   chunk that arrives in `pass` behind delayed chunks waits for them, so switching never reorders.
 * - `blackhole`: sockets stay open; bytes are dropped both ways, including delayed chunks not yet
 *   delivered. A FIN is held back (not dropped) and delivered once the mode relays again. New
 *   connections are accepted and blackholed too, and do not connect upstream until the mode relays
 *   again, so nothing at all reaches the target. Bytes already handed to a socket cannot be recalled.
 * - `refuse`: NEW connections are accepted and reset at once. Existing connections are not touched and
 *   keep the behaviour they had before (`pass`, `delay` or `blackhole`); `cut()` is the tool for them.
 *
 * Switching back to `pass` restores relaying for new and existing (non-cut) connections. A reset or
 * error on one side resets the other side; an upstream connect error resets the client.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export type FaultMode = 'pass' | 'delay' | 'blackhole' | 'refuse';

export interface FaultProxyOptions {
  target: { host?: string; port: number };
  /** 0 (the default) picks an ephemeral port. */
  listenPort?: number;
  /** Listen address; default 127.0.0.1. */
  host?: string;
}

type DataMode = 'pass' | 'delay' | 'blackhole';

/** What the pairs read from the proxy; kept off the public class so its API stays as documented. */
interface ProxyState {
  dataMode: DataMode;
  delayMs: number;
  readonly target: { host: string; port: number };
  readonly stats: { accepted: number; refused: number; cut: number; bytesUp: number; bytesDown: number };
}

/** Delayed bytes held per direction before the reader is paused (backpressure in `delay` mode). */
const DELAY_HIGH_WATER = 1024 * 1024;

interface Held {
  chunk: Buffer;
  /** performance.now() at which the chunk may be written. */
  due: number;
}

/** Resets a socket without ever raising: RST if connected, plain destroy if still connecting. */
function reset(socket: net.Socket | undefined): void {
  if (!socket || socket.destroyed) return;
  // resetAndDestroy() on a connecting socket waits for the connect; destroy() aborts it at once.
  if (socket.connecting) socket.destroy();
  else socket.resetAndDestroy();
}

function whenClosed(socket: net.Socket | undefined): Promise<void> {
  if (!socket || socket.closed) return Promise.resolve();
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

/** One direction of a pair: reads from `src`, holds chunks as the mode says, writes to `dst`. */
class Direction {
  readonly #queue: Held[] = [];
  #head = 0;
  #queuedBytes = 0;
  #timer: NodeJS.Timeout | undefined;
  #waitingDrain = false;
  /** FIN received from src and not yet passed on. */
  #endPending = false;
  #ended = false;
  /** The opposite socket is gone, so dst is destroyed once its output is flushed. */
  #closeAfterEnd = false;

  constructor(
    private readonly proxy: ProxyState,
    private readonly src: () => net.Socket | undefined,
    private readonly dst: () => net.Socket | undefined,
    private readonly count: (bytes: number) => void,
  ) {}

  onData(chunk: Buffer): void {
    const mode = this.proxy.dataMode;
    if (mode === 'blackhole') return;
    const queued = this.#queue.length > this.#head;
    if (mode === 'pass' && !queued && !this.#waitingDrain) {
      this.#write(chunk);
      if (this.#waitingDrain) this.#updatePause();
      return;
    }
    // The queue is FIFO, so a chunk never overtakes an earlier one even when its own due time is sooner
    // (the delay shrank, or a pass chunk arrived behind delayed ones).
    const now = performance.now();
    this.#queue.push({ chunk, due: mode === 'delay' ? now + this.proxy.delayMs : now });
    this.#queuedBytes += chunk.length;
    this.flush();
  }

  onEnd(): void {
    this.#endPending = true;
    this.flush();
  }

  /** The socket this direction writes to is gone: nothing more can be delivered. */
  dstGone(): void {
    this.drop();
    this.#endPending = false;
    this.#ended = true;
  }

  /** The socket this direction reads from closed cleanly: finish, then close dst too. */
  srcGone(): void {
    this.#closeAfterEnd = true;
    this.#endPending ||= !this.#ended;
    if (this.#ended) this.#destroyDstWhenFlushed();
    else this.flush();
  }

  /** Drops every held chunk (blackhole, cut, teardown) and clears the timer. */
  drop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue.length = 0;
    this.#head = 0;
    this.#queuedBytes = 0;
    this.#updatePause();
  }

  flush(): void {
    const dst = this.dst();
    if (this.proxy.dataMode === 'blackhole' || !dst) {
      this.#updatePause();
      return;
    }
    while (this.#head < this.#queue.length && !this.#waitingDrain) {
      const held = this.#queue[this.#head]!;
      const wait = held.due - performance.now();
      if (wait > 0) {
        // Timers may fire early against the real clock, so the callback re-checks `due`.
        this.#timer ??= setTimeout(
          () => {
            this.#timer = undefined;
            this.flush();
          },
          Math.max(1, Math.ceil(wait)),
        );
        break;
      }
      this.#head += 1;
      this.#queuedBytes -= held.chunk.length;
      this.#write(held.chunk);
    }
    if (this.#head === this.#queue.length) {
      this.#queue.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue.splice(0, this.#head);
      this.#head = 0;
    }
    if (this.#endPending && this.#queue.length === 0 && !this.#ended) {
      this.#endPending = false;
      this.#ended = true;
      if (!dst.destroyed && !dst.writableEnded) dst.end();
      if (this.#closeAfterEnd) this.#destroyDstWhenFlushed();
    }
    this.#updatePause();
  }

  #write(chunk: Buffer): void {
    const dst = this.dst();
    if (!dst || dst.destroyed || dst.writableEnded) return;
    this.count(chunk.length);
    if (!dst.write(chunk) && !this.#waitingDrain) {
      this.#waitingDrain = true;
      dst.once('drain', () => {
        this.#waitingDrain = false;
        this.flush();
      });
    }
  }

  #destroyDstWhenFlushed(): void {
    const dst = this.dst();
    if (!dst || dst.destroyed) return;
    if (dst.writableFinished) dst.destroy();
    else dst.once('finish', () => dst.destroy());
  }

  #updatePause(): void {
    const src = this.src();
    if (!src || src.destroyed) return;
    if (this.#waitingDrain || this.#queuedBytes >= DELAY_HIGH_WATER) src.pause();
    else src.resume();
  }
}

/** A client socket, its upstream socket (created lazily, see blackhole), and the two directions. */
class Pair {
  upstream: net.Socket | undefined;
  readonly up: Direction;
  readonly down: Direction;
  #done = false;

  constructor(
    private readonly proxy: ProxyState,
    readonly client: net.Socket,
    private readonly onDone: (pair: Pair) => void,
  ) {
    this.up = new Direction(
      proxy,
      () => this.client,
      () => this.upstream,
      (n) => {
        proxy.stats.bytesUp += n;
      },
    );
    this.down = new Direction(
      proxy,
      () => this.upstream,
      () => this.client,
      (n) => {
        proxy.stats.bytesDown += n;
      },
    );
    client.on('data', (chunk: Buffer) => this.up.onData(chunk));
    client.on('end', () => this.up.onEnd());
    client.on('error', () => {});
    client.on('close', (hadError) => this.#closed(client, hadError));
  }

  connectUpstream(): void {
    if (this.upstream || this.#done) return;
    const { host, port } = this.proxy.target;
    const upstream = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
    this.upstream = upstream;
    upstream.on('data', (chunk: Buffer) => this.down.onData(chunk));
    upstream.on('end', () => this.down.onEnd());
    upstream.on('error', () => {});
    upstream.on('close', (hadError) => this.#closed(upstream, hadError));
    // Client bytes may have been held while no upstream existed (an end from a blackhole period).
    this.up.flush();
  }

  onModeChange(mode: DataMode): void {
    if (this.#done) return;
    if (mode === 'blackhole') {
      this.up.drop();
      this.down.drop();
      return;
    }
    this.connectUpstream();
    this.up.flush();
    this.down.flush();
  }

  /** RST both sides now. */
  cut(): void {
    this.#finish();
    reset(this.client);
    reset(this.upstream);
  }

  closed(): Promise<void> {
    return Promise.all([whenClosed(this.client), whenClosed(this.upstream)]).then(() => {});
  }

  #closed(socket: net.Socket, hadError: boolean): void {
    if (this.#done) return;
    const other = socket === this.client ? this.upstream : this.client;
    if (hadError) {
      // A reset or error (including an upstream connect failure) is passed on as a reset.
      this.cut();
      return;
    }
    const [from, to] = socket === this.client ? [this.up, this.down] : [this.down, this.up];
    to.dstGone();
    from.srcGone();
    if (!other || other.closed) this.#finish();
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    this.up.drop();
    this.down.drop();
    this.onDone(this);
  }
}

export class FaultProxy implements AsyncDisposable {
  readonly host: string;
  readonly port: number;

  readonly #server: net.Server;
  readonly #pairs = new Set<Pair>();
  readonly #state: ProxyState;
  #mode: FaultMode = 'pass';
  #stopping: Promise<void> | undefined;

  private constructor(
    server: net.Server,
    host: string,
    port: number,
    target: { host: string; port: number },
  ) {
    this.#server = server;
    this.host = host;
    this.port = port;
    this.#state = {
      dataMode: 'pass',
      delayMs: 0,
      target,
      stats: { accepted: 0, refused: 0, cut: 0, bytesUp: 0, bytesDown: 0 },
    };
    server.on('connection', (socket) => this.#accept(socket));
    // Accept errors (EMFILE and the like) must not crash the test process.
    server.on('error', () => {});
  }

  static start(options: FaultProxyOptions): Promise<FaultProxy> {
    const host = options.host ?? '127.0.0.1';
    const target = { host: options.target.host ?? '127.0.0.1', port: options.target.port };
    const server = net.createServer({ allowHalfOpen: true, noDelay: true });
    return new Promise((resolve, reject) => {
      const onError = (error: Error) => reject(error);
      server.once('error', onError);
      server.listen(options.listenPort ?? 0, host, () => {
        server.off('error', onError);
        const address = server.address() as net.AddressInfo;
        resolve(new FaultProxy(server, host, address.port, target));
      });
    });
  }

  /** `host:port`, with an IPv6 host in brackets. */
  get url(): string {
    return this.host.includes(':') ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
  }

  get mode(): FaultMode {
    return this.#mode;
  }

  /** Live connection pairs. */
  get connections(): number {
    return this.#pairs.size;
  }

  /**
   * A snapshot. `accepted` counts relayed (and blackholed) connections, not refused ones; `cut` counts
   * pairs reset by `cut()` or `stop()`; `bytesUp` (client to target) and `bytesDown` count forwarded
   * bytes, not dropped ones.
   */
  get stats(): { accepted: number; refused: number; cut: number; bytesUp: number; bytesDown: number } {
    return { ...this.#state.stats };
  }

  pass(): void {
    this.#setMode('pass', 'pass');
  }

  /** Holds every chunk for at least `ms` in both directions, order kept. */
  delay(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`delay must be a finite number >= 0, got ${ms}`);
    this.#state.delayMs = ms;
    this.#setMode('delay', 'delay');
  }

  blackhole(): void {
    this.#setMode('blackhole', 'blackhole');
  }

  /** Resets NEW connections on accept; existing ones keep their behaviour (use `cut()` for them). */
  refuse(): void {
    this.#setMode('refuse', this.#state.dataMode);
  }

  /** RST every live connection pair now; the mode is unchanged. */
  cut(): void {
    for (const pair of [...this.#pairs]) {
      this.#state.stats.cut += 1;
      pair.cut();
    }
  }

  /** Cuts everything and closes the listener. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= new Promise<void>((resolve) => {
      const pairs = [...this.#pairs];
      this.cut();
      this.#server.close(() => {
        void Promise.all(pairs.map((pair) => pair.closed())).then(() => resolve());
      });
    });
    return this.#stopping;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  #setMode(mode: FaultMode, dataMode: DataMode): void {
    this.#mode = mode;
    if (this.#state.dataMode === dataMode) return;
    this.#state.dataMode = dataMode;
    for (const pair of this.#pairs) pair.onModeChange(dataMode);
  }

  #accept(client: net.Socket): void {
    client.on('error', () => {});
    if (this.#mode === 'refuse' || this.#stopping) {
      this.#state.stats.refused += 1;
      reset(client);
      return;
    }
    this.#state.stats.accepted += 1;
    const pair = new Pair(this.#state, client, (done) => this.#pairs.delete(done));
    this.#pairs.add(pair);
    if (this.#state.dataMode !== 'blackhole') pair.connectUpstream();
  }
}
