import { defineConfig } from 'vitest/config';

// Two projects: unit tests run anywhere in seconds; integration tests get the real S3 servers
// (radosgw and Swift, started once by the global setup) and throwaway PostgreSQL clusters.
export default defineConfig({
  test: {
    reporters: ['default', './test/support/summary-reporter.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 180_000,
          hookTimeout: 180_000,
          // PostgreSQL clusters and S3 servers are heavy on a 2-core machine: two files at a time.
          maxWorkers: 2,
        },
      },
    ],
  },
});
