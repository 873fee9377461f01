import { createHash, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FaultProxy } from '../src/fault-proxy.js';
import { waitFor, within } from '../src/wait.js';
import {
  Client,
  type Closed,
  freePort,
  prng,
  sleep,
  startEchoServer,
  startServer,
  type TestServer,
  writeAll,
} from './helpers/net.js';

/** The "nothing arrives" window for blackhole and backpressure checks: the property itself, kept short. */
const QUIET_MS = 150;

let echo: TestServer;
const proxies: FaultProxy[] = [];
const clients: Client[] = [];

async function proxyTo(port: number): Promise<FaultProxy> {
  const proxy = await FaultProxy.start({ target: { port } });
  proxies.push(proxy);
  return proxy;
}

async function connect(proxy: FaultProxy): Promise<Client> {
  const client = new Client(proxy.port);
  clients.push(client);
  await client.connected;
  return client;
}

/** A client whose connect may fail (refuse); it is still cleaned up. */
function dial(proxy: FaultProxy): Client {
  const client = new Client(proxy.port);
  clients.push(client);
  return client;
}

/** Random frames of 1 B .. maxSize, sizes from a seeded PRNG; returns them and their stream digest. */
function frames(
  count: number,
  seed: number,
  maxSize: number,
): { chunks: Buffer[]; total: number; digest: string } {
  const random = prng(seed);
  const hash = createHash('sha256');
  const chunks: Buffer[] = [];
  let total = 0;
  for (let i = 0; i < count; i++) {
    const chunk = randomBytes(1 + Math.floor(random() * maxSize));
    chunks.push(chunk);
    hash.update(chunk);
    total += chunk.length;
  }
  return { chunks, total, digest: hash.digest('hex') };
}

/** Asserts a close the way a reset looks to a client: ECONNRESET, or a plain close, and no data. */
function expectResetOrClose(closed: Closed, bytesBefore = 0): void {
  if (closed.error) expect(closed.error.code).toBe('ECONNRESET');
  expect(closed.bytes).toBe(bytesBefore);
}

beforeAll(async () => {
  echo = await startEchoServer();
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.destroy();
  await Promise.all(proxies.splice(0).map((proxy) => proxy.stop()));
});

afterAll(async () => {
  await echo.close();
});

describe('FaultProxy', () => {
  it('starts on an ephemeral loopback port and reports its url', async () => {
    const proxy = await proxyTo(echo.port);
    expect(proxy.host).toBe('127.0.0.1');
    expect(proxy.port).toBeGreaterThan(0);
    expect(proxy.port).not.toBe(echo.port);
    expect(proxy.url).toBe(`127.0.0.1:${proxy.port}`);
    expect(proxy.mode).toBe('pass');
    expect(proxy.connections).toBe(0);
    expect(proxy.stats).toEqual({ accepted: 0, refused: 0, cut: 0, bytesUp: 0, bytesDown: 0 });
  });

  it('pass: echoes 2,000 random-size frames (1 B .. 64 KiB) byte-exact', async () => {
    const proxy = await proxyTo(echo.port);
    const seed = Date.now() >>> 0;
    const { chunks, total, digest } = frames(2_000, seed, 64 * 1024);
    const client = await connect(proxy);
    const done = client.receivedAtLeast(total);
    await writeAll(client.socket, chunks);
    await within(done, 15_000, `echo of ${total} bytes (seed ${seed})`);
    expect(client.received).toBe(total);
    expect(client.digest(), `seed ${seed}`).toBe(digest);
    expect(proxy.stats).toMatchObject({ accepted: 1, bytesUp: total, bytesDown: total });
    expect(proxy.connections).toBe(1);
  });

  it('pass: propagates a half-close (FIN) each way and frees the pair', async () => {
    const proxy = await proxyTo(echo.port);
    const data = randomBytes(100_000);
    const client = await connect(proxy);
    client.socket.end(data);
    const closed = await within(client.closed, 5_000, 'close after FIN');
    expect(closed.error).toBeUndefined();
    expect(client.ended).toBe(true);
    expect(client.digest()).toBe(createHash('sha256').update(data).digest('hex'));
    await waitFor(() => proxy.connections === 0, { message: 'pair freed' });
  });

  it('pass: applies backpressure, so a server that does not read stalls the sender', async () => {
    const total = 64 * 1024 * 1024;
    const data = randomBytes(total);
    const hash = createHash('sha256');
    let sunk = 0;
    let sink: import('node:net').Socket | undefined;
    // pauseOnConnect: the server reads nothing until the test says so.
    const server = await startServer(
      (socket) => {
        sink = socket;
      },
      { pauseOnConnect: true },
    );
    try {
      const proxy = await proxyTo(server.port);
      const client = await connect(proxy);
      let flushed = false;
      client.socket.write(data, () => {
        flushed = true;
      });
      await waitFor(() => proxy.stats.bytesUp >= 1024 * 1024, { message: 'relaying started' });
      await sleep(QUIET_MS);
      // Socket buffers hold a few MiB at most, so with backpressure the 64 MiB write cannot complete;
      // a proxy that kept reading (and queueing in memory) would have taken all of it by now.
      expect(flushed).toBe(false);
      expect(proxy.stats.bytesUp).toBeLessThan(total / 2);
      const socket = await waitFor(() => sink);
      socket.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        sunk += chunk.length;
      });
      socket.resume();
      await waitFor(() => sunk === total, { timeout: 15_000, message: 'all bytes sunk' });
      expect(hash.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
      expect(proxy.stats.bytesUp).toBe(total);
      expect(flushed).toBe(true);
    } finally {
      await server.close();
    }
  });

  it('delay: adds at least the configured delay in each direction', async () => {
    const proxy = await proxyTo(echo.port);
    const client = await connect(proxy);
    const ping = Buffer.from('ping');
    const rtt = async () => {
      const start = performance.now();
      await within(client.roundTrip(ping), 5_000, 'round trip');
      return performance.now() - start;
    };
    const base = Math.min(await rtt(), await rtt(), await rtt());
    const ms = 50;
    proxy.delay(ms);
    expect(proxy.mode).toBe('delay');
    const delayed: number[] = [];
    for (let i = 0; i < 5; i++) delayed.push(await rtt());
    // Each way is held >= ms, so the echo round trip takes >= 2 * ms.
    for (const t of delayed) expect(t).toBeGreaterThanOrEqual(2 * ms - 2);
    console.info(
      `fault-proxy delay ${ms} ms: base rtt ${base.toFixed(2)} ms, delayed rtt min ${Math.min(...delayed).toFixed(2)} ms`,
    );
    proxy.pass();
    expect(await rtt()).toBeLessThan(2 * ms + 2_000);
  });

  it('delay: keeps order per direction while the delay shrinks and switches to pass', async () => {
    const proxy = await proxyTo(echo.port);
    const seed = Date.now() >>> 0;
    const { chunks, total, digest } = frames(300, seed, 8 * 1024);
    const client = await connect(proxy);
    const done = client.receivedAtLeast(total);
    proxy.delay(40);
    await writeAll(client.socket, chunks.slice(0, 100));
    proxy.delay(5);
    await writeAll(client.socket, chunks.slice(100, 200));
    proxy.pass();
    await writeAll(client.socket, chunks.slice(200));
    await within(done, 10_000, `echo (seed ${seed})`);
    expect(client.received).toBe(total);
    expect(client.digest(), `seed ${seed}`).toBe(digest);
  });

  it('delay: rejects a negative or non-finite delay', async () => {
    const proxy = await proxyTo(echo.port);
    expect(() => proxy.delay(-1)).toThrow(RangeError);
    expect(() => proxy.delay(Number.NaN)).toThrow(RangeError);
    expect(proxy.mode).toBe('pass');
  });

  it('blackhole: drops bytes both ways with sockets open; pass() relays again', async () => {
    const proxy = await proxyTo(echo.port);
    const before = await connect(proxy);
    const closing = await connect(proxy);
    await within(before.roundTrip(Buffer.from('hello')), 5_000, 'warm-up round trip');
    await within(closing.roundTrip(Buffer.from('hello')), 5_000, 'warm-up round trip');
    const receivedByServer = echo.received;
    const acceptedByServer = echo.accepted;

    proxy.blackhole();
    expect(proxy.mode).toBe('blackhole');
    before.socket.write(randomBytes(10_000));
    // A new connection is accepted too, but blackholed: not even a connect reaches the target.
    const during = await connect(proxy);
    during.socket.write(randomBytes(10_000));
    // A FIN is held back, not lost: the echo server would answer it with its own FIN.
    closing.socket.end();
    await sleep(QUIET_MS);
    expect(before.received).toBe(5);
    expect(during.received).toBe(0);
    expect(closing.ended).toBe(false);
    expect(before.socket.closed || during.socket.closed || closing.socket.closed).toBe(false);
    expect(echo.received).toBe(receivedByServer);
    expect(echo.accepted).toBe(acceptedByServer);
    expect(proxy.connections).toBe(3);

    proxy.pass();
    const after = await connect(proxy);
    await within(after.roundTrip(Buffer.from('new')), 5_000, 'round trip on a new connection');
    // Existing (non-cut) connections relay again; the blackholed bytes stay lost.
    await within(before.roundTrip(Buffer.from('again')), 5_000, 'round trip on the old connection');
    await within(during.roundTrip(Buffer.from('late')), 5_000, 'round trip on the blackholed connection');
    expect(before.received).toBe(10);
    expect(during.received).toBe(4);
    const closed = await within(closing.closed, 5_000, 'held FIN delivered');
    expect(closed.error).toBeUndefined();
    expect(closing.ended).toBe(true);
  });

  it('refuse: resets new connections without data; existing ones go on; pass() accepts again', async () => {
    const proxy = await proxyTo(echo.port);
    const existing = await connect(proxy);
    // A round trip proves the upstream side is connected before the server's count is taken.
    await within(existing.roundTrip(Buffer.from('hi')), 5_000, 'warm-up round trip');
    const acceptedByServer = echo.accepted;

    proxy.refuse();
    expect(proxy.mode).toBe('refuse');
    const refused = dial(proxy);
    expectResetOrClose(await within(refused.closed, 5_000, 'refused close'));
    expect(echo.accepted).toBe(acceptedByServer);
    expect(proxy.stats.refused).toBe(1);
    expect(proxy.connections).toBe(1);
    // refuse affects new connections only.
    await within(existing.roundTrip(Buffer.from('still here')), 5_000, 'existing round trip');

    proxy.pass();
    const fresh = await connect(proxy);
    await within(fresh.roundTrip(Buffer.from('welcome back')), 5_000, 'new round trip');
    expect(proxy.stats).toMatchObject({ accepted: 2, refused: 1 });
  });

  it('cut: resets every live pair now, keeps the mode, and new connections work after', async () => {
    const proxy = await proxyTo(echo.port);
    const live = await Promise.all([connect(proxy), connect(proxy), connect(proxy)]);
    for (const client of live) await within(client.roundTrip(Buffer.from('x')), 5_000, 'warm-up');
    await waitFor(() => echo.live >= 3);
    const serverLive = echo.live;
    proxy.delay(20);
    for (const client of live) client.socket.write('in flight');

    proxy.cut();
    expect(proxy.connections).toBe(0);
    expect(proxy.mode).toBe('delay');
    expect(proxy.stats.cut).toBe(3);
    for (const client of live) expectResetOrClose(await within(client.closed, 5_000, 'cut close'), 1);
    // The server side is reset as well.
    await waitFor(() => echo.live === serverLive - 3, { message: 'server sockets closed' });

    proxy.pass();
    const next = await connect(proxy);
    await within(next.roundTrip(Buffer.from('next')), 5_000, 'round trip after cut');
    expect(proxy.connections).toBe(1);
  });

  it('resets the client when the upstream connect fails', async () => {
    const proxy = await proxyTo(await freePort());
    const client = dial(proxy);
    expectResetOrClose(await within(client.closed, 5_000, 'close after upstream error'));
    await waitFor(() => proxy.connections === 0, { message: 'pair freed' });
    expect(proxy.stats.accepted).toBe(1);
  });

  it('stop: is idempotent, closes the listener, and leaves no handles or timers', async () => {
    const resources = () => {
      const info = process.getActiveResourcesInfo();
      return {
        timers: info.filter((name) => name === 'Timeout').length,
        servers: info.filter((name) => name === 'TCPServerWrap').length,
        sockets: info.filter((name) => name === 'TCPSocketWrap').length,
      };
    };
    const baseline = resources();
    const proxy = await FaultProxy.start({ target: { port: echo.port } });
    const client = new Client(proxy.port);
    await client.connected;
    await within(client.roundTrip(Buffer.from('hi')), 5_000, 'round trip');
    // Leave bytes held by a long delay, so stop() has a timer to clear.
    proxy.delay(60_000);
    client.socket.write('held');
    await waitFor(() => resources().timers > baseline.timers, { message: 'delay timer armed' });

    const first = proxy.stop();
    expect(proxy.stop()).toBe(first);
    await within(first, 5_000, 'stop');
    await proxy[Symbol.asyncDispose]();
    expect(proxy.connections).toBe(0);
    expectResetOrClose(await within(client.closed, 5_000, 'client close on stop'), 2);

    const late = new Client(proxy.port);
    const closed = await within(late.closed, 5_000, 'connect after stop');
    expect(closed.error?.code).toBe('ECONNREFUSED');
    await waitFor(() => resources().sockets <= baseline.sockets, { message: 'sockets released' });
    const after = resources();
    expect(after.timers).toBeLessThanOrEqual(baseline.timers);
    expect(after.servers).toBeLessThanOrEqual(baseline.servers);
  });
});
