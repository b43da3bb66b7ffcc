/**
 * Finding and launching Debian's Chromium for the browser suite. Nothing is ever downloaded:
 * without a Chromium the suite is left out (vitest.config.ts prints one line saying so),
 * and with REQUIRE_BROWSER=1 (CI) a missing Chromium is an error instead.
 */
import fs from 'node:fs';

/** Where Debian and Ubuntu put Chromium; CHROMIUM_PATH wins when set. */
const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser'];

/** The Chromium executable to use, or null when there is none. */
export function findChromium(env: NodeJS.ProcessEnv = process.env): string | null {
  const given = env.CHROMIUM_PATH?.trim();
  if (given) return fs.existsSync(given) ? given : null;
  return CANDIDATES.find((p) => fs.existsSync(p)) ?? null;
}

/**
 * Flags known to work in this sandbox. Playwright adds --headless itself, and gives every
 * launch a new, empty --user-data-dir of its own (it refuses one passed in args).
 */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const INSTALL = 'install it with "apt-get install -y chromium", or set CHROMIUM_PATH';

/** The one line `npm test` prints when it leaves the browser suite out. */
export const SKIP_LINE = `browser suite skipped: no Chromium found (${INSTALL})`;

/** Why a run with REQUIRE_BROWSER=1 fails without a Chromium. */
export const REQUIRED_LINE = `REQUIRE_BROWSER=1 but no Chromium was found (${INSTALL})`;
