#!/usr/bin/env node
import { checkServers } from './backends.js';
import { ConfigError, parseConfig, usage } from './config.js';
import { messageOf } from './events.js';
import { runDistributed, runEmbedded, runInstanceProcess } from './launcher.js';
import { consoleLogger, redact } from './logger.js';

/** Errors end the demo with one line: what failed, never a stack trace or a credential. */
function fail(error: unknown, code = 1): never {
  console.error(`demo: ${redact(messageOf(error))}`);
  process.exit(code);
}

async function main(): Promise<void> {
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig(process.argv.slice(2));
  } catch (error) {
    if (error instanceof ConfigError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`demo: ${messageOf(error)}\n${usage()}`);
      process.exit(2);
    }
    throw error;
  }
  if (config === 'help') {
    console.log(usage());
    return;
  }
  const logger = consoleLogger({}, process.env.DEMO_VERBOSE === '1');
  if (process.env.DEMO_ROLE === 'instance') {
    await runInstanceProcess(config, logger);
    return;
  }
  await checkServers(config);
  const running =
    config.mode === 'embedded' ? await runEmbedded(config, logger) : await runDistributed(config);
  let stopping = false;
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    console.log('stopping...');
    running.stop().then(
      () => process.exit(0),
      (error) => fail(error),
    );
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

main().catch((error) => fail(error));
