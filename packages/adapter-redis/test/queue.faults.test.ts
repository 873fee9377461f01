// Connection faults (cut, blackhole, refuse) on the publishing and the consuming side, under traffic
// (the testkit's scenario): every publish settles in time, nothing confirmed is lost, the loop recovers.
import { describeQueueFaults, REDIS, requireServer, uniqueName } from '@cluster/testkit';
import { createRedisQueue, type RedisQueueOptions } from '../src/index.js';
import { deleteKeys, REDIS_URL } from './helpers/queue-redis.js';
import { proxyTarget } from './helpers/redis-server.js';

const available = await requireServer(REDIS);
const COMMAND_TIMEOUT = 500;
const prefixes: string[] = [];

describeQueueFaults({
  name: 'redis',
  skip: !available,
  target: proxyTarget(REDIS_URL),
  // The command timeout, plus the adapter's own guard and a loaded box.
  publishDeadlineMs: COMMAND_TIMEOUT + 1_000 + 500,
  adapters: ({ side, proxy, logger }) => {
    const keyPrefix = uniqueName('tqf');
    prefixes.push(keyPrefix);
    const common: RedisQueueOptions = { keyPrefix, visibilityTimeout: 30_000, blockMs: 250 };
    const proxied: RedisQueueOptions = {
      ...common,
      logger,
      url: `redis://${proxy.url}`,
      commandTimeout: COMMAND_TIMEOUT,
      redisOptions: { retryStrategy: (times) => Math.min(25 * times, 200), connectTimeout: 1_000 },
    };
    const direct: RedisQueueOptions = { ...common, url: REDIS_URL };
    return {
      producer: createRedisQueue(side === 'publish' ? proxied : direct),
      worker: createRedisQueue(side === 'consume' ? proxied : direct),
    };
  },
  cleanup: async () => {
    for (const prefix of prefixes) await deleteKeys(prefix);
  },
});
