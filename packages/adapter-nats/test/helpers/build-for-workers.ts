/**
 * Transpiles this package's sources (no type check, well under a second) into a temporary directory
 * for forked worker processes, with a `node_modules` link to this package's so the output resolves
 * `@cluster/core` and the nats.js packages as the package would. Independent of `dist/`.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';

const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SRC = join(PACKAGE, 'src');

export interface WorkerBuild {
  /** file: URL of the built src/index.js, for `import()` in a worker. */
  readonly moduleUrl: string;
  remove(): Promise<void>;
}

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(path)));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

export async function buildForWorkers(): Promise<WorkerBuild> {
  const dir = await mkdtemp(join(tmpdir(), 'cluster-nats-build-'));
  await symlink(join(PACKAGE, 'node_modules'), join(dir, 'node_modules'), 'dir');
  for (const file of await sources(SRC)) {
    const { outputText } = ts.transpileModule(await readFile(file, 'utf8'), {
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
    moduleUrl: pathToFileURL(join(dir, 'src', 'index.js')).href,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
