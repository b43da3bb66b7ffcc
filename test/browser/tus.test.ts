/**
 * The upload page's resumable path in a real Chromium: a file above TUS_PAGE_THRESHOLD goes
 * up with tus-js-client over a throttled connection, is paused (no bytes move), resumed, and
 * then survives a page reload: picking the same file again resumes from the server's offset
 * (the client's stored fingerprint), and the stored file has the right SHA-256.
 */
/// <reference lib="dom" />
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN, makeHarness, serve, setupAdmin, type Harness } from '../helpers.js';
import { CHROMIUM_ARGS, CHROMIUM_PATH, browserAvailable } from '../chromium.js';

const SIZE = 6 * 1024 * 1024;
let h: Harness;
let server: Awaited<ReturnType<typeof serve>>;
let base: string;
let browser: Browser;
let dir: string;
/** Upload-Offset of every tus PATCH the server received, in order. */
const patches: number[] = [];

async function percent(page: Page): Promise<number> {
  return Number((await page.locator('.upload-row .upload-percent').first().textContent())?.replace('%', '') ?? 0);
}

describe.runIf(browserAvailable('resumable upload browser suite'))('resumable upload page in Chromium', () => {
  beforeAll(async () => {
    h = await makeHarness({ LOG_LEVEL: 'warn', TUS_PAGE_THRESHOLD: '1MiB' });
    await setupAdmin(h);
    server = await serve((req, res) => {
      if (req.method === 'PATCH' && req.url?.startsWith('/files/tus/')) patches.push(Number(req.headers['upload-offset']));
      h.app(req, res);
    });
    base = `http://127.0.0.1:${server.port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, headless: true });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-tus-page-'));
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    h?.cleanup();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a throttled upload is paused, resumed, and survives a reload', async () => {
    const file = path.join(dir, 'big video.bin');
    const data = randomBytes(SIZE);
    fs.writeFileSync(file, data);
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    await page.goto(`${base}/login`);
    await page.getByLabel('Username').fill(ADMIN.username);
    await page.getByLabel('Password').fill(ADMIN.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${base}/`);
    // About 1.5 MiB/s up: the 6 MiB file takes seconds, long enough to pause and reload.
    const cdp = await ctx.newCDPSession(page);
    const throttle = () => cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 20, downloadThroughput: -1, uploadThroughput: 1.5 * 1024 * 1024 });
    await throttle();

    await page.getByLabel('Files to upload').setInputFiles(file);
    await expect.poll(() => percent(page), { timeout: 20_000 }).toBeGreaterThan(5);
    await page.getByRole('button', { name: 'Pause the upload of big video.bin' }).click();
    await expect.poll(() => page.locator('.upload-eta').first().textContent()).toBe('paused');
    const atPause = await percent(page);
    await page.waitForTimeout(700);
    expect(await percent(page)).toBe(atPause);
    await page.getByRole('button', { name: 'Resume the upload of big video.bin' }).click();
    await expect.poll(() => percent(page), { timeout: 20_000 }).toBeGreaterThan(Math.max(atPause, 30));

    // Reload mid-upload; the same file picked again resumes from the committed offset.
    await page.reload();
    await cdp.detach().catch(() => {});
    const before = patches.length;
    await page.getByLabel('Files to upload').setInputFiles(file);
    await expect.poll(() => page.locator('.upload-row.is-done').count(), { timeout: 30_000 }).toBe(1);
    const resumedAt = patches[before]!;
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt % (64 * 1024)).toBe(0);
    expect(await page.locator('.upload-row .upload-sha').textContent()).toBe(createHash('sha256').update(data).digest('hex'));
    expect(errors).toEqual([]);
    await ctx.close();
  });
});
