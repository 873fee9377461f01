/** Raw TCP helpers for the fault proxy tests: servers on ephemeral loopback ports, clients, readers. */
import { createHash, type Hash } from 'node:crypto';
import net from 'node:net';

export interface TestServer {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Sockets not yet closed. */
  readonly live: number;
  /** Bytes received, over all connections. */
  readonly received: number;
  close(): Promise<void>;
}

/** Starts a server on 127.0.0.1:0; `onSocket` gets each connection, whose errors are swallowed. */
export async function startServer(
  onSocket: (socket: net.Socket) => void,
  options: net.ServerOpts = {},
): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  let received = 0;
  const server = net.createServer(options, (socket) => {
    accepted += 1;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    onSocket(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    get accepted() {
      return accepted;
    },
    get live() {
      return sockets.size;
    },
    get received() {
      return received;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** An echo server: every byte goes straight back, with backpressure (pipe). */
export function startEchoServer(): Promise<TestServer> {
  return startServer((socket) => {
    socket.setNoDelay(true);
    socket.pipe(socket);
  });
}

/** A port nothing listens on (bound, then released). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface Closed {
  /** The error before 'close', if any. */
  error: NodeJS.ErrnoException | undefined;
  /** Bytes received before the close. */
  bytes: number;
}

/** A client socket that records what it receives and how it ends. Never raises 'error'. */
export class Client {
  readonly socket: net.Socket;
  readonly closed: Promise<Closed>;
  /** Resolves on 'connect', rejects if the socket closes first. */
  readonly connected: Promise<void>;
  received = 0;
  ended = false;
  error: NodeJS.ErrnoException | undefined;
  #hash: Hash = createHash('sha256');
  #waiters: { bytes: number; resolve: () => void; reject: (error: Error) => void }[] = [];

  constructor(port: number, host = '127.0.0.1') {
    this.socket = net.connect({ port, host, noDelay: true });
    this.socket.on('error', (error: NodeJS.ErrnoException) => {
      this.error = error;
    });
    this.socket.on('data', (chunk: Buffer) => {
      this.received += chunk.length;
      this.#hash.update(chunk);
      this.#settle();
    });
    this.socket.on('end', () => {
      this.ended = true;
    });
    this.connected = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('close', () => reject(new Error('closed before connect')));
    });
    // Callers that only look at `closed` must not see an unhandled rejection.
    this.connected.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.socket.once('close', () => {
        resolve({ error: this.error, bytes: this.received });
        this.#settle();
      });
    });
  }

  static async connect(port: number): Promise<Client> {
    const client = new Client(port);
    await client.connected;
    return client;
  }

  /** Resolves once `total` bytes in all have arrived; rejects if the socket closes first. */
  receivedAtLeast(total: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#waiters.push({ bytes: total, resolve, reject });
      this.#settle();
    });
  }

  /** Writes `data` and waits until the same number of further bytes came back (an echo round trip). */
  async roundTrip(data: Buffer): Promise<void> {
    const target = this.received + data.length;
    this.socket.write(data);
    await this.receivedAtLeast(target);
  }

  /** sha256 of everything received so far (ends the hash, so call it once). */
  digest(): string {
    return this.#hash.digest('hex');
  }

  destroy(): void {
    this.socket.destroy();
  }

  #settle(): void {
    this.#waiters = this.#waiters.filter((waiter) => {
      if (this.received >= waiter.bytes) waiter.resolve();
      else if (this.socket.closed)
        waiter.reject(new Error(`closed after ${this.received} of ${waiter.bytes} bytes`));
      else return true;
      return false;
    });
  }
}

/** Writes with backpressure: waits for 'drain' whenever write() says so. */
export async function writeAll(socket: net.Socket, chunks: Iterable<Buffer>): Promise<void> {
  for (const chunk of chunks) {
    if (!socket.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const onClose = () => reject(new Error('socket closed while writing'));
        socket.once('close', onClose);
        socket.once('drain', () => {
          socket.off('close', onClose);
          resolve();
        });
      });
    }
  }
}

/** mulberry32: a seeded PRNG, so a failing frame sequence can be replayed from the logged seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
