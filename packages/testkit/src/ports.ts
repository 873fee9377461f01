import { spawnSync } from 'node:child_process';
import { connect, createServer } from 'node:net';

/** A free TCP port on 127.0.0.1 (asks the OS for one, then releases it): for servers a test starts itself. */
export function sparePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** True when something accepts TCP connections on 127.0.0.1:`port` right now. */
export function portAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * True when every binary runs (`<bin> --version`); otherwise warns once that the tests needing them
 * (`purpose`) are skipped. For tests that start their own servers.
 */
export function binariesAvailable(binaries: readonly string[], purpose: string): boolean {
  const missing = binaries.filter((bin) => spawnSync(bin, ['--version'], { stdio: 'ignore' }).status !== 0);
  if (missing.length > 0) console.warn(`skipping ${purpose}: ${missing.join(' / ')} not on PATH`);
  return missing.length === 0;
}
