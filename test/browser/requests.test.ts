/**
 * Upload requests in a real Chromium: the owner creates a request on the page (link shown
 * once, with its QR code); an outsider in a fresh context (no account, no cookies) opens the
 * link, gives a name, sends three files with per-file progress and gets a receipt with each
 * file's name, size and SHA-256; the owner then sees the three files on the request's page
 * and in their files list, filtered by the request, shares two of them on as one bundle link,
 * and a second outsider downloads the zip and one file, and resumes the zip byte-exact (the
 * issue's end-to-end flow).
 */
/// <reference lib="dom" />
import { AxeBuilder } from '@axe-core/playwright';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
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

  it('the owner shares two of them as a bundle; a second outsider gets the zip and one file, and a resumed zip is byte-exact', async () => {
    // The owner is on the files list filtered by the request (the previous step ends there).
    const [pdf, jpg] = [files[0]!, files[1]!];
    await owner.getByRole('checkbox', { name: `Select ${pdf.name}` }).check();
    await owner.getByRole('checkbox', { name: `Select ${jpg.name}` }).check();
    await owner.getByRole('button', { name: 'Share selected' }).click();
    await owner.getByRole('button', { name: 'Create link' }).click();
    const bundleLink = await owner.getByRole('textbox', { name: 'New link' }).inputValue();
    expect(bundleLink).toMatch(new RegExp(`^${base}/s/[A-Za-z0-9_-]{43}$`));

    const second = await browser.newContext();
    second.on('page', (p) => p.on('pageerror', (e) => problems.push(e.message)));
    const p = await second.newPage();
    await p.goto(bundleLink);
    const text = await p.locator('main').innerText();
    for (const f of [pdf, jpg]) {
      expect(text).toContain(f.name);
      expect(text).toContain(sha(f.buffer));
    }
    // Nothing about the third upload or the request reaches this recipient.
    expect(text).not.toContain(files[2]!.name);
    expect(text).not.toContain('Ada Client');
    await axe(p);
    const [zipDownload] = await Promise.all([p.waitForEvent('download'), p.getByRole('link', { name: 'Download all (.zip)' }).click()]);
    const zipPath = (await zipDownload.path())!;
    const zip = fs.readFileSync(zipPath);
    execFileSync('unzip', ['-tq', zipPath]);
    for (const f of [pdf, jpg]) expect(execFileSync('unzip', ['-p', zipPath, f.name], { maxBuffer: 16 * 1024 * 1024 }).equals(f.buffer), f.name).toBe(true);
    const [one] = await Promise.all([p.waitForEvent('download'), p.getByRole('link', { name: `Download ${pdf.name}` }).click()]);
    expect(fs.readFileSync((await one.path())!).equals(pdf.buffer)).toBe(true);
    // A download manager's resume: the rest from an offset inside the first entry, guarded by the ETag.
    const from = 123_457;
    const zipHref = (await p.getByRole('link', { name: 'Download all (.zip)' }).getAttribute('href'))!;
    const resumed = await p.evaluate(async ([href, start]) => {
      const head = await fetch(href, { method: 'HEAD' });
      const r = await fetch(href, { headers: { Range: `bytes=${start}-`, 'If-Range': head.headers.get('ETag')! } });
      const bytes = new Uint8Array(await r.arrayBuffer());
      let bin = '';
      for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      return { status: r.status, range: r.headers.get('Content-Range'), body: btoa(bin) };
    }, [zipHref, from] as const);
    expect(resumed.status).toBe(206);
    expect(resumed.range).toBe(`bytes ${from}-${zip.length - 1}/${zip.length}`);
    expect(Buffer.concat([zip.subarray(0, from), Buffer.from(resumed.body, 'base64')]).equals(zip)).toBe(true);
    await second.close();
    expect(problems).toEqual([]);
  });
});
