import { createHash } from 'node:crypto';
import { ClusterError } from '@cluster/core';

/**
 * Name encoding. Channel, cache and lock names are user input; on NATS a `.` splits tokens, `*` and
 * `>` are wildcards and whitespace ends a subject, so a raw name could widen a subscription or land
 * on someone else's subject. Both encodings below are bijective (two names never share an encoding)
 * and keep prefixes (a name's prefix encodes to a prefix of its encoding), so listing "keys that
 * start with" stays a literal prefix match after decoding.
 */

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters must be escaped
const SUBJECT_UNSAFE = /[%.*>\s\u0000-\u001f\u007f\u0085\u00a0\u2028\u2029]|[\uD800-\uDFFF]/g;

function hex(code: number, width: number): string {
  return code.toString(16).toUpperCase().padStart(width, '0');
}

/**
 * One subject token for any non-empty string: `%`, `.`, `*`, `>`, whitespace, control characters
 * and surrogates (which would not be valid UTF-8 alone) become `%XX` or `%uXXXX`; everything else,
 * other scripts included, stays as it is.
 */
export function subjectToken(name: string): string {
  if (name.length === 0) throw new ClusterError('INVALID_ARGUMENT', 'a subject token must not be empty');
  return name.replace(SUBJECT_UNSAFE, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `%${hex(code, 2)}` : `%u${hex(code, 4)}`;
  });
}

const KV_SAFE = /[A-Za-z0-9_-]/;

/** `A-Z a-z 0-9 - _`, by char code (this runs on every cache and lock call). */
function kvSafe(code: number): boolean {
  return (
    (code >= 0x61 && code <= 0x7a) ||
    (code >= 0x41 && code <= 0x5a) ||
    (code >= 0x30 && code <= 0x39) ||
    code === 0x2d ||
    code === 0x5f
  );
}

/**
 * A KV key for any string. KV keys allow only `[-/_=.A-Za-z0-9]`; here `A-Z a-z 0-9 - _` stay,
 * every other UTF-16 code unit becomes `=XX` (up to 0xFF) or `/XXXX`. No `.` is produced, so a key
 * is always one subject token.
 */
export function kvKey(name: string): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < name.length; i++) {
    const code = name.charCodeAt(i);
    if (kvSafe(code)) continue;
    out += name.slice(from, i) + (code <= 0xff ? `=${hex(code, 2)}` : `/${hex(code, 4)}`);
    from = i + 1;
  }
  return from === 0 ? name : out + name.slice(from);
}

/** Inverse of `kvKey`; undefined for text `kvKey` never produces (keys written by other software). */
export function decodeKvKey(key: string): string | undefined {
  let out = '';
  for (let i = 0; i < key.length; ) {
    const c = key[i]!;
    if (c === '=' || c === '/') {
      const width = c === '=' ? 2 : 4;
      const digits = key.slice(i + 1, i + 1 + width);
      if (digits.length !== width || !/^[0-9A-F]+$/.test(digits)) return undefined;
      out += String.fromCharCode(Number.parseInt(digits, 16));
      i += 1 + width;
    } else if (KV_SAFE.test(c)) {
      out += c;
      i += 1;
    } else return undefined;
  }
  return out;
}

/**
 * Longest encoded name accepted. The server drops a connection whose protocol line exceeds
 * max_control_line (4 KiB by default); a subject plus a reply inbox must stay well under it.
 */
export const MAX_ENCODED_LENGTH = 2_048;

export function assertEncodedLength(encoded: string, what: string): void {
  if (encoded.length > MAX_ENCODED_LENGTH) {
    throw new ClusterError(
      'INVALID_ARGUMENT',
      `${what} is too long for a NATS subject once encoded (${encoded.length} > ${MAX_ENCODED_LENGTH} characters)`,
    );
  }
}

/**
 * A stream or bucket name part for a name of any length: stream names allow no `.`, `*`, `>`,
 * whitespace or path separators, so a name is hashed (the subject keeps the readable form).
 */
export function nameHash(name: string): string {
  return createHash('sha256').update(name).digest('hex').slice(0, 24);
}

/** `<prefix>.ps.<channel>`: the subject of a pub/sub channel. */
export function pubSubSubject(prefix: string, channel: string): string {
  const token = subjectToken(channel);
  assertEncodedLength(token, 'channel');
  return `${prefix}.ps.${token}`;
}
