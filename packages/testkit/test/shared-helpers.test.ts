import { createServer } from 'node:net';
import { ClusterError } from '@cluster/core';
import { describe, expect, it } from 'vitest';
import {
  binariesAvailable,
  clusterErrorOf,
  expectNoSecrets,
  PASSWORD_FORMS,
  portAccepts,
  SPECIAL_PASSWORD,
  secretExposures,
  sparePort,
} from '../src/index.js';

describe('credential-leak checks', () => {
  it('find a secret in a nested cause, a stack, inspect and JSON output', () => {
    const leaky = new ClusterError('BACKEND_UNAVAILABLE', 'connect failed', {
      cause: new Error(`auth to redis://u:${encodeURIComponent(SPECIAL_PASSWORD)}@h failed`),
    });
    expect(() => expectNoSecrets('leaky error', leaky)).toThrow(/leaks a secret/);
    expect(() => expectNoSecrets('leaky object', { options: { password: SPECIAL_PASSWORD } })).toThrow();
    expect(secretExposures(leaky).some((text) => text.includes(PASSWORD_FORMS[2]!))).toBe(true);
    // A clean value passes.
    expectNoSecrets('clean error', new ClusterError('TIMEOUT', 'redis://***@h timed out'));
  });

  it('clusterErrorOf resolves the ClusterError and fails on success or a foreign error', async () => {
    const error = await clusterErrorOf(Promise.reject(new ClusterError('TIMEOUT', 'late')));
    expect(error.code).toBe('TIMEOUT');
    await expect(clusterErrorOf(Promise.resolve(1))).rejects.toThrow('expected a failure');
    await expect(clusterErrorOf(Promise.reject(new Error('plain')))).rejects.toThrow();
  });
});

describe('ports and binaries', () => {
  it('sparePort gives a port nothing listens on, that a server can then take', async () => {
    const port = await sparePort();
    expect(await portAccepts(port)).toBe(false);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    expect(await portAccepts(port)).toBe(true);
    await new Promise((resolve) => server.close(resolve));
  });

  it('binariesAvailable is false when one binary is missing', () => {
    expect(binariesAvailable(['node'], 'node tests')).toBe(true);
    expect(binariesAvailable(['node', 'no-such-binary-cluster-test'], 'tests needing it')).toBe(false);
  });
});
