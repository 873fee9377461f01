import { createCluster } from '@cluster/core';
import { RABBITMQ, requireServer, uniqueName } from '@cluster/testkit';
import { describe, expect, it } from 'vitest';
import { createRabbitAdapters } from '../src/index.js';
import { AMQP_URL } from './helpers/rabbit.js';

const available = await requireServer(RABBITMQ);

describe.skipIf(!available)('createRabbitAdapters', () => {
  it('shares one connection between the parts and closes it with the app (the last part)', async () => {
    const prefix = uniqueName('tb');
    const rabbit = createRabbitAdapters({ url: AMQP_URL, prefix });
    const app = createCluster({
      name: uniqueName('app'),
      pubSub: { adapter: rabbit.pubSub },
      queue: { adapter: rabbit.queue },
    });
    await app.start();
    expect(rabbit.connection.isOpen).toBe(true);
    await app.stop();
    // app.stop() closed both parts: nothing is left open to keep the process alive.
    expect(rabbit.connection.isOpen).toBe(false);
    await rabbit.close(); // idempotent after the parts closed
  });

  it('close() of a bundle whose parts were never read opens nothing and ends closed', async () => {
    const rabbit = createRabbitAdapters({ url: AMQP_URL, prefix: uniqueName('tb') });
    await rabbit.close();
    expect(rabbit.connection.isOpen).toBe(false);
    expect(() => rabbit.pubSub).toThrow();
  });
});
