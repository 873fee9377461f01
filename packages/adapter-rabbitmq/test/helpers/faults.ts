/** Shared bits of the fault tests: proxied connection options and a logger that counts messages. */
import type { Logger } from '@cluster/core';
import type { FaultProxy } from '@cluster/testkit';
import { AMQP_URL } from './rabbit.js';

export type Fault = 'cut' | 'blackhole' | 'refuse';

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

export function inject(proxy: FaultProxy, fault: Fault): void {
  if (fault === 'cut') proxy.cut();
  else if (fault === 'blackhole') proxy.blackhole();
  else {
    proxy.refuse();
    // Refuse only hits new connections: cut the live ones so the adapter has to reconnect into it.
    proxy.cut();
  }
}

/** Counts log messages by text, so the figures show which recovery paths ran. */
export function countingLogger(counts: Map<string, number>): Logger {
  const count = (_: object, msg?: string) => {
    if (msg) counts.set(msg, (counts.get(msg) ?? 0) + 1);
  };
  const logger: Logger = { debug: count, info: count, warn: count, error: count, child: () => logger };
  return logger;
}
