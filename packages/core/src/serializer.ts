import { ClusterError } from './errors.js';

/**
 * The one codec every adapter uses, memory included, so a value behaves the same on every backend.
 * Wire form: JSON in which values JSON cannot carry are tagged objects `{"$t": kind, "v": ...}`.
 * A plain object that itself has a `$t` key is wrapped (`{"$t":"o"}`) so it can never be mistaken
 * for a tag. Decoding only ever builds plain objects, arrays and the listed built-ins, so payloads
 * such as `{"__proto__": ...}` stay ordinary own keys.
 */
export interface Serializer {
  readonly maxPayloadBytes: number;
  /** Encodes a value; throws SERIALIZATION or PAYLOAD_TOO_LARGE. */
  encode(value: unknown): string;
  /** Decodes what `encode` produced; throws SERIALIZATION on foreign text. */
  decode(text: string): unknown;
}

export interface SerializerOptions {
  /** Largest encoded payload in bytes (UTF-8). Default 1 MiB, the NATS default message size. */
  maxPayloadBytes?: number;
}

export const DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024;
const TAG = '$t';

function fail(message: string): never {
  throw new ClusterError('SERIALIZATION', message);
}

function encodeNumber(n: number): unknown {
  if (Number.isFinite(n)) return Object.is(n, -0) ? { [TAG]: 'n', v: '-0' } : n;
  return { [TAG]: 'n', v: String(n) };
}

/**
 * True when `JSON.stringify(value)` is already the exact wire form: only finite numbers (no -0),
 * strings, booleans, null, arrays and plain objects without a `$t` key. Allocation-free; deep or
 * cyclic values fall back to the full walk, which detects cycles.
 */
function isPlainJson(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(value) && !Object.is(value, -0);
    case 'object':
      break;
    default:
      return false;
  }
  if (value === null) return true;
  if (depth > 32) return false;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (!isPlainJson(value[i], depth + 1)) return false;
    return true;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const key in value) {
    if (key === TAG || !isPlainJson((value as Record<string, unknown>)[key], depth + 1)) return false;
  }
  return true;
}

/** Returned by `copyPlainJson` for values that need the full codec. */
export const NOT_PLAIN: unique symbol = Symbol('not plain JSON');

/**
 * For in-process stores: a deep copy of a plain-JSON value (see isPlainJson) that equals
 * `decode(encode(value))`, or NOT_PLAIN. `budget.bytes` is decreased by an upper bound of the
 * value's encoded size (6 bytes per string unit covers escapes and UTF-8), so a caller can keep the
 * codec's size limit exact: only when the bound runs out does it need the real encoding.
 */
export function copyPlainJson(value: unknown, budget: { bytes: number }, depth = 0): unknown {
  switch (typeof value) {
    case 'string':
      budget.bytes -= 2 + value.length * 6;
      return value;
    case 'boolean':
      budget.bytes -= 5;
      return value;
    case 'number':
      budget.bytes -= 24;
      return Number.isFinite(value) && !Object.is(value, -0) ? value : NOT_PLAIN;
    case 'object':
      break;
    default:
      return NOT_PLAIN;
  }
  if (value === null) {
    budget.bytes -= 4;
    return null;
  }
  if (depth > 32) return NOT_PLAIN;
  if (Array.isArray(value)) {
    budget.bytes -= 2 + value.length;
    const out = new Array(value.length);
    for (let i = 0; i < value.length; i++) {
      const item = copyPlainJson(value[i], budget, depth + 1);
      if (item === NOT_PLAIN) return NOT_PLAIN;
      out[i] = item;
    }
    return out;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return NOT_PLAIN;
  const out: Record<string, unknown> = {};
  budget.bytes -= 2;
  for (const key in value) {
    if (key === TAG) return NOT_PLAIN;
    const item = copyPlainJson((value as Record<string, unknown>)[key], budget, depth + 1);
    if (item === NOT_PLAIN) return NOT_PLAIN;
    budget.bytes -= 4 + key.length * 6;
    if (key === '__proto__')
      Object.defineProperty(out, key, { value: item, enumerable: true, writable: true, configurable: true });
    else out[key] = item;
  }
  return out;
}

function toWire(value: unknown, path: Set<object>): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      return encodeNumber(value);
    case 'bigint':
      return { [TAG]: 'bi', v: value.toString() };
    case 'undefined':
      return { [TAG]: 'u' };
    case 'function':
      return fail('functions cannot be serialized');
    case 'symbol':
      return fail('symbols cannot be serialized');
  }
  if (value === null) return null;
  const obj = value as object;
  if (path.has(obj)) fail('circular structures cannot be serialized');
  path.add(obj);
  try {
    if (Array.isArray(obj)) {
      const out = new Array(obj.length);
      for (let i = 0; i < obj.length; i++) out[i] = toWire(obj[i], path);
      return out;
    }
    if (obj instanceof Date) {
      const t = obj.getTime();
      return { [TAG]: 'd', v: Number.isNaN(t) ? null : t };
    }
    if (obj instanceof Map) {
      const entries: unknown[] = [];
      for (const [k, v] of obj) entries.push([toWire(k, path), toWire(v, path)]);
      return { [TAG]: 'm', v: entries };
    }
    if (obj instanceof Set) {
      const items: unknown[] = [];
      for (const v of obj) items.push(toWire(v, path));
      return { [TAG]: 's', v: items };
    }
    if (obj instanceof Uint8Array) {
      const kind = Buffer.isBuffer(obj) ? 'buf' : 'u8';
      return { [TAG]: kind, v: Buffer.from(obj.buffer, obj.byteOffset, obj.byteLength).toString('base64') };
    }
    if (obj instanceof RegExp) return { [TAG]: 're', v: [obj.source, obj.flags] };
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) {
      if (typeof (obj as { toJSON?: unknown }).toJSON === 'function') {
        return toWire((obj as { toJSON(): unknown }).toJSON(), path);
      }
      const name = (proto?.constructor as { name?: string } | undefined)?.name ?? 'object';
      return fail(`instances of ${name} cannot be serialized losslessly; pass plain data`);
    }
    const out: Record<string, unknown> = {};
    let tagged = false;
    for (const key of Object.keys(obj)) {
      if (key === TAG) tagged = true;
      // defineProperty keeps `__proto__` an own key instead of invoking the prototype setter.
      Object.defineProperty(out, key, {
        value: toWire((obj as Record<string, unknown>)[key], path),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return tagged ? { [TAG]: 'o', v: out } : out;
  } finally {
    path.delete(obj);
  }
}

function revive(value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = revive(value[i]);
    return value;
  }
  const obj = value as Record<string, unknown>;
  if (Object.hasOwn(obj, TAG)) {
    const v = obj.v;
    switch (obj[TAG]) {
      case 'u':
        return undefined;
      case 'n':
        return v === '-0' ? -0 : Number(v);
      case 'bi':
        return BigInt(v as string);
      case 'd':
        return new Date(v === null ? Number.NaN : (v as number));
      case 'm':
        return new Map((v as [unknown, unknown][]).map(([k, x]) => [revive(k), revive(x)]));
      case 's':
        return new Set((v as unknown[]).map(revive));
      case 'buf':
        return Buffer.from(v as string, 'base64');
      case 'u8':
        return new Uint8Array(Buffer.from(v as string, 'base64'));
      case 're':
        return new RegExp((v as string[])[0]!, (v as string[])[1]);
      case 'o':
        return reviveFields(v as Record<string, unknown>);
      default:
        return fail(`unknown tag ${JSON.stringify(obj[TAG])} in payload`);
    }
  }
  return reviveFields(obj);
}

function reviveFields(obj: Record<string, unknown>): Record<string, unknown> {
  // JSON.parse made every key (including `__proto__`) an own data property, so assignment stays local.
  for (const key of Object.keys(obj)) obj[key] = revive(obj[key]);
  return obj;
}

export function createSerializer(options: SerializerOptions = {}): Serializer {
  const maxPayloadBytes = options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
  if (!Number.isInteger(maxPayloadBytes) || maxPayloadBytes <= 0) {
    throw new ClusterError('INVALID_ARGUMENT', 'maxPayloadBytes must be a positive integer');
  }
  return {
    maxPayloadBytes,
    encode(value) {
      const text = isPlainJson(value, 0) ? JSON.stringify(value) : JSON.stringify(toWire(value, new Set()));
      // A UTF-8 byte is at most 3 per UTF-16 unit, so short texts skip the exact count.
      if (text.length * 3 > maxPayloadBytes && Buffer.byteLength(text) > maxPayloadBytes) {
        throw new ClusterError(
          'PAYLOAD_TOO_LARGE',
          `payload is ${Buffer.byteLength(text)} bytes, the limit is ${maxPayloadBytes}`,
        );
      }
      return text;
    },
    decode(text) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (cause) {
        throw new ClusterError('SERIALIZATION', 'payload is not valid serialized data', { cause });
      }
      // Untagged payloads are plain JSON already: skip the walk on the hot path.
      return text.includes('"$t"') ? revive(parsed) : parsed;
    },
  };
}

export const defaultSerializer: Serializer = createSerializer();
