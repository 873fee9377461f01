/**
 * The pub/sub adapter contract: a plain broadcast pipe. The PubSubManager owns envelopes,
 * skipSelf / onlySelf, debounce and handler isolation; an adapter moves opaque strings between
 * instances on exact channel names (never patterns). Channels are already namespaced by app.
 */
export interface PubSubCapabilities {
  /** Instances in other processes receive messages. */
  readonly crossProcess: boolean;
  /** Broadcast is at-most-once on every adapter: messages sent while an instance is disconnected are lost. */
  readonly delivery: 'at-most-once';
  /** `per-publisher`: messages of one publisher on one channel arrive in publish order. */
  readonly ordering: 'per-publisher' | 'none';
  /** Subscriptions are restored by the adapter after a reconnect. */
  readonly resubscribes: boolean;
  readonly maxPayloadBytes: number;
}

export type PubSubListener = (payload: string) => void;

export interface PubSubAdapter extends AsyncDisposable {
  readonly capabilities: PubSubCapabilities;
  connect(): Promise<void>;
  /** One listener per channel per adapter instance; the manager fans out to handlers. */
  subscribe(channel: string, listener: PubSubListener): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  publish(channel: string, payload: string): Promise<void>;
  /**
   * Optional: the adapter calls `listener` after it regained a lost connection, so the layers above
   * know messages may have been missed (the sync layer runs its resync hooks).
   */
  onReconnect?(listener: () => void): void;
  close(): Promise<void>;
}
