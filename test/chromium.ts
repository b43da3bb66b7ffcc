/**
 * Finding and launching Debian's Chromium for browser tests (playwright-core, no browser
 * download). Without a Chromium the browser tests are skipped and vitest.config.ts prints one
 * line saying so, unless REQUIRE_BROWSER=1 (CI), where a missing browser is a failure.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

/** The Chromium executable: CHROMIUM_PATH when set (and only that), else Debian's. Undefined when there is none. */
export const CHROMIUM_PATH = (process.env.CHROMIUM_PATH ? [process.env.CHROMIUM_PATH] : ['/usr/bin/chromium', '/usr/bin/chromium-browser']).find((p) =>
  fs.existsSync(p),
);

const INSTALL = 'apt-get install -y chromium, or set CHROMIUM_PATH';

/** The one line a run without Chromium prints (from vitest.config.ts, once for all browser suites). */
export const SKIP_LINE = `SKIPPED browser suites (web UI, API docs): no Chromium found (${INSTALL})`;

/** True when browser tests can run; throws under REQUIRE_BROWSER=1 when they cannot. */
export function browserAvailable(suite: string): boolean {
  if (CHROMIUM_PATH) return true;
  if (process.env.REQUIRE_BROWSER === '1') {
    throw new Error(`${suite}: REQUIRE_BROWSER=1 but no Chromium found (${INSTALL})`);
  }
  return false;
}

/**
 * Flags known to work in this sandbox. Playwright adds --headless itself and gives each
 * launch a new, empty profile (--user-data-dir) of its own.
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

/** Launches Chromium headless with a fresh profile; close() also removes the profile. */
export async function launchChromium(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  return {
    context,
    async close() {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}
