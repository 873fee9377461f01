import { invalidArgument } from '../errors.js';

// Control characters break line-based protocols and logs; everything else is left to adapters to encode.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f]/;

export const MAX_NAME_LENGTH = 512;
export const MAX_KEY_LENGTH = 1024;

/** Channel, app, cache and lock names: non-empty strings without control characters. */
export function assertName(value: unknown, what: string): asserts value is string {
  if (typeof value !== 'string') throw invalidArgument(`${what} must be a string, got ${typeof value}`);
  if (value.length === 0) throw invalidArgument(`${what} must not be empty`);
  if (value.length > MAX_NAME_LENGTH)
    throw invalidArgument(`${what} is longer than ${MAX_NAME_LENGTH} characters`);
  if (CONTROL.test(value)) throw invalidArgument(`${what} must not contain control characters`);
}

/** Cache keys: any non-empty string up to MAX_KEY_LENGTH characters. */
export function assertKey(value: unknown, what = 'key'): asserts value is string {
  if (typeof value !== 'string') throw invalidArgument(`${what} must be a string, got ${typeof value}`);
  if (value.length === 0) throw invalidArgument(`${what} must not be empty`);
  if (value.length > MAX_KEY_LENGTH)
    throw invalidArgument(`${what} is longer than ${MAX_KEY_LENGTH} characters`);
}

/**
 * Escapes one segment of a namespaced name so that `:` only ever separates segments: app `a:b`
 * and app `a` with prefix `b` can never produce the same key, and one namespace is never a
 * string prefix of another's.
 */
export function segment(value: string): string {
  if (!value.includes('%') && !value.includes(':')) return value;
  return value.replace(/%/g, '%25').replace(/:/g, '%3A');
}

/** `app:part:part` with every segment escaped. */
export function namespaced(...parts: string[]): string {
  let out = segment(parts[0] ?? '');
  for (let i = 1; i < parts.length; i++) out += `:${segment(parts[i]!)}`;
  return out;
}

export function assertPositiveMs(value: unknown, what: string, allowZero = false): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    throw invalidArgument(
      `${what} must be a ${allowZero ? 'non-negative' : 'positive'} number of milliseconds`,
    );
  }
}

export function assertOptionalMs(value: unknown, what: string, allowZero = false): void {
  if (value !== undefined) assertPositiveMs(value, what, allowZero);
}
