/**
 * One error family for every part and every adapter. `code` is stable within a major version;
 * `ClusterError.is()` uses a global symbol marker so it works when an application ends up with two
 * copies of @cluster/core (an adapter bringing its own).
 */
export type ClusterErrorCode =
  | 'INVALID_ARGUMENT'
  | 'SERIALIZATION'
  | 'PAYLOAD_TOO_LARGE'
  | 'CLOSED'
  | 'NOT_STARTED'
  | 'ABORTED'
  | 'TIMEOUT'
  | 'TASK_TIMEOUT'
  | 'ALREADY_SUBSCRIBED'
  | 'NOT_FOUND'
  | 'LOCK_NOT_ACQUIRED'
  | 'LOCK_LOST'
  | 'LOCK_NOT_HELD'
  | 'BACKEND_UNAVAILABLE'
  | 'NOT_SUPPORTED';

const MARKER = Symbol.for('@cluster/core.error');

export interface ClusterErrorOptions {
  cause?: unknown;
  /** Structured, credential-free context for logs (key, channel, ...). */
  details?: Record<string, unknown>;
}

export class ClusterError extends Error {
  readonly code: ClusterErrorCode;
  readonly details: Record<string, unknown> | undefined;
  readonly [MARKER] = true;

  constructor(code: ClusterErrorCode, message: string, options: ClusterErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ClusterError';
    this.code = code;
    this.details = options.details;
  }

  /** True for any ClusterError, from any copy of @cluster/core; narrows to one code when given. */
  static is(error: unknown, code?: ClusterErrorCode): error is ClusterError {
    if (typeof error !== 'object' || error === null || (error as any)[MARKER] !== true) return false;
    return code === undefined || (error as ClusterError).code === code;
  }
}

/** Thrown when a lock cannot be had: held by someone else (`tryAcquire`) or the wait timed out. */
export class LockAcquireError extends ClusterError {
  constructor(message: string, options: ClusterErrorOptions = {}) {
    super('LOCK_NOT_ACQUIRED', message, options);
    this.name = 'LockAcquireError';
  }
}

/** Thrown when a lease was lost while its holder still relied on it. */
export class LockLostError extends ClusterError {
  constructor(message: string, options: ClusterErrorOptions = {}) {
    super('LOCK_LOST', message, options);
    this.name = 'LockLostError';
  }
}

/** NocoBase-compatible check: `if (isLockAcquireError(e)) return;` for skip-if-busy code. */
export function isLockAcquireError(error: unknown): error is ClusterError {
  return ClusterError.is(error, 'LOCK_NOT_ACQUIRED');
}

export function invalidArgument(message: string, details?: Record<string, unknown>): ClusterError {
  return new ClusterError('INVALID_ARGUMENT', message, details ? { details } : {});
}

export function closedError(what: string): ClusterError {
  return new ClusterError('CLOSED', `${what} is closed`);
}

/** The error a cancelled wait rejects with: the signal's reason when it is a ClusterError, else ABORTED. */
export function abortError(signal: AbortSignal, what: string): ClusterError {
  const reason = signal.reason;
  if (ClusterError.is(reason)) return reason;
  return new ClusterError('ABORTED', `${what} was aborted`, { cause: reason });
}
