import { defineConfig } from 'vitest/config';
import { CHROMIUM_PATH, SKIP_LINE } from './test/chromium.js';
import { s3CanRun } from './test/services/global-setup.js';

/**
 * Suites that run twice: on the disk store (project "disk", with everything else) and again
 * with every harness on the real S3 service (project "s3"), so no feature works on one only.
 * Suites not listed drive the CLI or a child server on disk-specific paths, or test the disk
 * store itself; test/s3-app.test.ts covers those paths on S3.
 */
const BOTH_STORES = [
  'test/api-files.test.ts',
  'test/api-shares.test.ts',
  'test/hostile.test.ts',
  'test/quota.test.ts',
  'test/tampering.test.ts',
  'test/pages.test.ts',
  'test/review-http.test.ts',
  'test/review-recipient.test.ts',
  'test/review-integrity.test.ts',
];
const common = { testTimeout: 60_000, hookTimeout: 60_000, pool: 'forks' as const };

// Browser suites need Debian's Chromium. Without one they skip themselves (describe.runIf)
// and this prints one line for all of them, once; with REQUIRE_BROWSER=1 (CI installs
// Chromium) a missing one stops the run instead.
if (!CHROMIUM_PATH) {
  if (process.env.REQUIRE_BROWSER === '1') throw new Error(SKIP_LINE.replace(/^SKIPPED/, 'REQUIRE_BROWSER=1 but cannot run the'));
  console.log(`\n  ${SKIP_LINE}\n`);
}

export default defineConfig({
  test: {
    // Starts the real S3-compatible store (Swift) the object-store suites run against, once.
    globalSetup: ['test/services/global-setup.ts'],
    ...common,
    // Two cores: keep the heavy suites (argon2, 200 MiB transfers) from fighting each other.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    projects: [
      { test: { name: 'disk', include: ['test/**/*.test.ts'], ...common } },
      ...(s3CanRun() ? [{ test: { name: 's3', include: BOTH_STORES, env: { SFS_TEST_STORAGE: 's3' }, ...common } }] : []),
    ],
  },
});
