/**
 * Second factors in a real Chromium (issue 16): TOTP enrolment by the QR page and a two-step
 * sign-in, a recovery code, and a passkey registered and used (as the second factor and
 * without a password) through a virtual authenticator (DevTools protocol WebAuthn domain).
 * The app's clock runs ahead by whole TOTP steps when a test needs a fresh code, so nothing
 * waits for a step to pass. The tests run in order, like one person's session.
 */
/// <reference lib="dom" />
import { AxeBuilder } from '@axe-core/playwright';
import { generate } from 'otplib';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN, makeHarness, serve, setupAdmin, type Harness } from '../helpers.js';
import { CHROMIUM_ARGS, CHROMIUM_PATH, browserAvailable } from '../chromium.js';

let h: Harness;
let server: Awaited<ReturnType<typeof serve>>;
let base: string;
let browser: Browser;
let ctx: BrowserContext;
let page: Page;
let secret = '';
let recovery: string[] = [];
let offset = 0;
const problems: string[] = [];

/** Moves the app's clock to the next TOTP step and returns the code for it. */
async function nextCode(): Promise<string> {
  offset += 30_000;
  return generate({ secret, epoch: Math.floor((Date.now() + offset) / 1000) });
}

/** Fails on serious or critical axe violations (as the main browser suite does). */
async function axe(p: Page): Promise<void> {
  const result = await new AxeBuilder({ page: p }).analyze();
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id}: ${v.help} @ ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  expect(bad, `accessibility violations on ${p.url()}`).toEqual([]);
}

async function password(p: Page): Promise<void> {
  await p.goto(`${base}/login`);
  await p.getByLabel('Username').fill(ADMIN.username);
  await p.getByLabel('Password', { exact: true }).fill(ADMIN.password);
  await p.getByRole('button', { name: 'Sign in', exact: true }).click();
}

async function signOut(p: Page): Promise<void> {
  await p.getByRole('button', { name: /Sign out/ }).click();
  await p.waitForURL(/\/login/);
}

describe.runIf(browserAvailable('second factors browser suite'))('second factors in Chromium', () => {
  beforeAll(async () => {
    h = await makeHarness({ LOG_LEVEL: 'warn' }, { clock: () => Date.now() + offset });
    await setupAdmin(h);
    server = await serve(h.app);
    // WebAuthn needs a domain as relying party id (never an IP) and a secure context: localhost is both.
    base = `http://localhost:${server.port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: [...CHROMIUM_ARGS, '--host-resolver-rules=MAP localhost 127.0.0.1'], headless: true });
    ctx = await browser.newContext({ viewport: { width: 1100, height: 900 } });
    page = await ctx.newPage();
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/status of (401|403)/.test(m.text())) problems.push(`console: ${m.text()}`);
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    h?.cleanup();
    expect(problems).toEqual([]);
  });

  it('enrols an authenticator app from the QR page and shows ten recovery codes once', async () => {
    await password(page);
    await page.waitForURL((u) => !u.pathname.startsWith('/login'));
    await page.goto(`${base}/account`);
    await page.getByRole('link', { name: 'Manage two-factor authentication' }).click();
    await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
    await expect.poll(() => page.locator('svg.qr-code').count()).toBe(1);
    await axe(page);
    secret = (await page.locator('[data-totp-secret]').textContent())!.trim();
    await page.getByLabel('Code from the app').fill(await nextCode());
    await page.getByRole('button', { name: 'Confirm and turn on' }).click();
    await page.waitForURL(/\/account\/2fa\/recovery-codes/);
    recovery = await page.locator('[data-recovery-codes] code').allTextContents();
    await axe(page);
    expect(recovery).toHaveLength(10);
    await page.reload();
    expect(await page.locator('[data-recovery-codes] code').count()).toBe(0);
    await signOut(page);
  });

  it('signs in with the password and then a code from the app', async () => {
    await password(page);
    await page.waitForURL(/\/login\/2fa/);
    await axe(page);
    await page.getByLabel(/Code from your authenticator app/).fill(await nextCode());
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.waitForURL((u) => u.pathname === '/');
    await signOut(page);
  });

  it('signs in with a recovery code, which is then used up', async () => {
    await password(page);
    await page.waitForURL(/\/login\/2fa/);
    await page.getByLabel(/Code from your authenticator app/).fill(recovery[0]!);
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.waitForURL(/\/account\/2fa\?msg=recovery-used/);
    expect(await page.locator('[data-recovery-remaining]').textContent()).toBe('9');
    await signOut(page);
    await password(page);
    await page.waitForURL(/\/login\/2fa/);
    await page.getByLabel(/Code from your authenticator app/).fill(recovery[0]!);
    await page.getByRole('button', { name: 'Continue' }).click();
    await expect.poll(() => page.getByRole('alert').first().textContent()).toContain('That code is not right');
  });

  it('registers a passkey with a virtual authenticator, then uses it as second factor and without a password', async () => {
    const cdp = await ctx.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
    });
    // Finish the sign-in left at the second step with a fresh code.
    await page.getByLabel(/Code from your authenticator app/).fill(await nextCode());
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.waitForURL((u) => u.pathname === '/');

    await page.goto(`${base}/account/2fa`);
    await page.getByLabel('Name for a new passkey').fill('virtual key');
    await page.getByRole('button', { name: 'Add a passkey' }).click();
    await page.waitForURL(/msg=passkey-added/);
    await expect.poll(() => page.locator('[data-passkey-row] strong').allTextContents()).toEqual(['virtual key']);
    await axe(page);
    await page.goto(`${base}/sudo?next=%2Faccount`);
    await axe(page);
    const creds = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    expect(creds.credentials).toHaveLength(1);
    const counterBefore = creds.credentials[0]!.signCount;
    await signOut(page);

    // As the second factor.
    await password(page);
    await page.waitForURL(/\/login\/2fa/);
    await page.getByRole('button', { name: 'Use a passkey or security key' }).click();
    await page.waitForURL((u) => u.pathname === '/');
    await signOut(page);

    // Without a password: the discoverable credential names the account.
    await page.goto(`${base}/login`);
    await page.getByRole('button', { name: 'Use a passkey', exact: true }).click();
    await page.waitForURL((u) => !u.pathname.startsWith('/login'));
    await page.goto(`${base}/account`);
    await expect.poll(() => page.locator('[data-signins] td[data-label="Method"]').first().textContent()).toBe('passkey');
    await axe(page);
    await page.goto(`${base}/admin/users`);
    await axe(page);
    const after = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    expect(after.credentials[0]!.signCount).toBeGreaterThan(counterBefore);
    const stored = await h.sql<{ counter: number }>('SELECT counter FROM mfa_passkeys');
    expect(Number(stored[0]!.counter)).toBe(after.credentials[0]!.signCount);
  });
});
