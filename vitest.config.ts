import { defineConfig } from 'vitest/config';
import { REQUIRED_LINE, SKIP_LINE, findChromium } from './test/browser/chromium.js';

// The browser suite needs Debian's Chromium. Without one it is left out with one clear
// line, unless REQUIRE_BROWSER=1 (CI installs Chromium), where a missing one is a failure.
const exclude: string[] = [];
if (!findChromium()) {
  if (process.env.REQUIRE_BROWSER === '1') {
    throw new Error(REQUIRED_LINE);
  }
  exclude.push('test/browser/**');
  console.log(`\n  ${SKIP_LINE}\n`);
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['**/node_modules/**', ...exclude],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores: keep the heavy suites (argon2, 200 MiB transfers) from fighting each other.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
