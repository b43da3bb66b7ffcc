/**
 * TRUST_PROXY and PUBLIC_URL. Off (the default), forged X-Forwarded-For/-Proto/-Host change
 * nothing a client can observe: rate-limit identity, the client address in the audit log,
 * the cookie's Secure flag, generated links; and they cause no log noise. On, the forwarded
 * values are used (only from a trusted hop). supertest connects over loopback, so
 * TRUST_PROXY=loopback plays the local ngrok agent here.
 */
import express from 'express';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { makeHarness, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => {
  vi.restoreAllMocks();
  h?.cleanup();
});

const FORGED = { 'X-Forwarded-For': '203.0.113.7', 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'evil.example' };

/** A fresh app (with `env`), its admin's auth header and one uploaded file. */
async function init(env: Record<string, string> = {}) {
  h = await makeHarness({ LOGIN_RATE_LIMIT_PER_IP: '3', LOGIN_RATE_LIMIT: '100', ...env });
  const token = await setupAdmin(h);
  const auth = { Authorization: `Bearer ${token}` };
  const up = await h.request.put('/api/v1/uploads/a.txt').set(auth).send('hello');
  return { auth, fileId: up.body.file.id as string };
}

/** Failed logins, one per forwarded address; returns the statuses. */
async function failedLogins(xffs: string[]): Promise<number[]> {
  const out: number[] = [];
  for (const xff of xffs) {
    const r = await h.request.post('/api/v1/auth/tokens').set('X-Forwarded-For', xff).send({ username: `u${out.length}`, password: 'wrong password!' });
    out.push(r.status);
  }
  return out;
}

/** The client address recorded for the newest audit event with this action. */
async function auditIp(auth: Record<string, string>, action: string): Promise<string | null> {
  const r = await h.request.get('/api/v1/audit?limit=50').set(auth);
  return r.body.events.find((e: { action: string }) => e.action === action)?.ip ?? null;
}

/** The share-link CSRF cookie a recipient's password page sets, as sent. */
async function recipientCookie(auth: Record<string, string>, fileId: string, headers: Record<string, string>): Promise<string> {
  const s = await h.request.post(`/api/v1/files/${fileId}/shares`).set(auth).send({ password: 'share password 1' });
  const page = await h.request.get(`/s/${s.body.token}`).set(headers);
  expect(page.status).toBe(200);
  return String(page.headers['set-cookie'] ?? '');
}

describe('TRUST_PROXY off (default): forged forwarding headers change nothing', () => {
  it('rate-limit identity stays the socket address', async () => {
    await init();
    expect(await failedLogins(['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5'])).toEqual([401, 401, 401, 429, 429]);
  });

  it('the audit log records the real client address', async () => {
    const { auth } = await init();
    await h.request.post('/api/v1/auth/tokens').set(FORGED).send({ username: 'admin', password: 'wrong password!' });
    const ip = await auditIp(auth, 'auth.login');
    expect(ip).toMatch(/^(::ffff:)?127\.0\.0\.1$|^::1$/);
  });

  it('X-Forwarded-Proto: https does not make the cookie Secure', async () => {
    const { auth, fileId } = await init();
    const cookie = await recipientCookie(auth, fileId, FORGED);
    expect(cookie).toMatch(/^sfs-share-csrf=/);
    expect(cookie).not.toMatch(/;\s*Secure/i);
  });

  it('generated links use the Host header, not X-Forwarded-Host/-Proto', async () => {
    const { auth, fileId } = await init();
    const s = await h.request.post(`/api/v1/files/${fileId}/shares`).set(auth).set(FORGED).set('Host', 'files.local:3000').send({});
    expect(s.body.url).toBe(`http://files.local:3000/s/${s.body.token}`);
  });

  it('no warning or error in the log or on the console', async () => {
    const consoleError = vi.spyOn(console, 'error');
    const consoleWarn = vi.spyOn(console, 'warn');
    const { auth, fileId } = await init();
    const before = h.logLines.length;
    await h.request.get('/api/v1/files').set(auth).set(FORGED);
    await h.request.post('/api/v1/auth/tokens').set(FORGED).send({ username: 'admin', password: 'wrong password!' });
    await h.request.post(`/api/v1/files/${fileId}/shares`).set(auth).set(FORGED).send({});
    await h.request.get('/healthz').set(FORGED).set('Forwarded', 'for=203.0.113.7;proto=https');
    const lines = h.logLines.slice(before).map((l) => JSON.parse(l) as { level: number; msg: string });
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.filter((l) => l.level >= 40)).toEqual([]);
    expect(consoleError).not.toHaveBeenCalled();
    expect(consoleWarn).not.toHaveBeenCalled();
  });

  it('a trusted range that does not include the peer is the same as off', async () => {
    const { auth } = await init({ TRUST_PROXY: '10.0.0.0/8, 192.168.0.0/16' });
    expect(await failedLogins(['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'])).toEqual([401, 401, 401, 429]);
    expect(await auditIp(auth, 'auth.login')).toMatch(/127\.0\.0\.1|::1/);
  });
});

describe('TRUST_PROXY=loopback: the forwarded values from the local proxy are used', () => {
  it('rate limits are per forwarded client, so one client cannot lock out another', async () => {
    await init({ TRUST_PROXY: 'loopback' });
    expect(await failedLogins(['198.51.100.1', '198.51.100.1', '198.51.100.1', '198.51.100.1', '198.51.100.2'])).toEqual([401, 401, 401, 429, 401]);
  });

  it('the audit log records the forwarded client address', async () => {
    const { auth } = await init({ TRUST_PROXY: 'loopback' });
    await h.request.post('/api/v1/auth/tokens').set(FORGED).send({ username: 'admin', password: 'wrong password!' });
    expect(await auditIp(auth, 'auth.login')).toBe('203.0.113.7');
  });

  it('X-Forwarded-Proto: https makes the cookie Secure (and __Host-)', async () => {
    const { auth, fileId } = await init({ TRUST_PROXY: 'loopback' });
    const cookie = await recipientCookie(auth, fileId, FORGED);
    expect(cookie).toMatch(/^__Host-sfs-share-csrf=/);
    expect(cookie).toMatch(/;\s*Secure/i);
    const plain = await recipientCookie(auth, fileId, {});
    expect(plain).not.toMatch(/;\s*Secure/i);
  });

  it('without PUBLIC_URL, links follow X-Forwarded-Proto and -Host', async () => {
    const { auth, fileId } = await init({ TRUST_PROXY: 'loopback' });
    const s = await h.request.post(`/api/v1/files/${fileId}/shares`).set(auth).set(FORGED).send({});
    expect(s.body.url).toBe(`https://evil.example/s/${s.body.token}`);
  });

  it('with PUBLIC_URL, links use it whatever the headers say', async () => {
    const { auth, fileId } = await init({ TRUST_PROXY: 'loopback', PUBLIC_URL: 'https://abc.ngrok-free.app/' });
    const s = await h.request.post(`/api/v1/files/${fileId}/shares`).set(auth).set(FORGED).send({});
    expect(s.body.url).toBe(`https://abc.ngrok-free.app/s/${s.body.token}`);
    const doc = await h.request.get('/api/v1/openapi.json').set(FORGED);
    expect(doc.body.servers[0].url).toBe('https://abc.ngrok-free.app');
  });

  it('a hop count takes that many proxies from the right', async () => {
    const { auth } = await init({ TRUST_PROXY: '1' });
    await h.request.post('/api/v1/auth/tokens').set('X-Forwarded-For', '198.51.100.9, 203.0.113.5').send({ username: 'admin', password: 'wrong password!' });
    expect(await auditIp(auth, 'auth.login')).toBe('203.0.113.5');
  });

  it('no warning or error in the log with forwarded headers', async () => {
    const consoleError = vi.spyOn(console, 'error');
    const { auth } = await init({ TRUST_PROXY: 'loopback', PUBLIC_URL: 'https://abc.ngrok-free.app' });
    const before = h.logLines.length;
    await h.request.get('/api/v1/files').set(auth).set(FORGED);
    const lines = h.logLines.slice(before).map((l) => JSON.parse(l) as { level: number });
    expect(lines.filter((l) => l.level >= 40)).toEqual([]);
    expect(consoleError).not.toHaveBeenCalled();
  });
});

describe('TRUST_PROXY and PUBLIC_URL parsing', () => {
  it.each([
    [undefined, false],
    ['false', false],
    ['off', false],
    ['true', true],
    ['loopback', 'loopback'],
    ['2', 2],
    ['10.0.0.0/8, 192.168.0.0/16', '10.0.0.0/8, 192.168.0.0/16'],
    ['loopback, fd00::/8', 'loopback, fd00::/8'],
    ['127.0.0.1, 10.0.0.0/255.0.0.0, ::1', '127.0.0.1, 10.0.0.0/255.0.0.0, ::1'],
  ])('TRUST_PROXY=%s -> %j, which Express accepts', (value, expected) => {
    const parsed = loadConfig(value === undefined ? {} : { TRUST_PROXY: value }, '/tmp').trustProxy;
    expect(parsed).toEqual(expected);
    expect(() => express().set('trust proxy', parsed)).not.toThrow();
  });

  it.each(['yes please!', 'loopback; rm -rf', 'banana', '10.0.0.0/99', '1.2.3.4/8 5.6.7.8', '::1/200', 'fd00::/ffff::'])('TRUST_PROXY=%s is refused, naming the variable', (value) => {
    expect(() => loadConfig({ TRUST_PROXY: value }, '/tmp')).toThrow(ConfigError);
    expect(() => loadConfig({ TRUST_PROXY: value }, '/tmp')).toThrow(/TRUST_PROXY/);
  });

  it.each(['ftp://x.example', 'not a url', 'https://x.example/?a=1', 'https://x.example/#f'])('PUBLIC_URL=%s is refused', (value) => {
    expect(() => loadConfig({ PUBLIC_URL: value }, '/tmp')).toThrow(/PUBLIC_URL/);
  });

  it('PUBLIC_URL loses its trailing slash', () => {
    expect(loadConfig({ PUBLIC_URL: 'https://x.example/base/' }, '/tmp').publicUrl).toBe('https://x.example/base');
  });
});
