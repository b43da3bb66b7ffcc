/**
 * /api/docs: Swagger UI served by the app itself under its own strict CSP. The HTTP checks
 * run everywhere; the rendering check needs Chromium (see chromium.ts).
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { API, OUTSIDE_API } from '../src/http/api-table.js';
import { browserAvailable, launchChromium } from './chromium.js';
import { makeHarness, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

/** The CSP of a response as directive -> sources. */
function csp(header: string): Map<string, string[]> {
  return new Map(header.split(';').map((d) => d.trim().split(/\s+/)).filter((d) => d[0]).map(([k, ...v]) => [k!, v]));
}

describe('/api/docs over HTTP', () => {
  it('serves the page with its own CSP: nothing inline, nothing from elsewhere', async () => {
    h = await makeHarness();
    const r = await h.request.get('/api/docs');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/html/);
    expect(r.text).toContain('/api/docs/assets/swagger-ui-bundle.js');
    expect(r.text).toContain('data-spec-url="/api/v1/openapi.json"');
    expect(r.text).not.toMatch(/<script>(?!<\/script>)|<style|style="|https?:\/\//);
    const policy = csp(r.headers['content-security-policy']);
    expect(Object.fromEntries(policy)).toEqual({
      'default-src': ["'none'"],
      'script-src': ["'self'"],
      'style-src': ["'self'"],
      'img-src': ["'self'", 'data:'],
      'connect-src': ["'self'"],
      'base-uri': ["'none'"],
      'form-action': ["'none'"],
      'frame-ancestors': ["'none'"],
    });
  });

  it('lets "Try it out" reach PUBLIC_URL when it is another origin', async () => {
    h = await makeHarness({ PUBLIC_URL: 'https://files.example.org' });
    const r = await h.request.get('/api/docs/');
    expect(csp(r.headers['content-security-policy']).get('connect-src')).toEqual(["'self'", 'https://files.example.org']);
  });

  it('serves the Swagger UI assets from node_modules, and only those the page needs', async () => {
    h = await makeHarness();
    const js = await h.request.get('/api/docs/assets/swagger-ui-bundle.js');
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toMatch(/javascript/);
    expect(String(js.text ?? js.body).length).toBeGreaterThan(100_000);
    expect((await h.request.get('/api/docs/assets/swagger-ui.css')).status).toBe(200);
    expect((await h.request.get('/api/docs/assets/init.js')).text).toContain('SwaggerUIBundle');
    // swagger-ui-dist's own index.html has an inline script and its initializer loads the petstore.
    for (const f of ['index.html', 'swagger-initializer.js', 'oauth2-redirect.html', 'package.json', '../package.json']) {
      expect((await h.request.get(`/api/docs/assets/${f}`)).status, f).toBe(404);
    }
  });

  it('other pages keep the site-wide CSP', async () => {
    h = await makeHarness();
    const r = await h.request.get('/');
    expect(csp(r.headers['content-security-policy']).get('default-src')).toEqual(["'self'"]);
  });
});

const hasBrowser = browserAvailable('api docs browser check');

describe.runIf(hasBrowser)('/api/docs in Chromium', () => {
  let server: http.Server;
  let base: string;
  let token: string;
  let browser: Awaited<ReturnType<typeof launchChromium>>;
  beforeAll(async () => {
    h = await makeHarness();
    token = await setupAdmin(h);
    server = http.createServer(h.app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await new Promise((resolve) => server?.close(resolve));
  });

  it('renders every operation with no CSP violation, no error and no request to another origin; Try it out works', async () => {
    const page = await browser.context.newPage();
    const problems: string[] = [];
    const foreign: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || /Content Security Policy/i.test(m.text())) problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (req) => {
      if (!req.url().startsWith(base) && !req.url().startsWith('data:')) foreign.push(req.url());
    });
    // Registered before any page script runs; collects what the CSP blocks. (Browser code is
    // passed as strings: the test tsconfig has no DOM types.)
    await page.addInitScript({
      content: `window.cspViolations = [];
        document.addEventListener('securitypolicyviolation', (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));`,
    });
    const violationsSoFar = () => page.evaluate('window.cspViolations') as Promise<string[]>;
    await page.goto(`${base}/api/docs`);
    await page.locator('.opblock').first().waitFor({ timeout: 20_000 });
    expect(await page.title()).toBe('API reference · Secure file sharing');
    expect(await page.locator('.info .title').innerText()).toMatch(/Secure file sharing API/);
    expect(await page.locator('.opblock').count()).toBe(Object.keys({ ...API, ...OUTSIDE_API }).length);

    // Authorize with a real token and run GET /api/v1/me from the page.
    await page.getByRole('button', { name: /authorize/i }).first().click();
    await page.locator('.modal-ux input[type=text], .modal-ux input:not([type])').first().fill(token);
    await page.locator('.modal-ux button.authorize').click();
    await page.locator('.modal-ux button.btn-done').click();
    const me = page.locator('#operations-Account-getMe');
    await me.locator('.opblock-summary').click();
    await me.getByRole('button', { name: 'Try it out' }).click();
    await me.getByRole('button', { name: 'Execute' }).click();
    const live = me.locator('.live-responses-table tr.response .response-col_status').first();
    await live.waitFor({ timeout: 10_000 });
    expect((await live.innerText()).trim()).toBe('200');
    expect(await me.locator('.live-responses-table tr.response .response-col_description').first().innerText()).toContain('"username": "admin"');

    fs.mkdirSync(path.join('test-results', 'screenshots'), { recursive: true });
    await page.screenshot({ path: path.join('test-results', 'screenshots', 'api-docs.png'), fullPage: false });

    expect(await violationsSoFar()).toEqual([]);
    expect(problems).toEqual([]);
    expect(foreign).toEqual([]);

    // Control: the listener does see violations, so the empty list above means something.
    await page.evaluate(`{ const s = document.createElement('style'); s.textContent = 'body { color: red }'; document.head.appendChild(s); }`);
    await expect.poll(violationsSoFar).toEqual(['style-src-elem inline']);
    await page.close();
  });
});
