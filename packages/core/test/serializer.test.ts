import { ClusterError, createSerializer, defaultSerializer } from '@cluster/core';
import { describe, expect, it } from 'vitest';

const roundTrip = (value: unknown) => defaultSerializer.decode(defaultSerializer.encode(value));

describe('serializer', () => {
  it('keeps JSON values as plain JSON on the wire', () => {
    expect(defaultSerializer.encode({ a: [1, 'x', null, true] })).toBe('{"a":[1,"x",null,true]}');
  });

  it('round-trips the built-ins JSON loses', () => {
    const value = {
      date: new Date('2020-02-02T02:02:02.002Z'),
      invalid: new Date(Number.NaN),
      map: new Map<unknown, unknown>([[{ k: 1 }, new Map([[1n, 'big']])]]),
      set: new Set([1, 'a', null]),
      big: -(2n ** 70n),
      u8: new Uint8Array([1, 2, 3]),
      buf: Buffer.from([255, 0]),
      regexp: /a+b/gi,
      special: [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, undefined],
      nested: { deeper: { deepest: [new Set([new Date(5)])] } },
    };
    const back = roundTrip(value) as typeof value;
    expect(back).toEqual(value);
    expect(Number.isNaN(back.invalid.getTime())).toBe(true);
    expect(Object.is(back.special[3], -0)).toBe(true);
    expect(back.special).toHaveLength(5);
    expect(Buffer.isBuffer(back.buf)).toBe(true);
    expect(Buffer.isBuffer(back.u8)).toBe(false);
    expect(back.regexp.flags).toBe('gi');
  });

  it('does not confuse user objects that use the tag key', () => {
    const value = { $t: 'd', v: 0, inner: { $t: 'm', v: [] } };
    expect(roundTrip(value)).toEqual(value);
  });

  it('never pollutes prototypes when decoding', () => {
    const hostile = '{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}}}';
    const decoded = defaultSerializer.decode(hostile) as Record<string, unknown>;
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(decoded)).toBe(Object.prototype);
    expect(Object.hasOwn(decoded, '__proto__')).toBe(true);
    const tagged = defaultSerializer.decode('{"__proto__":{"$t":"s","v":[1]},"x":{"$t":"u"}}') as Record<
      string,
      unknown
    >;
    expect(Object.hasOwn(tagged, '__proto__')).toBe(true);
    expect(Object.getOwnPropertyDescriptor(tagged, '__proto__')?.value).toBeInstanceOf(Set);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const encoded = defaultSerializer.encode(JSON.parse(hostile));
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(defaultSerializer.decode(encoded)).toEqual(JSON.parse(hostile));
  });

  it('fails with a typed error on functions, symbols, cycles and class instances', () => {
    const cyclic: unknown[] = [];
    cyclic.push(cyclic);
    class Point {
      constructor(readonly x: number) {}
    }
    for (const bad of [() => 1, Symbol('x'), { nested: [cyclic] }, new Point(1), new WeakMap()]) {
      let error: unknown;
      try {
        defaultSerializer.encode(bad);
      } catch (e) {
        error = e;
      }
      expect(ClusterError.is(error, 'SERIALIZATION')).toBe(true);
    }
  });

  it('allows shared (non-cyclic) references', () => {
    const shared = { a: 1 };
    expect(roundTrip([shared, shared])).toEqual([{ a: 1 }, { a: 1 }]);
  });

  it('uses toJSON of foreign objects', () => {
    class Money {
      toJSON() {
        return { cents: 5 };
      }
    }
    expect(roundTrip({ m: new Money() })).toEqual({ m: { cents: 5 } });
  });

  it('enforces the configured payload limit in UTF-8 bytes', () => {
    const small = createSerializer({ maxPayloadBytes: 10 });
    expect(small.encode('12345678')).toBe('"12345678"');
    let error: unknown;
    try {
      small.encode('é'.repeat(5));
    } catch (e) {
      error = e;
    }
    expect(ClusterError.is(error, 'PAYLOAD_TOO_LARGE')).toBe(true);
    expect(() => createSerializer({ maxPayloadBytes: 0 })).toThrow(ClusterError);
  });

  it('rejects foreign text with a typed error', () => {
    expect(() => defaultSerializer.decode('{not json')).toThrow(ClusterError);
    expect(() => defaultSerializer.decode('{"$t":"nope"}')).toThrow(ClusterError);
  });
});

describe('ClusterError', () => {
  it('is recognised across copies through its global marker', () => {
    const foreign = Object.assign(new Error('x'), {
      [Symbol.for('@cluster/core.error')]: true,
      code: 'CLOSED',
    });
    expect(ClusterError.is(foreign)).toBe(true);
    expect(ClusterError.is(foreign, 'CLOSED')).toBe(true);
    expect(ClusterError.is(foreign, 'TIMEOUT')).toBe(false);
    expect(ClusterError.is(new Error('plain'))).toBe(false);
    const cause = new Error('root');
    const error = new ClusterError('BACKEND_UNAVAILABLE', 'down', { cause });
    expect(error.cause).toBe(cause);
    expect(error.code).toBe('BACKEND_UNAVAILABLE');
  });
});
