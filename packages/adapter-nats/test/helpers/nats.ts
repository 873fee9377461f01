import { NATS, serverUrl } from '@cluster/testkit';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';

export const NATS_URL = serverUrl(NATS);

/** A plain connection for test bookkeeping (cleanup, inspection). */
export function rawConnection(servers = NATS_URL): Promise<NatsConnection> {
  return connect({ servers, name: 'cluster-test' });
}

/**
 * Deletes every stream (KV buckets are streams `KV_<bucket>`) whose name contains `marker`: the
 * tests put their unique subject prefix into every stream and bucket name they create.
 */
export async function deleteStreamsWith(marker: string, servers = NATS_URL): Promise<number> {
  const nc = await rawConnection(servers);
  try {
    const jsm = await jetstreamManager(nc);
    const names: string[] = [];
    for await (const name of jsm.streams.names()) if (name.includes(marker)) names.push(name);
    for (const name of names) await jsm.streams.delete(name);
    return names.length;
  } finally {
    await nc.close();
  }
}

/** Names of the streams whose name contains `marker`. */
export async function streamsWith(marker: string, servers = NATS_URL): Promise<string[]> {
  const nc = await rawConnection(servers);
  try {
    const jsm = await jetstreamManager(nc);
    const names: string[] = [];
    for await (const name of jsm.streams.names()) if (name.includes(marker)) names.push(name);
    return names;
  } finally {
    await nc.close();
  }
}
