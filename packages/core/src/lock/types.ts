/**
 * The lock adapter contract. An adapter grants leases with fencing tokens and wakes waiters; the
 * LockManager builds handles, lease-loss signals and renewal on top. Keys reaching the adapter are
 * already namespaced by app.
 */
export interface LockCapabilities {
  /** Holders in other processes are excluded. */
  readonly crossProcess: boolean;
  /** Tokens and leases survive a restart of the backend. */
  readonly durable: boolean;
  /** Every grant carries a token that strictly increases per key. */
  readonly fencing: boolean;
  /** `fifo`: waiters are served in arrival order. `none`: no order promised. */
  readonly fairness: 'fifo' | 'none';
  /** Waiters are woken when the key is released, not only by polling. */
  readonly wakeOnRelease: boolean;
}

export interface LockGrant {
  /** Fencing token: strictly greater than every earlier grant's token for this key. */
  readonly token: number;
  /**
   * When the lease ends on the local clock (Date.now() ms). Adapters must err early: a remote
   * adapter counts from before it sent the request.
   */
  readonly expiresAt: number;
}

export interface LockAcquireRequest {
  /** Unique per acquisition; release and extend must present it. */
  readonly owner: string;
  /** Lease length in ms. */
  readonly ttl: number;
  /** How long to wait for the key in ms; 0 means a single attempt. */
  readonly waitTimeout: number;
  readonly signal?: AbortSignal | undefined;
}

export interface LockAdapter extends AsyncDisposable {
  readonly capabilities: LockCapabilities;
  connect(): Promise<void>;
  /**
   * Resolves a grant, or `null` when the key stayed held for `waitTimeout`. Rejects with an
   * ABORTED ClusterError when the signal fires. Whenever it does not resolve a grant, it leaves the
   * key untouched (no lease held, no waiter left behind).
   */
  acquire(key: string, request: LockAcquireRequest): Promise<LockGrant | null>;
  /** Releases if `owner`/`token` still hold the key; false otherwise (the key is then untouched). */
  release(key: string, owner: string, token: number): Promise<boolean>;
  /** Extends the lease to `ttl` from now if still held by owner/token; `null` when it is not. */
  extend(key: string, owner: string, token: number, ttl: number): Promise<LockGrant | null>;
  /** Rejects every pending `acquire` of this adapter with a CLOSED ClusterError, then disconnects. */
  close(): Promise<void>;
  /**
   * Optional synchronous fast path for in-process adapters: one attempt to take a free key
   * (`null` when held), with the same effect as `acquire` with `waitTimeout: 0`. The manager uses
   * it to skip promise round trips; remote adapters leave it out.
   */
  acquireNow?(key: string, owner: string, ttl: number): LockGrant | null;
  /** Optional synchronous `release`, same result. */
  releaseNow?(key: string, owner: string, token: number): boolean;
}
