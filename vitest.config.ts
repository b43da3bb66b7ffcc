import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores: keep the heavy suites (argon2, 200 MiB transfers) from fighting each other.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
