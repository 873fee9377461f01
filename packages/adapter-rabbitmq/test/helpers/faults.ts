/** Shared bits of the fault tests: proxied connection options and a logger that counts messages. */
import type { FaultProxy } from '@cluster/testkit';
import { AMQP_URL } from './rabbit.js';

export type { ProxyFault as Fault } from '@cluster/testkit';

/** The broker's host and port, as the proxy's target. */
export function brokerTarget(): { host: string; port: number } {
  const url = new URL(AMQP_URL);
  return { host: url.hostname || '127.0.0.1', port: Number(url.port || 5672) };
}

/** AMQP_URL with its host and port replaced by the proxy's (credentials and vhost kept). */
export function proxiedUrl(proxy: FaultProxy): string {
  const url = new URL(AMQP_URL);
  url.hostname = proxy.host;
  url.port = String(proxy.port);
  return url.toString();
}

/** Fast detection and reconnects for the tests: 1 s heartbeats, short connect timeout and backoff. */
export function faultConnection(proxy: FaultProxy) {
  return {
    url: proxiedUrl(proxy),
    heartbeat: 1,
    connectTimeout: 1_000,
    reconnectDelay: { initial: 25, max: 250 },
  };
}

// The fault injection and the counting logger are the testkit's, shared with the other adapters.
export { countingLogger, injectFault as inject } from '@cluster/testkit';
