import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createAdapterBundle } from '../src/index.js';

function part(name: string, log: string[]) {
  log.push(`make ${name}`);
  return {
    name,
    close: async () => {
      log.push(`close ${name}`);
    },
  };
}

describe('createAdapterBundle', () => {
  it('makes each part once, on first read, and closes the parts made, then the shared connections', async () => {
    const log: string[] = [];
    const bundle = createAdapterBundle({
      parts: { a: () => part('a', log), b: () => part('b', log) },
      closeShared: async () => {
        log.push('close shared');
      },
      extra: { connections: 'conns' },
      kind: 'test',
      label: 'TestAdapters { prefix: "p" }',
    });
    expect(log).toEqual([]);
    expect(bundle.connections).toBe('conns');
    // Neither inspection nor JSON makes a part.
    expect(inspect(bundle)).toBe('TestAdapters { prefix: "p" }');
    expect(JSON.stringify(bundle)).toBe('{"adapter":"test","parts":0}');
    expect(log).toEqual([]);
    expect(bundle.a.name).toBe('a');
    expect(bundle.a).toBe(bundle.a);
    expect(log).toEqual(['make a']);
    await Promise.all([bundle.close(), bundle[Symbol.asyncDispose]()]);
    expect(log).toEqual(['make a', 'close a', 'close shared']);
  });

  it('a part whose factory throws is made again on the next read', () => {
    let calls = 0;
    const bundle = createAdapterBundle({
      parts: {
        a: () => {
          calls += 1;
          if (calls === 1) throw new Error('closed');
          return { close: async () => {} };
        },
      },
      closeShared: async () => {},
      extra: {},
      kind: 'test',
      label: 'TestAdapters',
    });
    expect(() => bundle.a).toThrow('closed');
    expect(bundle.a).toBeDefined();
    expect(calls).toBe(2);
  });
});
