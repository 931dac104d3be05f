import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // PostgreSQL clusters and S3 servers are heavy on a 2-core machine: run files two at a time.
    maxWorkers: 2,
    fileParallelism: true,
  },
});
