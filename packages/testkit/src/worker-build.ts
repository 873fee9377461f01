/**
 * Builds an adapter package's sources for forked worker processes: the TypeScript files reachable
 * from `entry` (imports ending in `.js`) are transpiled (no type check, well under a second) into a
 * temporary directory that gets a `node_modules` link to the package's, so the output resolves its
 * dependencies as the package would. Independent of `dist/`, and of files that do not compile yet.
 * Needs `typescript` (an optional peer dependency).
 */
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

export interface WorkerBuild {
  /** file: URL of the built entry, for `import()` in a worker. */
  readonly moduleUrl: string;
  readonly dir: string;
  remove(): Promise<void>;
}

export interface WorkerBuildOptions {
  /** The package's directory (holding `src/` and `node_modules/`). */
  packageDir: string;
  /** The entry, relative to `src/`. Default `index.ts`. */
  entry?: string;
}

export async function buildForWorkers(options: WorkerBuildOptions): Promise<WorkerBuild> {
  const { default: ts } = await import('typescript');
  const src = join(options.packageDir, 'src');
  const entry = join(src, options.entry ?? 'index.ts');
  const dir = await mkdtemp(join(tmpdir(), 'cluster-worker-build-'));
  await symlink(join(options.packageDir, 'node_modules'), join(dir, 'node_modules'), 'dir');
  const seen = new Set<string>();
  const pending = [entry];
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
    const out = join(dir, 'src', relative(src, file)).replace(/\.ts$/, '.js');
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, outputText);
  }
  await writeFile(join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }));
  return {
    dir,
    moduleUrl: pathToFileURL(join(dir, 'src', relative(src, entry)).replace(/\.ts$/, '.js')).href,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
