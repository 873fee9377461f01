import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { hashTag } from '../src/keys.js';
import { lockKeys, SCRIPTS } from '../src/lock/scripts.js';

/** CRC16-CCITT (XMODEM: poly 0x1021, init 0), as the Redis Cluster specification defines the key hash. */
function crc16(data: Buffer): number {
  let crc = 0;
  for (const byte of data) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit += 1) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
  }
  return crc;
}

/** HASH_SLOT = CRC16(hash tag or whole key) mod 16384, on the key's UTF-8 bytes. */
function slotOf(key: string): number {
  return crc16(Buffer.from(hashTag(key), 'utf8')) % 16_384;
}

// ioredis's own slot function, reached through its dependency tree (not a dependency of ours).
const clusterKeySlot = createRequire(createRequire(import.meta.url).resolve('ioredis'))(
  'cluster-key-slot',
) as (key: string) => number;

const names = [
  'app:orders',
  'shop:a*',
  'shop:[a]',
  'shop:a%3Ab',
  'shop:{tagged}',
  'shop:}{',
  'shop:{}',
  'shop:__proto__',
  'shop:ключ/鍵',
  'shop:😀',
  `shop:${'x'.repeat(500)}`,
];
const prefixes = ['cluster', 't1-2-3', 'a:b', 'app*'];

describe('lock key layout on Redis Cluster', () => {
  it('computes the specification’s slots (test vectors and ioredis agree)', () => {
    expect(crc16(Buffer.from('123456789'))).toBe(0x31c3);
    expect(slotOf('{user1000}.following')).toBe(slotOf('{user1000}.followers'));
    expect(slotOf('foo{}{bar}')).toBe(crc16(Buffer.from('foo{}{bar}')) % 16_384);
    expect(slotOf('foo{{bar}}zap')).toBe(crc16(Buffer.from('{bar')) % 16_384);
    // Slots CLUSTER KEYSLOT returns on redis-server 7.0 (cluster-enabled).
    const server: Record<string, number> = {
      'foo{}{bar}': 8363,
      'foo{{bar}}zap': 4015,
      '123456789': 12739,
      ключ: 10303,
      '{user1000}.following': 3443,
    };
    for (const [key, slot] of Object.entries(server)) expect(slotOf(key), key).toBe(slot);
    // cluster-key-slot 1.1.1 differs from the server on an empty first tag ('foo{}{bar}': 4015);
    // our keys never have one (taggedKey escapes braces in names), so it agrees on all of them.
    for (const key of ['123456789', '{user1000}.following', 'foo{{bar}}zap', 'ключ', 'a{b}c']) {
      expect(slotOf(key), key).toBe(clusterKeySlot(key));
    }
  });

  it('every script’s KEYS fall in one slot, the slot of the lock name', () => {
    let checked = 0;
    for (const prefix of prefixes) {
      for (const name of names) {
        const keys = lockKeys(prefix, name);
        const slots = new Set<number>();
        for (const script of Object.values(SCRIPTS)) {
          const scriptKeys = script.keys.map((k) => keys[k]);
          expect(scriptKeys.length, script.name).toBeGreaterThan(0);
          const scriptSlots = new Set(scriptKeys.map(slotOf));
          expect(scriptSlots.size, `${script.name} on ${prefix} / ${name}`).toBe(1);
          for (const key of scriptKeys) {
            expect(slotOf(key)).toBe(clusterKeySlot(key));
            slots.add(slotOf(key));
          }
          checked += 1;
        }
        // The lock, fence and line of one name share a slot, whichever script touches them.
        expect(slots.size, `${prefix} / ${name}`).toBe(1);
      }
    }
    expect(checked).toBe(prefixes.length * names.length * Object.keys(SCRIPTS).length);
  });

  it('different names spread over slots, and the keys of two names never collide', () => {
    const slots = new Set<number>();
    const all = new Set<string>();
    for (let i = 0; i < 200; i += 1) {
      const keys = lockKeys('cluster', `app:lock-${i}`);
      slots.add(slotOf(keys.lock));
      expect(keys.all).toEqual([keys.lock, keys.fence, keys.waiters, keys.alive]);
      for (const key of keys.all) all.add(key);
    }
    expect(all.size).toBe(200 * 4);
    expect(slots.size).toBeGreaterThan(150);
  });
});
