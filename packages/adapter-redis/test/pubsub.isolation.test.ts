import { PubSubManager } from '@cluster/core';
import { inbox, REDIS, requireServer, serverUrl, uniqueName, waitFor } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createRedisPubSub } from '../src/pubsub/index.js';

const url = serverUrl(REDIS);
const available = await requireServer(REDIS);
const raw = new Redis(url, { lazyConnect: true });
afterAll(() => raw.disconnect());

describe.skipIf(!available)('two apps on one Redis: no message crosses', () => {
  const managers: PubSubManager[] = [];
  afterEach(async () => {
    for (const m of managers.splice(0)) await m.close();
  });

  async function node(appName: string, keyPrefix: string): Promise<PubSubManager> {
    const m = new PubSubManager({ appName, adapter: createRedisPubSub({ url, keyPrefix }) });
    managers.push(m);
    await m.start();
    return m;
  }

  /**
   * Each group (app name × keyPrefix) has a publisher and a subscriber on channel `ch`. Every
   * publisher sends its own message first; only when all of them were accepted by the server does
   * each send a marker. A subscriber connection receives messages in server order, so when its
   * marker arrives anything foreign would already be there.
   */
  async function expectApart(groups: { appName: string; keyPrefix: string }[]) {
    const nodes = await Promise.all(
      groups.map(async (g) => {
        const box = inbox();
        const sub = await node(g.appName, g.keyPrefix);
        await sub.subscribe('ch', box.handler);
        return { ...g, box, pub: await node(g.appName, g.keyPrefix) };
      }),
    );
    await Promise.all(nodes.map((n) => n.pub.publish('ch', `${n.keyPrefix}/${n.appName}`)));
    await Promise.all(nodes.map((n) => n.pub.publish('ch', 'marker')));
    await waitFor(() => nodes.every((n) => n.box.messages.includes('marker')));
    for (const n of nodes)
      expect(n.box.messages, `${n.keyPrefix}/${n.appName}`).toEqual([
        `${n.keyPrefix}/${n.appName}`,
        'marker',
      ]);
  }

  it('apps with wildcard and prefix-sharing names', async () => {
    const keyPrefix = uniqueName('t');
    const base = uniqueName('a');
    await expectApart(
      [`${base}*`, base, `${base}?`, `${base}x`, `${base}[x]`, `${base}:b`, `${base}\\`].map((appName) => ({
        appName,
        keyPrefix,
      })),
    );
  });

  it('one app name under different keyPrefixes', async () => {
    const base = uniqueName('p');
    await expectApart(
      [`${base}*`, base, `${base}x`, `${base}:`].map((keyPrefix) => ({ appName: 'shop', keyPrefix })),
    );
  });

  it('an app named with a leading brace is kept out of `<keyPrefix>:{...}` (the queue and lock names)', async () => {
    const keyPrefix = uniqueName('t');
    const base = uniqueName('b');
    await expectApart([`{${base}`, `%7B${base}`, base].map((appName) => ({ appName, keyPrefix })));
    const sub = await node(`{${base}`, keyPrefix);
    await sub.subscribe('ch', () => {});
    const channels = (await raw.pubsub('CHANNELS', `${keyPrefix}:*`)) as string[];
    expect(channels).toContain(`${keyPrefix}:%7B${base}:ch`);
    expect(channels.some((c) => c.startsWith(`${keyPrefix}:{`))).toBe(false);
  });
});
