import { invalidArgument } from '../errors.js';

export interface EventQueueBackoffOptions {
  /** Delay ceiling of the first retry in ms. Default 1000. */
  baseMs?: number;
  /** No retry waits longer than this, in ms. Default 60 000. */
  maxMs?: number;
  /** Growth per attempt. Default 2. */
  factor?: number;
}

/** Backoff options with every default filled in. */
export interface ResolvedBackoff {
  readonly baseMs: number;
  readonly maxMs: number;
  readonly factor: number;
}

export const DEFAULT_BACKOFF: ResolvedBackoff = { baseMs: 1_000, maxMs: 60_000, factor: 2 };

/** Validates backoff options and fills in the defaults; throws INVALID_ARGUMENT. */
export function resolveBackoff(options: EventQueueBackoffOptions | undefined): ResolvedBackoff {
  if (options === undefined) return DEFAULT_BACKOFF;
  if (typeof options !== 'object' || options === null) throw invalidArgument('backoff must be an object');
  const baseMs = options.baseMs ?? DEFAULT_BACKOFF.baseMs;
  const maxMs = options.maxMs ?? Math.max(DEFAULT_BACKOFF.maxMs, baseMs);
  const factor = options.factor ?? DEFAULT_BACKOFF.factor;
  if (typeof baseMs !== 'number' || !Number.isFinite(baseMs) || baseMs < 0) {
    throw invalidArgument('backoff.baseMs must be a non-negative number of milliseconds');
  }
  if (typeof maxMs !== 'number' || !Number.isFinite(maxMs) || maxMs < baseMs) {
    throw invalidArgument('backoff.maxMs must be a number of milliseconds no smaller than backoff.baseMs');
  }
  if (typeof factor !== 'number' || !Number.isFinite(factor) || factor < 1) {
    throw invalidArgument('backoff.factor must be a finite number >= 1');
  }
  return { baseMs, maxMs, factor };
}

/** The ceiling for the retry after failed attempt `attempt` (1-based): min(maxMs, baseMs * factor^(attempt-1)). */
export function backoffCeiling(attempt: number, backoff: ResolvedBackoff): number {
  // factor ** large overflows to Infinity, which min() turns back into maxMs.
  return Math.min(backoff.maxMs, backoff.baseMs * backoff.factor ** Math.max(0, attempt - 1));
}

/**
 * Delay before retrying after failed attempt `attempt`, with "equal jitter": a value in
 * [ceiling/2, ceiling], rounded to whole ms. Below the cap retries keep growing (with factor >= 2
 * every lower bound is at least the previous ceiling), and workers that failed together do not
 * retry in lockstep.
 */
export function computeBackoffDelay(
  attempt: number,
  options?: EventQueueBackoffOptions,
  random: () => number = Math.random,
): number {
  return jitteredDelay(attempt, resolveBackoff(options), random);
}

/** computeBackoffDelay for options already validated by resolveBackoff. */
export function jitteredDelay(
  attempt: number,
  backoff: ResolvedBackoff,
  random: () => number = Math.random,
): number {
  const ceiling = backoffCeiling(attempt, backoff);
  const half = ceiling / 2;
  return Math.min(ceiling, Math.round(half + random() * half));
}
