/**
 * Credentials never appear in errors, logs, util.inspect or JSON output, whichever way they were
 * given (URL, user/pass options, token, authenticator), against private servers that require them.
 */
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { ClusterError } from '@cluster/core';
import {
  expectNoSecrets,
  PASSWORD_FORMS,
  recordingLogger,
  SENTINEL_PASSWORD,
  SPECIAL_PASSWORD,
  uniqueName,
  waitFor,
} from '@cluster/testkit';
import { nkeys } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createNatsAdapters,
  createNatsCacheStore,
  createNatsPubSub,
  NatsConnections,
  nkeyAuthenticator,
  redact,
  tokenAuthenticator,
  usernamePasswordAuthenticator,
} from '../src/index.js';
import { type NatsServerHandle, natsServerAvailable, startNatsServer } from './helpers/nats-server.js';

const SECRET = SENTINEL_PASSWORD;
const SPECIAL = SPECIAL_PASSWORD;
const TOKEN = 't0ken-s3cret';
const FORMS = [...PASSWORD_FORMS, TOKEN];
const expectClean = (what: string, value: unknown) => expectNoSecrets(what, value, FORMS);

describe.skipIf(!natsServerAvailable)('nats credentials stay out of errors, logs and inspect output', () => {
  let userServer: NatsServerHandle;
  let specialServer: NatsServerHandle;
  let tokenServer: NatsServerHandle;

  beforeAll(async () => {
    [userServer, specialServer, tokenServer] = await Promise.all([
      startNatsServer({ args: ['--user', 'alice', '--pass', SECRET] }),
      startNatsServer({ args: ['--user', 'bob', '--pass', SPECIAL] }),
      startNatsServer({ args: ['--auth', TOKEN] }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([userServer?.stop(), specialServer?.stop(), tokenServer?.stop()]);
  });

  it('nkey authentication passes through; a wrong seed fails cleanly and the seed never shows', async () => {
    const user = nkeys.createUser();
    const other = nkeys.createUser();
    const seed = new TextDecoder().decode(user.getSeed());
    const otherSeed = new TextDecoder().decode(other.getSeed());
    const config = join(tmpdir(), `${uniqueName('nkey')}.conf`);
    await writeFile(config, `authorization { users = [ { nkey: ${user.getPublicKey()} } ] }\n`);
    const server = await startNatsServer({ args: ['-c', config] });
    try {
      const good = createNatsPubSub({
        servers: server.url,
        connectOptions: { authenticator: nkeyAuthenticator(user.getSeed()) },
      });
      await good.connect();
      for (const secret of [seed, otherSeed])
        expect(inspect(good, { depth: 10 }).includes(secret)).toBe(false);
      await good.close();
      const bad = createNatsPubSub({
        servers: server.url,
        connectOptions: { authenticator: nkeyAuthenticator(other.getSeed()) },
      });
      const error = await bad.connect().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(ClusterError.is(error, 'BACKEND_UNAVAILABLE'), String(error)).toBe(true);
      expectNoSecrets('the nkey error', error, [seed, otherSeed]);
      await bad.close();
    } finally {
      await server.stop();
      await rm(config, { force: true });
    }
  });

  it('redact() removes URL credentials and known secrets', () => {
    expect(redact(`nats://alice:${SECRET}@h:4222 and ${SECRET}`, [SECRET])).toBe('nats://***@h:4222 and ***');
  });

  it('a rejected password (options, URL, authenticator) gives a clean typed error', async () => {
    const attempts = [
      { servers: userServer.url, connectOptions: { user: 'alice', pass: `${SECRET}-wrong` } },
      { servers: userServer.url.replace('//', `//alice:${SECRET}x@`) },
      { servers: specialServer.url.replace('//', `//bob:${encodeURIComponent(`${SPECIAL}x`)}@`) },
      {
        servers: userServer.url,
        connectOptions: { authenticator: usernamePasswordAuthenticator('alice', `${SECRET}!`) },
      },
      { servers: tokenServer.url, connectOptions: { token: `${TOKEN}-wrong` } },
      { servers: tokenServer.url, connectOptions: { authenticator: tokenAuthenticator(`${TOKEN}?`) } },
    ];
    for (const [i, options] of attempts.entries()) {
      const store = createNatsCacheStore({ ...options, subjectPrefix: uniqueName('tc') });
      const error = await store.connect().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(ClusterError.is(error, 'BACKEND_UNAVAILABLE'), `attempt ${i}: ${String(error)}`).toBe(true);
      expectClean(`attempt ${i} error`, error);
      expectClean(`attempt ${i} store`, store);
      await store.close();
    }
  });

  it('with the right credentials, adapters, connections and logs stay clean, also across a server loss', async () => {
    const logger = recordingLogger();
    const nats = createNatsAdapters({
      servers: userServer.url.replace('//', `//alice:${SECRET}@`),
      subjectPrefix: uniqueName('tc'),
      logger,
      connectOptions: { reconnectTimeWait: 100 },
    });
    const special = createNatsPubSub({
      servers: specialServer.url,
      connectOptions: { user: 'bob', pass: SPECIAL },
      logger,
    });
    const token = createNatsPubSub({ servers: tokenServer.url, connectOptions: { token: TOKEN }, logger });
    await nats.cacheStore.set('k', 'v');
    expect(await nats.cacheStore.get('k')).toBe('v');
    await nats.pubSub.connect();
    await special.connect();
    await token.connect();
    for (const [what, value] of Object.entries({
      adapters: nats,
      connections: nats.connections,
      cacheStore: nats.cacheStore,
      pubSub: nats.pubSub,
      special,
      token,
      bare: new NatsConnections({ connectOptions: { pass: SECRET, token: TOKEN } }),
    }))
      expectClean(what, value);

    await userServer.kill();
    await waitFor(() => logger.records.some((r) => r.msg === 'nats disconnected'), {
      timeout: 20_000,
      message: 'disconnect logged',
    });
    const failed = await nats.cacheStore.get('k').then(
      () => undefined,
      (e: unknown) => e,
    );
    if (failed !== undefined) expectClean('call during the outage', failed);
    await userServer.restart();
    await waitFor(() => logger.records.some((r) => r.msg === 'nats reconnected'), {
      timeout: 30_000,
      message: 'reconnect logged',
    });
    expectClean('logs', logger.records);
    await nats.close();
    await special.close();
    await token.close();
  }, 60_000);
});
