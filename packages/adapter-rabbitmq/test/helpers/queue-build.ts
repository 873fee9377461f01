/**
 * Builds the queue adapter for forked worker processes: the TypeScript sources reachable from
 * src/queue/index.ts are transpiled (no type check, well under a second) into a temporary directory,
 * which gets a `node_modules` link to this package's, so the output resolves `@cluster/core` and `amqplib`
 * as the package would. Independent of `dist/`, and of files in the package that do not compile yet.
 */
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';

const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SRC = join(PACKAGE, 'src');

export interface QueueBuild {
  /** file: URL of the built src/queue/index.js, for `import()` in a worker. */
  readonly moduleUrl: string;
  readonly dir: string;
  remove(): Promise<void>;
}

export async function buildQueueForWorkers(): Promise<QueueBuild> {
  const dir = await mkdtemp(join(tmpdir(), 'cluster-queue-build-'));
  await symlink(join(PACKAGE, 'node_modules'), join(dir, 'node_modules'), 'dir');
  const seen = new Set<string>();
  const pending = [join(SRC, 'queue/index.ts')];
  while (pending.length > 0) {
    const file = pending.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = await readFile(file, 'utf8');
    for (const match of source.matchAll(/from '(\.{1,2}\/[^']+)\.js'/g)) {
      pending.push(resolve(dirname(file), `${match[1]}.ts`));
    }
    const { outputText } = ts.transpileModule(source, {
      fileName: file,
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2023,
        verbatimModuleSyntax: true,
      },
    });
    const out = join(dir, 'src', relative(SRC, file)).replace(/\.ts$/, '.js');
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, outputText);
  }
  await writeFile(join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }));
  return {
    dir,
    moduleUrl: pathToFileURL(join(dir, 'src/queue/index.js')).href,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
