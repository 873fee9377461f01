import { CacheManager, PubSubManager } from '@cluster/core';
import {
  clusterErrorOf,
  expectNoSecrets,
  FaultProxy,
  REDIS,
  recordingLogger,
  requireServer,
  SENTINEL_PASSWORD,
  SPECIAL_PASSWORD,
  serverUrl,
  sparePort,
  uniqueName,
} from '@cluster/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisCacheStore } from '../src/cache/index.js';
import { RedisConnections } from '../src/connection.js';
import { createRedisPubSub } from '../src/pubsub/index.js';
import {
  proxyTarget,
  type RedisServerHandle,
  redisBinariesAvailable,
  startRedisServer,
} from './helpers/redis-server.js';

const url = serverUrl(REDIS);
const available = await requireServer(REDIS);
const target = proxyTarget(url);

const SENTINEL = SENTINEL_PASSWORD;
const SPECIAL = SPECIAL_PASSWORD;
const expectClean = (what: string, value: unknown) => expectNoSecrets(what, value);
const failure = clusterErrorOf;

describe.skipIf(!available || !redisBinariesAvailable)(
  'credentials never appear in errors, logs or inspected objects',
  () => {
    let authServer: RedisServerHandle;
    const closers: (() => Promise<void>)[] = [];

    beforeAll(async () => {
      authServer = await startRedisServer({ args: ['--requirepass', 'other'] });
    });
    afterAll(async () => {
      await authServer.stop();
    });
    afterEach(async () => {
      for (const close of closers.splice(0).reverse()) await close();
    });

    /** Exercises a cache store and a pub/sub adapter on `options`; checks every error and log record. */
    async function exercise(options: Parameters<typeof createRedisCacheStore>[0]) {
      const logger = recordingLogger();
      const store = createRedisCacheStore({ ...options, logger, commandTimeout: 300 });
      const pubSub = createRedisPubSub({ ...options, logger, commandTimeout: 300 });
      closers.push(
        () => store.close(),
        () => pubSub.close(),
      );
      const manager = new CacheManager({
        appName: uniqueName('app'),
        stores: { redis: store },
        defaultStore: 'redis',
        logger,
      });
      const pubSubManager = new PubSubManager({ appName: uniqueName('app'), adapter: pubSub, logger });
      closers.push(
        () => manager.close(),
        () => pubSubManager.close(),
      );
      const cache = manager.createCacheSync({ name: 'c' });

      const errors = await Promise.all([
        failure(store.connect()),
        failure(pubSub.connect()),
        failure(cache.get('k')),
        failure(cache.set('k', 1)),
        failure(cache.mset([['a', 1]], 1_000)),
        failure(cache.keys()),
        failure(pubSub.publish('ch', 'x')),
        failure(pubSub.subscribe('ch', () => {})),
      ]);
      for (const error of errors) {
        expect(['BACKEND_UNAVAILABLE', 'TIMEOUT']).toContain(error.code);
        expectClean(`error ${error.message}`, error);
      }
      expectClean('the cache store', store);
      expectClean('the pub/sub adapter', pubSub);
      expectClean('the cache manager', manager);
      expect(logger.records.length, 'connection errors are logged').toBeGreaterThan(0);
      expectClean('the log records', logger.records);
      return { errors, logger };
    }

    it('connection refused (password in the URL)', async () => {
      const port = await sparePort();
      await exercise({ url: `redis://default:${SENTINEL}@127.0.0.1:${port}`, keyPrefix: uniqueName('t') });
    });

    it('connection refused (password with special characters, percent-encoded in the URL)', async () => {
      const port = await sparePort();
      await exercise({
        url: `redis://default:${encodeURIComponent(SPECIAL)}@127.0.0.1:${port}`,
        keyPrefix: uniqueName('t'),
      });
    });

    it('wrong password against a server that requires another one', async () => {
      const { logger } = await exercise({
        url: `redis://default:${SENTINEL}@127.0.0.1:${authServer.port}`,
        keyPrefix: uniqueName('t'),
      });
      // The server's refusal itself reaches the logs (redacted), so the operator sees why.
      expect(JSON.stringify(logger.records)).toMatch(/WRONGPASS|invalid|NOAUTH/i);
    });

    it('unknown ACL user, password in redisOptions', async () => {
      await exercise({
        url: `redis://127.0.0.1:${authServer.port}`,
        redisOptions: { username: 'alice', password: SENTINEL },
        keyPrefix: uniqueName('t'),
      });
    });

    it('a given client with a password: the adapter redacts it too', async () => {
      const client = new Redis({
        port: authServer.port,
        password: SPECIAL,
        lazyConnect: true,
        commandTimeout: 300,
        maxRetriesPerRequest: 1,
      });
      client.on('error', () => {});
      closers.push(async () => client.disconnect());
      await exercise({ client, keyPrefix: uniqueName('t') });
    });

    it('proxy refusing and blackholing (timeouts): no password either', async () => {
      const proxy = await FaultProxy.start({ target });
      closers.push(() => proxy.stop());
      proxy.refuse();
      await exercise({ url: `redis://default:${SENTINEL}@${proxy.url}`, keyPrefix: uniqueName('t') });
      proxy.blackhole();
      await exercise({ url: `redis://default:${SENTINEL}@${proxy.url}`, keyPrefix: uniqueName('t') });
    });

    it('RedisConnections hides its options from inspect and JSON', async () => {
      const connections = new RedisConnections({ url: `redis://default:${SENTINEL}@127.0.0.1:1` });
      expectClean('RedisConnections', connections);
      expect(
        connections.error(new Error(`boom redis://default:${SENTINEL}@host`), 'x').message,
      ).not.toContain(SENTINEL);
      await connections.close();
    });
  },
);
