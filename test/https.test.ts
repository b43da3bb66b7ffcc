/**
 * Direct HTTPS (no tunnel or proxy): TLS_CERT_FILE + TLS_KEY_FILE make the built server listen
 * with HTTPS over HTTP/1.1. The certificate is self-signed, made here with openssl.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childEnv, runToExit, startChild, tempDir, type Child } from './child.js';

const dir = tempDir();
const certFile = path.join(dir, 'cert.pem');
const keyFile = path.join(dir, 'key.pem');
let child: Child;
let cert: Buffer;

afterAll(async () => {
  await child?.stop('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  httpVersion: string;
  alpn: string | false | null;
}

/** An HTTPS request trusting only the test certificate. */
function request(method: string, p: string, opts: { body?: string | Buffer; headers?: Record<string, string>; ca?: Buffer | null } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', servername: 'localhost', port: child.port, agent: false, method, path: p, headers: opts.headers, ca: opts.ca === null ? undefined : (opts.ca ?? cert), ALPNProtocols: ['h2', 'http/1.1'] } as https.RequestOptions,
      (res) => {
        // Read now: the socket is detached from the response once it ends.
        const alpn = (res.socket as TLSSocket).alpnProtocol;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, httpVersion: res.httpVersion, alpn }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

beforeAll(async () => {
  // A throwaway self-signed certificate for localhost and 127.0.0.1.
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  cert = fs.readFileSync(certFile);
  child = await startChild(childEnv(dir, { TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile }));
});

describe('HTTPS with TLS_CERT_FILE and TLS_KEY_FILE', () => {
  it('announces https and answers over TLS with HTTP/1.1', async () => {
    expect(child.stderr()).toMatch(/listening on https:\/\/localhost:\d+/);
    const r = await request('GET', '/healthz');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ status: 'ok' });
    expect(r.httpVersion).toBe('1.1');
    // Offered h2 and http/1.1: the server picks HTTP/1.1 (or does no ALPN, which means the same).
    expect([false, 'http/1.1', null]).toContain(r.alpn);
  });

  it('the certificate is really checked: without trusting it the client refuses', async () => {
    await expect(request('GET', '/healthz', { ca: null })).rejects.toThrow(/self[- ]signed|certificate/i);
  });

  it('plain HTTP on the same port gets no HTTP answer', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: child.port, path: '/healthz' }, (res) => resolve(`answered ${res.statusCode}`));
      req.on('error', (e) => resolve(`error ${(e as NodeJS.ErrnoException).code ?? e.message}`));
      req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    });
    expect(outcome).toMatch(/^error /);
  });

  it('the API works over it: links are https and the recipient cookie is Secure', async () => {
    const code = fs.readFileSync(path.join(dir, 'data', 'setup-code'), 'utf8').trim();
    const json = { 'Content-Type': 'application/json' };
    const setup = await request('POST', '/api/v1/setup', { headers: json, body: JSON.stringify({ setupCode: code, username: 'admin', password: 'https admin password' }) });
    expect(setup.status).toBe(201);
    const tok = await request('POST', '/api/v1/auth/tokens', { headers: json, body: JSON.stringify({ username: 'admin', password: 'https admin password' }) });
    const auth = { Authorization: `Bearer ${JSON.parse(tok.body).token}` };
    const up = await request('PUT', '/api/v1/uploads/tls.txt', { headers: auth, body: 'over tls' });
    expect(up.status).toBe(201);
    const id = JSON.parse(up.body).file.id;
    const share = await request('POST', `/api/v1/files/${id}/shares`, { headers: { ...auth, ...json, Host: `localhost:${child.port}` }, body: JSON.stringify({ password: 'share password 1' }) });
    const s = JSON.parse(share.body);
    expect(s.url).toBe(`https://localhost:${child.port}/s/${s.token}`);
    const page = await request('GET', `/s/${s.token}`);
    expect(String(page.headers['set-cookie'])).toMatch(/^__Host-sfs-share-csrf=.*;\s*Secure/i);
    const down = await request('GET', `/api/v1/files/${id}/content`, { headers: auth });
    expect(down.body).toBe('over tls');
  });

  it('curl reaches it with --cacert, over HTTP/1.1 even when it asks for HTTP/2', () => {
    const r = spawnSync('curl', ['-sS', '--http2', '--cacert', certFile, '-w', '\n%{http_code} %{http_version}', `https://localhost:${child.port}/healthz`], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual(['{"status":"ok"}', '200 1.1']);
  });
});

describe('TLS settings that cannot work stop start-up with a clear message', () => {
  it.each([
    [{ TLS_CERT_FILE: 'cert.pem' }, 'TLS_KEY_FILE'],
    [{ TLS_KEY_FILE: 'key.pem' }, 'TLS_CERT_FILE'],
    [{ TLS_CERT_FILE: 'missing-cert.pem', TLS_KEY_FILE: 'missing-key.pem' }, 'TLS_CERT_FILE'],
  ])('%j names %s', async (extra, variable) => {
    const d = tempDir();
    try {
      const r = await runToExit(childEnv(d, extra));
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(variable);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    } finally {
      fs.rmSync(d, { recursive: true, force: true });
    }
  });
});
