import { defineConfig } from 'vitest/config';
import { CHROMIUM_PATH, SKIP_LINE } from './test/chromium.js';

// Browser suites need Debian's Chromium. Without one they skip themselves (describe.runIf)
// and this prints one line for all of them, once; with REQUIRE_BROWSER=1 (CI installs
// Chromium) a missing one stops the run instead.
if (!CHROMIUM_PATH) {
  if (process.env.REQUIRE_BROWSER === '1') throw new Error(SKIP_LINE.replace(/^SKIPPED/, 'REQUIRE_BROWSER=1 but cannot run the'));
  console.log(`\n  ${SKIP_LINE}\n`);
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Starts the real S3-compatible store (Swift) the object-store suites run against.
    globalSetup: ['test/services/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores: keep the heavy suites (argon2, 200 MiB transfers) from fighting each other.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
