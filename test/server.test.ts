/** The built server as a real process: start-up checks, early 413s, memory bound on a large transfer, shutdown. */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { childAdminToken, childEnv, currentRss, jsonRequest, peakRss, randomKey, runToExit, startChild, tempDir, type Child } from './child.js';

const dirs: string[] = [];
const children: Child[] = [];
function dir(): string {
  const d = tempDir();
  dirs.push(d);
  return d;
}
afterAll(async () => {
  for (const c of children) await c.stop('SIGKILL');
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function start(env: Record<string, string>): Promise<Child> {
  const c = await startChild(env);
  children.push(c);
  return c;
}

describe('start-up', () => {
  it.each([
    ['PORT', 'abc'],
    ['MAX_FILE_SIZE', 'lots'],
    ['TRUST_PROXY', 'yes please!'],
    ['TRUST_PROXY', 'fals'],
    ['TRUST_PROXY', '10.0.0.0/33'],
    ['TLS_CERT_FILE', 'cert.pem'],
    ['NODE_ENV', 'staging'],
    ['MASTER_KEY', 'dG9vIHNob3J0'],
  ])('a bad %s stops start-up with a message naming it and no stack trace', async (name, value) => {
    const d = dir();
    const r = await runToExit(childEnv(d, { [name]: value }));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(name);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    if (name === 'MASTER_KEY') expect(r.stderr).not.toContain(value);
  });

  it('production without a master key refuses and says how to make one', async () => {
    const d = dir();
    const r = await runToExit(childEnv(d, { NODE_ENV: 'production' }));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('npm run keygen');
    expect(fs.existsSync(path.join(d, 'master.key'))).toBe(false);
  });

  it('development generates a 0600 master key with a loud warning, and reuses it', async () => {
    const d = dir();
    const c = await start(childEnv(d));
    const keyFile = path.join(d, 'master.key');
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(Buffer.from(fs.readFileSync(keyFile, 'utf8').trim(), 'base64').length).toBe(32);
    expect(c.stderr()).toMatch(/NEW MASTER KEY/);
    expect(c.stderr()).toMatch(/BACK IT UP/);
    expect(c.stderr()).not.toContain(fs.readFileSync(keyFile, 'utf8').trim());
    const code = fs.readFileSync(path.join(d, 'data', 'setup-code'), 'utf8').trim();
    expect(fs.statSync(path.join(d, 'data', 'setup-code')).mode & 0o777).toBe(0o600);
    expect(c.stderr()).toContain(code);
    await childAdminToken(c);
    expect(fs.existsSync(path.join(d, 'data', 'setup-code'))).toBe(false);
    expect(await c.stop()).toBe(0);
    const key = fs.readFileSync(keyFile, 'utf8');
    const again = await start(childEnv(d));
    expect(fs.readFileSync(keyFile, 'utf8')).toBe(key);
    expect(again.stderr()).not.toMatch(/NEW MASTER KEY/);
    expect(again.stderr()).not.toMatch(/setup code/i);
    await again.stop();
  });

  it('refuses to start with a master key that does not match the database', async () => {
    const d = dir();
    const c = await start(childEnv(d, { MASTER_KEY: randomKey() }));
    const token = await childAdminToken(c);
    const up = await new Promise<number>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port: c.port, method: 'PUT', path: '/api/v1/uploads/a.txt', headers: { Authorization: `Bearer ${token}` } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.end('hello');
    });
    expect(up).toBe(201);
    await c.stop();
    const r = await runToExit(childEnv(d, { MASTER_KEY: randomKey() }));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not configured|not one this database/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('a missing key file is not replaced by a new key when the database already used one', async () => {
    const d = dir();
    const c = await start(childEnv(d));
    await childAdminToken(c);
    // A file upload records the key in the database.
    const t = await jsonRequest(c.port, 'POST', '/api/v1/auth/tokens', { username: 'admin', password: 'child admin password', name: 'x' });
    await new Promise<void>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port: c.port, method: 'PUT', path: '/api/v1/uploads/a.txt', headers: { Authorization: `Bearer ${t.body.token}` } }, (res) => {
        res.resume();
        res.on('end', () => resolve());
      });
      req.end('hello');
    });
    await c.stop();
    fs.renameSync(path.join(d, 'master.key'), path.join(d, 'master.key.moved'));
    const r = await runToExit(childEnv(d));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('MASTER_KEY_FILE');
    expect(r.stderr).toMatch(/restore the key file/);
    expect(r.stderr).not.toMatch(/NEW MASTER KEY/);
    expect(fs.existsSync(path.join(d, 'master.key'))).toBe(false);
  });

  it('start-up removes temp files and ciphertext left without a row by a crash', async () => {
    const d = dir();
    const c = await start(childEnv(d));
    await c.stop();
    const sub = path.join(d, 'uploads', 'ab');
    fs.mkdirSync(sub, { recursive: true });
    fs.writeFileSync(path.join(sub, 'ab' + '0'.repeat(30) + '.enc'), 'orphan');
    fs.writeFileSync(path.join(sub, 'ab' + '1'.repeat(30) + '.tmp'), 'partial');
    const again = await start(childEnv(d));
    expect(fs.readdirSync(sub)).toEqual([]);
    await again.stop();
  });

  it('npm run keygen equivalent refuses to overwrite an existing key', async () => {
    const { generateKeyFile, KeyFileExistsError } = await import('../src/keyfile.js');
    const d = dir();
    const f = path.join(d, 'k');
    generateKeyFile(f);
    const before = fs.readFileSync(f);
    expect(() => generateKeyFile(f)).toThrow(KeyFileExistsError);
    expect(fs.readFileSync(f).equals(before)).toBe(true);
    expect(fs.statSync(f).mode & 0o777).toBe(0o600);
  });
});

describe('uploads that must not be read to the end', () => {
  let c: Child;
  let token: string;
  it('starts a server with a 1 MiB limit', async () => {
    c = await start(childEnv(dir(), { MAX_FILE_SIZE: '1MiB' }));
    token = await childAdminToken(c);
  });

  it('Expect: 100-continue with an oversize Content-Length gets 413 instead of 100', async () => {
    const result = await new Promise<{ status: number; gotContinue: boolean }>((resolve, reject) => {
      let gotContinue = false;
      const req = http.request({
        host: '127.0.0.1',
        port: c.port,
        method: 'PUT',
        path: '/api/v1/uploads/big.bin',
        headers: { Authorization: `Bearer ${token}`, 'Content-Length': String(50 * 1024 ** 3), Expect: '100-continue' },
      });
      req.on('continue', () => {
        gotContinue = true;
      });
      req.on('response', (res) => {
        res.resume();
        resolve({ status: res.statusCode!, gotContinue });
        req.destroy();
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    expect(result).toEqual({ status: 413, gotContinue: false });
  });

  it('Expect: 100-continue within the limit gets 100 and stores the file', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1',
        port: c.port,
        method: 'PUT',
        path: '/api/v1/uploads/small.bin',
        headers: { Authorization: `Bearer ${token}`, 'Content-Length': '5', Expect: '100-continue' },
      });
      req.on('continue', () => req.end('hello'));
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    expect(status).toBe(201);
  });

  it.each(['PUT', 'multipart'])('%s: a chunked body over the limit is answered 413 and the connection closed early', async (kind) => {
    // Stream up to 64 MiB without a Content-Length; the server must stop reading near 1 MiB.
    const boundary = 'XBOUNDARY';
    const head =
      kind === 'PUT'
        ? `PUT /api/v1/uploads/huge.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nTransfer-Encoding: chunked\r\n\r\n`
        : `POST /api/v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nTransfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=${boundary}\r\n\r\n`;
    const preamble = kind === 'PUT' ? '' : `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.bin"\r\n\r\n`;
    const result = await new Promise<{ response: string; sent: number }>((resolve) => {
      const sock = net.connect(c.port, '127.0.0.1');
      let response = '';
      let sent = 0;
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        resolve({ response, sent });
      };
      let answered = false;
      sock.on('data', (d) => {
        response += d;
        // Like curl: stop sending once the server has answered, and close our side.
        if (!answered) {
          answered = true;
          sock.end();
        }
      });
      sock.on('close', finish);
      sock.on('error', finish);
      sock.write(head);
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const frame = (b: Buffer) => Buffer.concat([Buffer.from(b.length.toString(16) + '\r\n'), b, Buffer.from('\r\n')]);
      if (preamble) sock.write(frame(Buffer.from(preamble)));
      sock.on('end', finish);
      const pump = () => {
        while (!done && !answered && sent < 64 * 1024 * 1024) {
          sent += chunk.length;
          if (!sock.write(frame(chunk))) return void sock.once('drain', pump);
        }
      };
      pump();
      setTimeout(() => {
        sock.destroy();
        finish();
      }, 15_000);
    });
    expect(result.response).toMatch(/^HTTP\/1\.1 413/);
    expect(result.response).toMatch(/connection: close/i);
    expect(result.response).toContain('file_too_large');
    expect(result.sent).toBeLessThan(32 * 1024 * 1024);
    const uploads = path.join(c.dir, 'uploads');
    const leftovers = fs.readdirSync(uploads, { recursive: true }).filter((f) => String(f).endsWith('.tmp'));
    expect(leftovers).toEqual([]);
  });
});

describe('large transfer in bounded memory', () => {
  it('200 MiB up and down: byte-exact, and the server peak RSS stays far below the file size', async () => {
    const c = await start(childEnv(dir(), { MAX_FILE_SIZE: '1GiB' }));
    const token = await childAdminToken(c);
    const SIZE = 200 * 1024 * 1024;
    const rssBefore = currentRss(c.proc.pid!);
    const block = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < block.length; i++) block[i] = (i * 7919) & 0xff;
    const upHash = createHash('sha256');
    const uploaded = await new Promise<{ status: number; body: any }>((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port: c.port, method: 'PUT', path: '/api/v1/uploads/big.bin', headers: { Authorization: `Bearer ${token}`, 'Content-Length': String(SIZE) } },
        (res) => {
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
        },
      );
      req.on('error', reject);
      let sent = 0;
      const pump = () => {
        while (sent < SIZE) {
          block.writeUInt32BE(sent / block.length, 0); // every MiB differs
          upHash.update(block);
          sent += block.length;
          const ok = req.write(Buffer.from(block));
          if (!ok) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    });
    expect(uploaded.status).toBe(201);
    const expected = upHash.digest('hex');
    expect(uploaded.body.file.sha256).toBe(expected);
    expect(uploaded.body.file.size).toBe(SIZE);

    const down = await new Promise<{ status: number; hash: string; bytes: number }>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: c.port, path: `/api/v1/files/${uploaded.body.file.id}/content`, headers: { Authorization: `Bearer ${token}` } }, (res) => {
        const hash = createHash('sha256');
        let bytes = 0;
        res.on('data', (d: Buffer) => {
          bytes += d.length;
          hash.update(d);
        });
        res.on('end', () => resolve({ status: res.statusCode!, hash: hash.digest('hex'), bytes }));
        res.on('error', reject);
      });
    });
    expect(down).toEqual({ status: 200, hash: expected, bytes: SIZE });
    const peak = peakRss(c.proc.pid!);
    console.log(`server RSS before: ${(rssBefore / 2 ** 20).toFixed(1)} MiB, peak over 200 MiB up+down: ${(peak / 2 ** 20).toFixed(1)} MiB`);
    // Bounds, not timings: a server that buffered the file (or a large part of it) would exceed them.
    // The fixed part (~110 MiB: Node, modules, argon2's arena, the query builder) does not grow
    // with the file; what matters is the growth, bounded tightly. The absolute bound only says the
    // whole file was never in memory: the fixed part alone varies by ~15 MiB with what else the
    // machine runs (163.7 MiB seen once in a full parallel run, 148-153 MiB alone), so a tighter
    // absolute bound measured the machine, not the server. Issue 13 owns the RSS target (bench).
    expect(peak - rssBefore).toBeLessThan(SIZE / 3);
    expect(peak).toBeLessThan(SIZE);
    await c.stop();
  });
});

describe('shutdown', () => {
  it('SIGTERM exits 0', async () => {
    const c = await start(childEnv(dir()));
    const h = await jsonRequest(c.port, 'GET', '/healthz');
    expect(h).toEqual({ status: 200, body: { status: 'ok' } });
    expect(await c.stop('SIGTERM')).toBe(0);
  });
});
