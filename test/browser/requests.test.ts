/**
 * Upload requests in a real Chromium: the owner creates a request on the page (link shown
 * once, with its QR code); an outsider in a fresh context (no account, no cookies) opens the
 * link, gives a name, sends three files with per-file progress and gets a receipt with each
 * file's name, size and SHA-256; the owner then sees the three files on the request's page
 * and in their files list, filtered by the request.
 */
/// <reference lib="dom" />
import { AxeBuilder } from '@axe-core/playwright';
import { createHash, randomBytes } from 'node:crypto';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN, makeHarness, serve, setupAdmin, type Harness } from '../helpers.js';
import { CHROMIUM_ARGS, CHROMIUM_PATH, browserAvailable } from '../chromium.js';

let h: Harness;
let server: Awaited<ReturnType<typeof serve>>;
let base: string;
let browser: Browser;
let owner: Page;
let link = '';
const problems: string[] = [];
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const files = [
  { name: 'statement 2025.pdf', mimeType: 'application/pdf', buffer: Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(300 * 1024)]) },
  { name: 'ID scan.jpg', mimeType: 'image/jpeg', buffer: Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), randomBytes(200 * 1024)]) },
  { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('Three notes for my accountant.\n') },
];

async function axe(p: Page): Promise<void> {
  const result = await new AxeBuilder({ page: p }).analyze();
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id}: ${v.help} @ ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  expect(bad, `accessibility violations on ${p.url()}`).toEqual([]);
}

describe.runIf(browserAvailable('upload requests browser suite'))('upload requests in Chromium', () => {
  beforeAll(async () => {
    h = await makeHarness({ LOG_LEVEL: 'warn' });
    await setupAdmin(h);
    server = await serve(h.app);
    base = `http://127.0.0.1:${server.port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, headless: true });
    const ctx = await browser.newContext();
    ctx.on('page', (p) => p.on('pageerror', (e) => problems.push(e.message)));
    owner = await ctx.newPage();
    await owner.goto(`${base}/login`);
    await owner.getByLabel('Username').fill(ADMIN.username);
    await owner.getByLabel('Password').fill(ADMIN.password);
    await owner.getByRole('button', { name: 'Sign in' }).click();
    await owner.waitForURL((u) => !u.pathname.startsWith('/login'));
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    h?.cleanup();
  });

  it('the owner creates a request; the link is shown once with a QR code', async () => {
    await owner.getByRole('link', { name: 'Requests' }).click();
    await owner.getByLabel('Title').fill('Documents for your tax return');
    await owner.getByLabel(/Message to the uploader/).fill('Please send the statements and an ID scan.');
    await owner.getByLabel('Files in all').fill('5');
    await owner.getByLabel(/Allowed types/).fill('pdf, jpg, txt');
    await owner.getByLabel("Ask for the uploader's name").check();
    await owner.getByRole('button', { name: 'Create request' }).click();
    await owner.waitForURL(/\/requests\/[0-9a-f]{32}\/new-link$/);
    link = await owner.getByRole('textbox', { name: 'Upload link' }).inputValue();
    expect(link).toMatch(new RegExp(`^${base}/r/[A-Za-z0-9_-]{43}$`));
    expect(await owner.locator('svg.qr-code').count()).toBe(1);
    await axe(owner);
    await owner.reload();
    await expect(owner.getByRole('heading', { name: 'The upload link was shown once' }).count()).resolves.toBe(1);
  });

  it('an outsider in a fresh context sends three files and gets a receipt; the owner sees them', async () => {
    const outsider = await browser.newContext();
    outsider.on('page', (p) => p.on('pageerror', (e) => problems.push(e.message)));
    const p = await outsider.newPage();
    await p.goto(link);
    await expect(p.locator('#request-title').textContent()).resolves.toBe('Documents for your tax return');
    await expect(p.locator('#asked-by').textContent()).resolves.toBe(ADMIN.username);
    await expect(p.locator('#request-message').textContent()).resolves.toContain('ID scan');
    await axe(p);
    await p.getByLabel('Your name').fill('Ada Client');
    await p.getByLabel('Files to send').setInputFiles(files);
    await expect.poll(() => p.locator('.upload-row.is-done').count(), { timeout: 30_000 }).toBe(3);
    expect(await p.locator('.upload-row.is-failed').count()).toBe(0);
    for (const bar of await p.locator('.upload-progress').all()) expect(await bar.evaluate((b: HTMLProgressElement) => b.value)).toBe(100);
    await expect(p.locator('#receipt').isVisible()).resolves.toBe(true);
    const rows = await p.locator('#receipt-rows tr').evaluateAll((trs) => trs.map((tr) => Array.from(tr.querySelectorAll('td'), (td) => td.textContent ?? '')));
    expect(rows.map((r) => r[0]).sort()).toEqual(files.map((f) => f.name).sort());
    for (const f of files) {
      const row = rows.find((r) => r[0] === f.name)!;
      expect(row[1]).toContain(`${f.buffer.length.toLocaleString('en')} bytes`);
      expect(row[2]).toBe(sha(f.buffer));
      expect(Date.parse(row[3]!)).toBeGreaterThan(0);
    }
    await expect(p.getByRole('button', { name: 'Print or save the receipt' }).count()).resolves.toBe(1);
    await outsider.close();

    // The owner: the request's page lists the three, with the uploader's name; the files list filters by it.
    await owner.goto(`${base}/requests`);
    await owner.getByRole('link', { name: 'Documents for your tax return' }).click();
    await expect(owner.locator('#request-received').textContent()).resolves.toContain('3 of 5 files');
    const arrived = await owner.locator('#arrived tbody tr').evaluateAll((trs) => trs.map((tr) => [tr.querySelector('td')?.textContent ?? '', tr.querySelectorAll('td')[2]?.textContent ?? '']));
    expect(arrived.map((r) => r[0]).sort()).toEqual(files.map((f) => f.name).sort());
    for (const r of arrived) expect(r[1]).toContain('Ada Client');
    await axe(owner);
    await owner.getByRole('link', { name: 'See them in your files' }).click();
    expect(await owner.locator('.files-table tbody tr').count()).toBe(3);
    expect(problems).toEqual([]);
  });
});
