import { afterEach, describe, expect, it } from 'vitest';
import { redactUrl, requireServer, serverReachable } from '../src/servers.js';

const unreachable = {
  name: 'Nothing',
  env: 'NOTHING_URL',
  defaultUrl: 'redis://127.0.0.1:1',
  defaultPort: 1,
  composeService: 'nothing',
};
const saved = process.env.CI;
afterEach(() => {
  if (saved === undefined) delete process.env.CI;
  else process.env.CI = saved;
});

describe('server checks', () => {
  it('tells reachable from unreachable', async () => {
    const { createServer } = await import('node:net');
    const server = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as { port: number }).port;
    expect(await serverReachable(`redis://127.0.0.1:${port}`, 6379)).toBe(true);
    server.close();
    expect(await serverReachable('redis://127.0.0.1:1', 6379)).toBe(false);
  });

  it('skips outside CI and fails in CI when a server is unreachable', async () => {
    delete process.env.CI;
    expect(await requireServer(unreachable)).toBe(false);
    process.env.CI = 'true';
    await expect(requireServer(unreachable)).rejects.toThrow(
      /Nothing is not reachable.*docker compose up -d nothing/,
    );
  });

  it('never prints credentials', () => {
    expect(redactUrl('amqp://guest:secret@127.0.0.1:5672/vh')).toBe('amqp://***@127.0.0.1:5672/vh');
  });
});
