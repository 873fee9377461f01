import { closedError } from '../errors.js';
import type { MemoryHub } from '../hub.js';
import { DEFAULT_MAX_PAYLOAD_BYTES } from '../serializer.js';
import type { PubSubAdapter, PubSubCapabilities, PubSubListener } from './types.js';

export interface MemoryPubSubOptions {
  /** Adapters on one hub reach each other; without one, an adapter only reaches itself. */
  hub?: MemoryHub;
}

/** The hub slice: exact channel name -> listeners of every adapter subscribed to it. */
class MemoryBus {
  readonly channels = new Map<string, Set<PubSubListener>>();
}

/**
 * In-process broadcast. Delivery is asynchronous (a microtask per message, in publish order), like a
 * network adapter's, so code that works here does not depend on synchronous delivery.
 */
export function createMemoryPubSub(options: MemoryPubSubOptions = {}): PubSubAdapter {
  const bus = options.hub ? options.hub.part('pubsub', () => new MemoryBus()) : new MemoryBus();
  const mine = new Map<string, PubSubListener>();
  let closed = false;
  const capabilities: PubSubCapabilities = {
    crossProcess: false,
    delivery: 'at-most-once',
    ordering: 'per-publisher',
    resubscribes: true,
    maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES,
  };
  const detach = (channel: string) => {
    const listener = mine.get(channel);
    if (!listener) return;
    mine.delete(channel);
    const set = bus.channels.get(channel);
    set?.delete(listener);
    if (set?.size === 0) bus.channels.delete(channel);
  };

  const adapter: PubSubAdapter = {
    capabilities,
    async connect() {
      if (closed) throw closedError('memory pub/sub');
    },
    async subscribe(channel, listener) {
      if (closed) throw closedError('memory pub/sub');
      detach(channel);
      mine.set(channel, listener);
      let set = bus.channels.get(channel);
      if (!set) bus.channels.set(channel, (set = new Set()));
      set.add(listener);
    },
    async unsubscribe(channel) {
      detach(channel);
    },
    async publish(channel, payload) {
      if (closed) throw closedError('memory pub/sub');
      const listeners = bus.channels.get(channel);
      if (!listeners) return;
      for (const listener of [...listeners]) queueMicrotask(() => listener(payload));
    },
    async close() {
      if (closed) return;
      for (const channel of [...mine.keys()]) detach(channel);
      closed = true;
    },
    async [Symbol.asyncDispose]() {
      await adapter.close();
    },
  };
  return adapter;
}
