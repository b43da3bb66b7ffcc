/**
 * Single sign-on in a real Chromium against a real OpenID provider on loopback
 * (oidc-provider, test/oidc-op.ts): the "Sign in with ..." button, the provider's round trip,
 * the new account's pages, and sign-out through the provider's own confirmation page back to
 * the sign-in page.
 */
import { AxeBuilder } from '@axe-core/playwright';
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM_ARGS, CHROMIUM_PATH, browserAvailable } from '../chromium.js';
import { makeHarness, serve, setupAdmin, type Harness } from '../helpers.js';
import { startOp, type TestOp } from '../oidc-op.js';

let h: Harness;
let op: TestOp;
let server: Awaited<ReturnType<typeof serve>>;
let base: string;
let browser: Browser;
const SHOTS = path.resolve(import.meta.dirname, '..', '..', 'test-results', 'screenshots');

describe.runIf(browserAvailable('SSO browser suite'))('single sign-on in Chromium', () => {
  beforeAll(async () => {
    // The app's address must be known before its configuration (PUBLIC_URL): serve first.
    server = await serve((req, res) => h.app(req, res));
    base = `http://127.0.0.1:${server.port}`;
    op = await startOp([base]);
    h = await makeHarness({ LOG_LEVEL: 'warn', ...op.env(base, { OIDC_AUTO_CREATE: 'true' }) });
    await setupAdmin(h);
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, headless: true });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await op?.close();
    h?.cleanup();
  });

  it('signs in with the provider (a new account), and signs out through it', async () => {
    op.login = { sub: 'browser-sub', email: 'lena@example.com', email_verified: true, preferred_username: 'lena' };
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${base}/files`);
    expect(new URL(page.url()).pathname).toBe('/login');
    const axe = await new AxeBuilder({ page }).analyze();
    expect(axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id)).toEqual([]);
    fs.mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SHOTS, 'login-sso.png'), fullPage: true });

    await page.getByRole('button', { name: 'Sign in with Test IdP' }).click();
    // The provider signs the chosen account in and sends the browser back to where it was going.
    await page.waitForURL(`${base}/files`);
    await expect(page.getByRole('button', { name: /Sign out/ }).textContent()).resolves.toContain('lena');
    await page.goto(`${base}/account`);
    await expect(page.getByRole('heading', { name: 'Single sign-on' }).isVisible()).resolves.toBe(true);
    await expect(page.locator('body').textContent()).resolves.toContain('lena@example.com');
    await page.screenshot({ path: path.join(SHOTS, 'account-sso.png'), fullPage: true });

    await page.getByRole('button', { name: 'Sign out lena' }).click();
    // The provider's own "sign out?" page, then back to our sign-in page.
    await page.waitForURL((u) => u.href.startsWith(op.issuer));
    await page.getByRole('button', { name: 'Yes, sign me out' }).click();
    await page.waitForURL(`${base}/login?msg=signed-out`);
    await expect(page.getByRole('status').textContent()).resolves.toContain('You are signed out');
    await page.goto(`${base}/files`);
    expect(new URL(page.url()).pathname).toBe('/login');
    await ctx.close();
  });
});
