import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Core runs the published conformance suites against its memory adapters. The testkit depends on
// core, so core cannot depend on the testkit package (turbo would see a cycle): both are read from
// source here, which also keeps a single copy of core's classes in the test process.
export default defineConfig({
  resolve: {
    alias: {
      '@cluster/core': fileURLToPath(new URL('./src/index.ts', import.meta.url)),
      '@cluster/testkit': fileURLToPath(new URL('../testkit/src/index.ts', import.meta.url)),
    },
  },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
  },
});
