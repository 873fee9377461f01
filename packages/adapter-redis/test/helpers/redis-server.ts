/**
 * Starts a private redis-server (binary `redis-server` on PATH) on a spare loopback port with its own
 * temporary directory, for tests that kill and restart the server. Never touches the shared server.
 */
import { spawn } from 'node:child_process';
import { binariesAvailable, startServerProcess } from '@cluster/testkit';
import { Cluster, type Redis } from 'ioredis';
import { afterAll, beforeAll } from 'vitest';

export interface RedisServerOptions {
  /** AOF persistence with `appendfsync always`. Default false. */
  appendonly?: boolean;
  /** Extra command-line arguments, e.g. `['--requirepass', 'secret']`. */
  args?: readonly string[];
  /** How long to wait for the port to accept connections. Default 10,000 ms. */
  startTimeout?: number;
}

export interface RedisServerHandle {
  /** `redis://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** The temporary data directory (AOF files live here). */
  dir: string;
  /** SIGKILL, no shutdown save; resolves when the process has exited. */
  kill(): Promise<void>;
  /** Starts the server again on the same port with the same directory (after kill/stop or not). */
  restart(): Promise<void>;
  /** Graceful stop (SIGTERM), then removes the directory. */
  stop(): Promise<void>;
}

/** True when `redis-server` (and `redis-cli`) can be run: tests that start their own servers skip otherwise. */
export const redisBinariesAvailable = binariesAvailable(
  ['redis-server', 'redis-cli'],
  'tests that start their own redis-server',
);

export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServerHandle> {
  const server = await startServerProcess({
    command: 'redis-server',
    // No RDB snapshots; AOF with fsync on every write when asked, so a kill loses nothing acknowledged.
    args: (port, dir) => [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      options.appendonly ? 'yes' : 'no',
      '--appendfsync',
      'always',
      '--protected-mode',
      'no',
      ...(options.args ?? []),
    ],
    startTimeout: options.startTimeout ?? 10_000,
  });
  return { url: `redis://127.0.0.1:${server.port}`, ...server };
}

/**
 * Deletes every key under `<prefix>:` with a raw client (SCAN + UNLINK; never FLUSHDB, the server
 * is shared). Glob characters in `prefix` are escaped.
 */
export async function deleteKeysUnder(client: Redis, prefix: string): Promise<void> {
  const pattern = `${prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}:*`;
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await client.unlink(keys);
  } while (cursor !== '0');
}

export interface RedisClusterHandle {
  /** The masters, each a private redis-server with cluster mode on. */
  nodes: RedisServerHandle[];
  /** Startup nodes for an ioredis `Cluster`. */
  startupNodes: { host: string; port: number }[];
  stop(): Promise<void>;
}

/**
 * Starts a Redis Cluster of `masters` private servers (no replicas), slots spread by
 * `redis-cli --cluster create`, and waits until every node reports `cluster_state:ok`.
 */
export async function startRedisCluster(masters = 3): Promise<RedisClusterHandle> {
  const nodes: RedisServerHandle[] = [];
  try {
    for (let i = 0; i < masters; i++) {
      nodes.push(
        await startRedisServer({
          args: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            'nodes.conf',
            '--cluster-node-timeout',
            '5000',
          ],
        }),
      );
    }
    await new Promise<void>((resolve, reject) => {
      const cli = spawn(
        'redis-cli',
        [
          '--cluster',
          'create',
          ...nodes.map((n) => `127.0.0.1:${n.port}`),
          '--cluster-replicas',
          '0',
          '--cluster-yes',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      cli.stderr?.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      cli.once('error', reject);
      cli.once('exit', (code) =>
        code === 0 ? resolve() : reject(new Error(`redis-cli --cluster create failed (${code}): ${stderr}`)),
      );
    });
    const deadline = Date.now() + 20_000;
    for (const node of nodes) {
      for (;;) {
        const info = await clusterInfo(node.port);
        if (info.includes('cluster_state:ok')) break;
        if (Date.now() > deadline) throw new Error(`cluster node ${node.port} not ok: ${info}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } catch (error) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw error;
  }
  return {
    nodes,
    startupNodes: nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop()));
    },
  };
}

function clusterInfo(port: number): Promise<string> {
  return new Promise((resolve) => {
    const cli = spawn('redis-cli', ['-p', String(port), 'cluster', 'info'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let out = '';
    cli.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    cli.once('error', () => resolve(''));
    cli.once('exit', () => resolve(out));
  });
}

/** Host and port of a Redis URL, as the FaultProxy's target. */
export function proxyTarget(url: string): { host: string; port: number } {
  const parsed = new URL(url);
  return { host: parsed.hostname || '127.0.0.1', port: Number(parsed.port || 6379) };
}

/**
 * Starts a private 3-master Redis Cluster for the file (beforeAll) with a Cluster client on it, and
 * stops both afterwards. `current()` is undefined when the redis binaries are missing.
 */
export function usePrivateRedisCluster(): {
  current(): { cluster: RedisClusterHandle; client: Cluster } | undefined;
} {
  let state: { cluster: RedisClusterHandle; client: Cluster } | undefined;
  beforeAll(async () => {
    if (!redisBinariesAvailable) return;
    const cluster = await startRedisCluster(3);
    const client = new Cluster(cluster.startupNodes, { redisOptions: { commandTimeout: 2_000 } });
    client.on('error', () => {});
    state = { cluster, client };
  }, 60_000);
  afterAll(async () => {
    state?.client.disconnect();
    await state?.cluster.stop();
  });
  return { current: () => state };
}
