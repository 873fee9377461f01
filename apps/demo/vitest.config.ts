import { defineConfig } from 'vitest/config';

// The e2e files start whole clusters and a browser: one file at a time on a small machine.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 90_000,
  },
});
