/**
 * X1: the password never appears in errors, logs or inspected objects — refused connections, a wrong
 * password against the real broker, a proxy that refuses or blackholes, URL and object forms.
 */
import { ClusterError, type PubSubAdapter, type QueueAdapter } from '@cluster/core';
import {
  clusterErrorOf,
  expectNoSecrets,
  FaultProxy,
  RABBITMQ,
  recordingLogger,
  requireServer,
  SENTINEL_PASSWORD,
  SPECIAL_PASSWORD,
  sparePort,
  uniqueName,
} from '@cluster/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createRabbitAdapters,
  createRabbitPubSub,
  createRabbitQueue,
  RabbitConnection,
  type RabbitConnectionOptions,
} from '../src/index.js';
import { brokerTarget } from './helpers/faults.js';
import { AMQP_URL } from './helpers/rabbit.js';

const available = await requireServer(RABBITMQ);

const SENTINEL = SENTINEL_PASSWORD;
const SPECIAL = SPECIAL_PASSWORD;
const expectClean = (what: string, value: unknown) => expectNoSecrets(what, value);
const failure = clusterErrorOf;

function withPassword(password: string, host = '127.0.0.1', port = brokerTarget().port): string {
  const url = new URL(AMQP_URL);
  url.username = 'guest';
  url.password = encodeURIComponent(password);
  url.hostname = host;
  url.port = String(port);
  return url.toString();
}

describe.skipIf(!available)('credentials never appear in errors, logs or inspected objects', () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });

  async function exercise(options: RabbitConnectionOptions) {
    const logger = recordingLogger();
    const common = { ...options, prefix: uniqueName('t'), logger, connectTimeout: 300 };
    const pubSub: PubSubAdapter = createRabbitPubSub({ ...common, publishTimeout: 400 });
    const queue: QueueAdapter = createRabbitQueue({ ...common, publishTimeout: 400 });
    closers.push(
      () => pubSub.close(),
      () => queue.close(),
    );
    const errors = await Promise.all([
      failure(pubSub.connect()),
      failure(queue.connect()),
      failure(pubSub.publish('app:ch', 'x')),
    ]);
    for (const error of errors) {
      expect(['BACKEND_UNAVAILABLE', 'TIMEOUT']).toContain(error.code);
      expectClean(`error ${error.message}`, error);
    }
    expectClean('the pub/sub adapter', pubSub);
    expectClean('the queue adapter', queue);
    expectClean('the log records', logger.records);
    return { errors, logger };
  }

  it('connection refused (password in the URL)', async () => {
    await exercise({ url: withPassword(SENTINEL, '127.0.0.1', await sparePort()) });
  });

  it('connection refused (password with special characters, percent-encoded)', async () => {
    await exercise({ url: withPassword(SPECIAL, '127.0.0.1', await sparePort()) });
  });

  it('wrong password against the real broker: refused at once, and the refusal is logged redacted', async () => {
    const { errors, logger } = await exercise({ url: withPassword(SENTINEL) });
    expect(errors[0]!.message).toMatch(/credentials|ACCESS|403/i);
    expect(JSON.stringify(logger.records)).toMatch(/ACCESS.REFUSED|403/i);
  });

  it('wrong password in the object form', async () => {
    const { hostname, port } = new URL(AMQP_URL);
    await exercise({
      connection: { hostname, port: Number(port || 5672), username: 'guest', password: SPECIAL },
    });
  });

  it('proxy refusing and blackholing (timeouts): no password either', async () => {
    const proxy = await FaultProxy.start({ target: brokerTarget() });
    closers.push(() => proxy.stop());
    proxy.refuse();
    await exercise({ url: withPassword(SENTINEL, proxy.host, proxy.port) });
    proxy.blackhole();
    await exercise({ url: withPassword(SENTINEL, proxy.host, proxy.port) });
  });

  it('connections, adapters and their errors hide the options from inspect and JSON', async () => {
    const connection = new RabbitConnection({ url: withPassword(SENTINEL, '127.0.0.1', 1) });
    expectClean('RabbitConnection', connection);
    expect(connection.error(new Error(`boom amqp://guest:${SENTINEL}@host`), 'x').message).not.toContain(
      SENTINEL,
    );
    expect(connection.error(new Error(`boom ${SENTINEL}`), 'x').message).not.toContain(SENTINEL);
    await connection.close();
    const both = createRabbitAdapters({ url: withPassword(SPECIAL, '127.0.0.1', 1) });
    expectClean('RabbitAdapters', both);
    expectClean('its pub/sub', both.pubSub);
    expectClean('its queue', both.queue);
    await both.close();
  });

  it('updateSecret rotates the password on the open connection and for reconnects, and hides it', async () => {
    const connection = new RabbitConnection({ url: AMQP_URL, logger: recordingLogger() });
    closers.push(() => connection.close());
    await connection.connect();
    // guest's own password again: the broker accepts the update, and it is redacted from now on.
    const password = decodeURIComponent(new URL(AMQP_URL).password || 'guest');
    await connection.updateSecret(password);
    expect(connection.isOpen).toBe(true);
    expect(connection.error(new Error(`x ${password}`), 'y').message).not.toContain(` ${password}`);
    expect(
      ClusterError.is(await connection.updateSecret('').catch((e: unknown) => e), 'INVALID_ARGUMENT'),
    ).toBe(true);
  });

  it('bad options fail at the call site with a typed error', () => {
    const invalid = (make: () => unknown) => {
      let error: unknown;
      try {
        make();
      } catch (e) {
        error = e;
      }
      expect(ClusterError.is(error, 'INVALID_ARGUMENT'), String(error)).toBe(true);
      expectClean('the validation error', error);
    };
    invalid(() => createRabbitQueue({ url: `http://guest:${SENTINEL}@x` }));
    invalid(() => createRabbitQueue({ url: 'not a url' }));
    invalid(() => createRabbitQueue({ prefix: 'a b' }));
    invalid(() => createRabbitQueue({ visibilityTimeout: -1 }));
    invalid(() => createRabbitQueue({ visibilityTimeout: 60_000, consumerTimeout: 30_000 }));
    invalid(() => createRabbitQueue({ deliveryLimit: 0 }));
    invalid(() => createRabbitPubSub({ publishTimeout: 0 }));
    invalid(() => createRabbitPubSub({ heartbeat: 1.5 }));
    invalid(() => createRabbitPubSub({ url: AMQP_URL, connection: { hostname: 'x' } }));
  });
});
