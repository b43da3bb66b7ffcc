/**
 * `npm run tunnel` wiring. No tunnel can be opened from here (no internet), so the SDK's
 * forward() is replaced by a stand-in passed to startTunnel (dependency injection); the
 * server it starts is the real built one, and the tests check what a client of it sees.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startTunnel, TunnelError, type ForwardConfig, type RunningTunnel } from '../src/tunnel.js';
import { MAIN, childEnv, jsonRequest, tempDir } from './child.js';

const TOKEN = 'test-ngrok-authtoken-2xY9';
const PUBLIC = 'https://c0ffee-203-0-113-1.ngrok-free.app';
const dirs: string[] = [];
const running: RunningTunnel[] = [];
afterAll(async () => {
  for (const t of running) await t.stop('SIGKILL');
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A temp dir removed after the file's tests. */
function dir(): string {
  const d = tempDir();
  dirs.push(d);
  return d;
}

/** A port that was free a moment ago (the tunnel needs a fixed one). */
async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Stands in for ngrok.forward(): records its config and returns a listener with a fixed URL. */
function standIn(opts: { fail?: Error } = {}) {
  const calls: ForwardConfig[] = [];
  let closed = 0;
  return {
    calls,
    closed: () => closed,
    forward: async (config: ForwardConfig) => {
      calls.push(config);
      if (opts.fail) throw opts.fail;
      return { url: () => PUBLIC, close: async () => void closed++ };
    },
  };
}

describe('npm run tunnel', () => {
  it('without NGROK_AUTHTOKEN: a clear message, and no tunnel and no server are started', async () => {
    const ngrok = standIn();
    const d = dir();
    await expect(startTunnel({ env: childEnv(d), forward: ngrok.forward, log: () => {}, mainScript: MAIN })).rejects.toThrow(TunnelError);
    await expect(startTunnel({ env: childEnv(d), forward: ngrok.forward, log: () => {}, mainScript: MAIN })).rejects.toThrow(/NGROK_AUTHTOKEN.*\n.*dashboard\.ngrok\.com/);
    expect(ngrok.calls).toEqual([]);
    expect(fs.existsSync(path.join(d, 'data'))).toBe(false);
  });

  it('the real entry point says the same and exits 1 (this path needs no network)', () => {
    const d = dir();
    const r = spawnSync(process.execPath, [path.join(path.dirname(MAIN), 'tunnel-main.js')], { env: childEnv(d), encoding: 'utf8', cwd: d });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('npm run tunnel needs an ngrok authtoken in NGROK_AUTHTOKEN');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('the SDK loads its native binding from the npm package (nothing downloaded at install)', async () => {
    const ngrok = await import('@ngrok/ngrok');
    expect(typeof ngrok.forward).toBe('function');
  });

  it('with a token: forwards to the local port, starts the server with PUBLIC_URL and TRUST_PROXY=loopback, and closes on stop', async () => {
    const ngrok = standIn();
    const d = dir();
    const port = await freePort();
    let out = '';
    const t = await startTunnel({
      env: childEnv(d, { PORT: String(port), NGROK_AUTHTOKEN: TOKEN, TRUST_PROXY: 'true', PUBLIC_URL: 'https://old.example.org' }),
      forward: ngrok.forward,
      log: (text) => (out += text),
      mainScript: MAIN,
      cwd: d,
    });
    running.push(t);
    expect(ngrok.calls).toEqual([{ addr: `127.0.0.1:${port}`, authtoken: TOKEN }]);
    expect(t.url).toBe(PUBLIC);
    expect(t.port).toBe(port);
    expect(out).toContain(`ngrok tunnel: ${PUBLIC}  ->  http://127.0.0.1:${port}`);
    expect(out).toMatch(/TRUST_PROXY=true replaced by "loopback"/);
    expect(out).toMatch(/Create the first admin NOW/);
    expect(out).not.toContain(TOKEN);

    // The server really got the settings, and not the ngrok token.
    const env = fs.readFileSync(`/proc/${t.server.pid}/environ`, 'utf8').split('\0');
    expect(env).toContain(`PUBLIC_URL=${PUBLIC}`);
    expect(env).toContain('TRUST_PROXY=loopback');
    expect(env.some((e) => e.startsWith('NGROK_AUTHTOKEN='))).toBe(false);

    // What a client sees: share links on the tunnel URL; the client address from the tunnel hop's X-Forwarded-For.
    const code = fs.readFileSync(path.join(d, 'data', 'setup-code'), 'utf8').trim();
    expect((await jsonRequest(port, 'POST', '/api/v1/setup', { setupCode: code, username: 'admin', password: 'tunnel admin password' })).status).toBe(201);
    const tok = await jsonRequest(port, 'POST', '/api/v1/auth/tokens', { username: 'admin', password: 'tunnel admin password' }, { 'X-Forwarded-For': '198.51.100.23', 'X-Forwarded-Proto': 'https' });
    const auth = { Authorization: `Bearer ${tok.body.token}` };
    const up = await new Promise<any>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: '/api/v1/uploads/t.txt', headers: auth }, (res) => {
        let s = '';
        res.on('data', (c) => (s += c));
        res.on('end', () => resolve(JSON.parse(s)));
      });
      req.on('error', reject);
      req.end('through the tunnel');
    });
    const share = await jsonRequest(port, 'POST', `/api/v1/files/${up.file.id}/shares`, {}, { ...auth, Host: 'localhost', 'X-Forwarded-Host': 'evil.example' });
    expect(share.body.url).toBe(`${PUBLIC}/s/${share.body.token}`);
    const audit = await jsonRequest(port, 'GET', '/api/v1/audit?limit=20', undefined, auth);
    const login = audit.body.events.find((e: { action: string; outcome: string }) => e.action === 'auth.login' && e.outcome === 'success');
    expect(login.ip).toBe('198.51.100.23');

    expect(await t.stop()).toBe(0);
    expect(ngrok.closed()).toBe(1);
  });

  it('with HTTPS configured, the tunnel forwards to https:// on the local port', async () => {
    const ngrok = standIn({ fail: new Error(`failed to connect: invalid authtoken ${TOKEN}`) });
    const d = dir();
    fs.writeFileSync(path.join(d, 'c.pem'), '');
    fs.writeFileSync(path.join(d, 'k.pem'), '');
    const err = await startTunnel({
      env: childEnv(d, { PORT: '8443', NGROK_AUTHTOKEN: TOKEN, TLS_CERT_FILE: 'c.pem', TLS_KEY_FILE: 'k.pem' }),
      forward: ngrok.forward,
      log: () => {},
      mainScript: MAIN,
      cwd: d,
    }).catch((e: Error) => e);
    expect(ngrok.calls).toEqual([{ addr: 'https://127.0.0.1:8443', authtoken: TOKEN, verify_upstream_tls: false }]);
    // A failing SDK call: a clear message without the token, and no server started.
    expect(err).toBeInstanceOf(TunnelError);
    expect((err as Error).message).toBe('could not open the ngrok tunnel: failed to connect: invalid authtoken [NGROK_AUTHTOKEN]');
    expect(fs.existsSync(path.join(d, 'data'))).toBe(false);
  });

  it('a server that cannot start closes the tunnel and says so', async () => {
    const ngrok = standIn();
    const d = dir();
    let out = '';
    const err = await startTunnel({
      env: childEnv(d, { PORT: String(await freePort()), NGROK_AUTHTOKEN: TOKEN, MAX_FILE_SIZE: 'lots' }),
      forward: ngrok.forward,
      log: (text) => (out += text),
      mainScript: MAIN,
      cwd: d,
    }).catch((e: Error) => e);
    // MAX_FILE_SIZE is checked by loadConfig before anything starts.
    expect(String(err)).toMatch(/MAX_FILE_SIZE/);
    expect(ngrok.calls).toEqual([]);
    const port = await freePort();
    const blocker = http.createServer();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
    try {
      const busy = await startTunnel({
        env: childEnv(d, { PORT: String(port), NGROK_AUTHTOKEN: TOKEN }),
        forward: ngrok.forward,
        log: (text) => (out += text),
        mainScript: MAIN,
        cwd: d,
      }).catch((e: Error) => e);
      expect(busy).toBeInstanceOf(TunnelError);
      expect(String(busy)).toMatch(/server did not start \(exit code 1\)/);
      expect(out).toMatch(/already in use/);
      expect(ngrok.closed()).toBe(1);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });
});
