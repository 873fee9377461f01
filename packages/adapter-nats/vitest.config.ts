import { defineConfig } from 'vitest/config';

// Suites share one real nats-server: run files one after another, each test under its own subject prefix.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
