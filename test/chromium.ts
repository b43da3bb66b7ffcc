/**
 * Finding and launching Debian's Chromium for browser tests (playwright-core, no browser
 * download). Without a Chromium the browser tests are skipped with one printed line, unless
 * REQUIRE_BROWSER=1 (CI), where a missing browser is a failure.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

/** The Chromium executable: CHROMIUM_PATH when set (and only that), else Debian's. Undefined when there is none. */
export const CHROMIUM_PATH = (process.env.CHROMIUM_PATH ? [process.env.CHROMIUM_PATH] : ['/usr/bin/chromium', '/usr/bin/chromium-browser']).find((p) =>
  fs.existsSync(p),
);

/** True when browser tests can run; prints why not (once per suite) or throws under REQUIRE_BROWSER=1. */
export function browserAvailable(suite: string): boolean {
  if (CHROMIUM_PATH) return true;
  if (process.env.REQUIRE_BROWSER === '1') {
    throw new Error(`${suite}: REQUIRE_BROWSER=1 but no Chromium found (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  }
  process.stdout.write(`SKIPPED ${suite}: no Chromium found (apt-get install -y chromium, or set CHROMIUM_PATH)\n`);
  return false;
}

/** Launches Chromium headless with a fresh profile; close() also removes the profile. */
export async function launchChromium(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}
