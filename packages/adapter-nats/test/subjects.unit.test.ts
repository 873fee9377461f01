import { describe, expect, it } from 'vitest';
import { parseVersion } from '../src/connection.js';
import { decodeTaskMeta, encodeTaskMeta } from '../src/queue/names.js';
import { decodeKvKey, kvKey, pubSubSubject, subjectToken } from '../src/subjects.js';

const NASTY = [
  'a',
  'a.b',
  '*',
  '>',
  'a b',
  'tab\there',
  'new\nline',
  '%2E',
  '=2E',
  '/002E',
  'ünïcødé',
  '日本語',
  '😀',
  '\uD800',
  'app:eu.orders.*',
  '',
];

describe('subject and key encoding', () => {
  it('a subject token never holds a separator, a wildcard or whitespace, and never collides', () => {
    const seen = new Map<string, string>();
    for (const name of NASTY.filter(Boolean)) {
      const token = subjectToken(name);
      expect(token).not.toMatch(/[.*>\s]/);
      expect(token.length).toBeGreaterThan(0);
      expect(seen.get(token) ?? name).toBe(name);
      seen.set(token, name);
    }
    expect(pubSubSubject('p', 'a.*.>')).toBe('p.ps.a%2E%2A%2E%3E');
    expect(() => subjectToken('')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => pubSubSubject('p', 'x'.repeat(5_000))).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
  });

  it('a KV key uses only the KV alphabet without dots, round-trips and keeps prefixes', () => {
    for (const name of NASTY) {
      const key = kvKey(name);
      expect(key).toMatch(/^[-/_=A-Za-z0-9]*$/);
      expect(decodeKvKey(key)).toBe(name);
      for (let cut = 0; cut <= name.length; cut++)
        expect(key.startsWith(kvKey(name.slice(0, cut)))).toBe(true);
    }
    expect(decodeKvKey('bad.key')).toBeUndefined();
    expect(decodeKvKey('=G1')).toBeUndefined();
  });

  it('task metadata survives ids holding the separator', () => {
    const meta = {
      id: 'a;b;;c',
      maxRetries: 3,
      timeout: 1_500,
      publishedAt: 1_700_000_000_000,
      notBefore: 0,
    };
    expect(decodeTaskMeta(encodeTaskMeta(meta))).toEqual(meta);
    expect(decodeTaskMeta('garbage')).toBeUndefined();
  });

  it('parses server versions for the per-key TTL check', () => {
    expect(parseVersion('2.9.10')).toEqual([2, 9, 10]);
    expect(parseVersion('2.11.0-beta.1')).toEqual([2, 11, 0]);
    expect(parseVersion(undefined)).toEqual([0, 0, 0]);
  });
});
