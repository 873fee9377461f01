import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { MAIN } from './helpers.js';

function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [MAIN, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (chunk) => (stdout += chunk));
    proc.stderr.on('data', (chunk) => (stderr += chunk));
    proc.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('command line', () => {
  it('an unreachable server is one line naming it, without the credentials or a stack trace', async () => {
    // Port 1 on loopback refuses at once; the password is a sentinel that must never be printed.
    const result = await run(['--distributed', '--port', '0'], {
      REDIS_URL: 'redis://demo:s3cr3t-sentinel@127.0.0.1:1',
    });
    expect(result.code).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^demo: Redis \(chosen for cache, pubsub, queue, lock\) is not reachable at redis:\/\/\*\*\*@127\.0\.0\.1:1: connection refused\./,
    );
    expect(result.stderr + result.stdout).not.toContain('s3cr3t-sentinel');
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  it('a bad option is a usage error', async () => {
    const result = await run(['--queue', 'kafka']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--queue must be one of memory, redis, rabbitmq, nats');
  });

  it('memory cannot carry a distributed queue', async () => {
    const result = await run(['--distributed', '--queue', 'memory']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--queue memory cannot reach the other processes');
  });
});
