/**
 * Entry point: `node --expose-gc dist/run.js [suite]` (default suite `memory`). Prints a table and
 * writes results/<suite>.json. Always exits 0 once the report is written: a missed target is
 * printed as MISSED, never turned into a failure.
 */
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { formatReport, type SuiteReport, writeJson } from './harness.js';
import { runMemorySuite } from './memory.js';
import { runNatsSuite } from './nats.js';
import { runRabbitmqSuite } from './rabbitmq.js';
import { runRedisSuite } from './redis.js';

type Suite = (log: (line: string) => void) => Promise<SuiteReport>;

const suites: Record<string, Suite> = {
  memory: runMemorySuite,
  redis: runRedisSuite,
  rabbitmq: runRabbitmqSuite,
  nats: runNatsSuite,
};

const log = (line: string) => process.stderr.write(`${line}\n`);

async function main(): Promise<number> {
  const name = process.argv[2] ?? 'memory';
  const suite = suites[name];
  if (suite === undefined) {
    log(`unknown suite "${name}"; available: ${Object.keys(suites).join(', ')}`);
    return 2;
  }
  const report = await suite(log);
  const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'results');
  const file = await writeJson(path.join(dir, `${name}.json`), report);
  process.stdout.write(`${formatReport(report)}\n`);
  log(`wrote ${path.relative(process.cwd(), file) || file}`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
    // Every suite closes what it opened; should a peer library leave a socket or timer behind, the
    // report is written already and the run must still end.
    setTimeout(() => {
      log('some handles were still open 5 s after the report; exiting');
      process.exit(code);
    }, 5_000).unref();
  },
  (error: unknown) => {
    // A crash of the harness itself is a bug worth a non-zero exit; peers failing never get here.
    log(`bench crashed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exitCode = 1;
  },
);
