import { inspect } from 'node:util';
import { ClusterError } from '@cluster/core';
import { expect } from 'vitest';

/** A plain sentinel password for credential-leak tests. */
export const SENTINEL_PASSWORD = 's3ntinel-pw';
/** A password with URL-special characters: it must leak neither raw nor percent-encoded. */
export const SPECIAL_PASSWORD = 'S3nt#l:p/w@x%';
/** The forms in which the two passwords above could show up. */
export const PASSWORD_FORMS: readonly string[] = [
  SENTINEL_PASSWORD,
  SPECIAL_PASSWORD,
  encodeURIComponent(SPECIAL_PASSWORD),
];

/** Every way a secret could escape through a value: inspect, JSON, and an error's message, stack and causes. */
export function secretExposures(value: unknown): string[] {
  const out = [inspect(value, { depth: 10, showHidden: true })];
  try {
    out.push(JSON.stringify(value) ?? '');
  } catch {
    // cycles: inspect covers it
  }
  if (value instanceof Error) {
    out.push(value.message, value.stack ?? '', String(value));
    let cause = (value as { cause?: unknown }).cause;
    while (cause !== undefined) {
      out.push(inspect(cause, { depth: 10 }), String(cause));
      if (cause instanceof Error) out.push(cause.stack ?? '', cause.message);
      cause = cause instanceof Error ? (cause as { cause?: unknown }).cause : undefined;
    }
  }
  return out;
}

/** Fails the test if any of `secrets` appears in any exposure of `value`. */
export function expectNoSecrets(
  what: string,
  value: unknown,
  secrets: readonly string[] = PASSWORD_FORMS,
): void {
  for (const text of secretExposures(value)) {
    for (const secret of secrets)
      expect(text.includes(secret), `${what} leaks a secret: ${text}`).toBe(false);
  }
}

/** Resolves with the ClusterError `promise` rejects with; fails the test if it resolves or rejects otherwise. */
export async function clusterErrorOf(promise: Promise<unknown>): Promise<ClusterError> {
  const error = await promise.then(
    () => {
      throw new Error('expected a failure');
    },
    (e: unknown) => e,
  );
  expect(ClusterError.is(error), String(error)).toBe(true);
  return error as ClusterError;
}
