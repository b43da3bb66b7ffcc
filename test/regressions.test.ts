/** Regressions found in review: each case once broke something real. */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { redactUrl } from '../src/http/logging.js';
import { cleanFileName } from '../src/services/filenames.js';
import { makeHarness, pattern, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

async function listen(app: http.RequestListener) {
  const server = http.createServer(app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Open descriptors of this process that point into `dir`. */
function openFdsUnder(dir: string): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir)) n++;
    } catch {
      /* closed meanwhile */
    }
  }
  return n;
}

describe('review findings', () => {
  it('downloads aborted before the first read do not leak the ciphertext file descriptor', async () => {
    h = await makeHarness();
    const token = await setupAdmin(h);
    const up = await h.request.put('/api/v1/uploads/big.bin').set('Authorization', `Bearer ${token}`).send(pattern(3 * 1024 * 1024, 1));
    const { server, port } = await listen(h.app);
    try {
      for (let i = 0; i < 40; i++) {
        await new Promise<void>((resolve) => {
          const sock = net.connect(port, '127.0.0.1', () => {
            sock.write(`GET /api/v1/files/${up.body.file.id}/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`);
            // Reset as soon as the request is out: the server may not have read a byte yet.
            setImmediate(() => {
              sock.resetAndDestroy();
              resolve();
            });
          });
        });
      }
      await new Promise((r) => setTimeout(r, 300));
      expect(openFdsUnder(h.config.uploadsDir)).toBe(0);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('a raw PUT labelled application/json stores the body as the file', async () => {
    h = await makeHarness();
    const token = await setupAdmin(h);
    const body = JSON.stringify({ big: 'x'.repeat(100_000) });
    const r = await h.request.put('/api/v1/uploads/data.json').set('Authorization', `Bearer ${token}`).set('Content-Type', 'application/json').send(body);
    expect(r.status).toBe(201);
    expect(r.body.file.size).toBe(body.length);
    expect(r.body.file.mimeType).toBe('application/json');
  });

  it('a request refused before its body is read closes the connection instead of reading it all', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const { server, port } = await listen(h.app);
    try {
      const result = await new Promise<{ response: string; sent: number }>((resolve) => {
        const sock = net.connect(port, '127.0.0.1');
        let response = '';
        let sent = 0;
        let stop = false;
        const done = () => {
          stop = true;
          resolve({ response, sent });
        };
        sock.on('data', (d) => {
          response += d;
          stop = true;
          sock.end();
        });
        sock.on('close', done);
        sock.on('error', done);
        sock.write('PUT /api/v1/uploads/x.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sfs_invalid\r\nTransfer-Encoding: chunked\r\n\r\n');
        const chunk = Buffer.concat([Buffer.from('10000\r\n'), Buffer.alloc(0x10000), Buffer.from('\r\n')]);
        const pump = () => {
          while (!stop && sent < 256 * 1024 * 1024) {
            sent += 0x10000;
            if (!sock.write(chunk)) return void sock.once('drain', pump);
          }
        };
        pump();
      });
      expect(result.response).toMatch(/^HTTP\/1\.1 401/);
      expect(result.response).toMatch(/connection: close/i);
      expect(result.sent).toBeLessThan(64 * 1024 * 1024);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it.each([
    ['inv\u{E0041}\u{E0042}oice.pdf', 'invoice.pdf'],
    ['a\u034Fb\u115F\u3164.txt', 'ab.txt'],
    ['e\u200B\u0301.txt', 'é.txt'],
  ])('cleans invisible characters in %j', (raw, clean) => {
    expect(cleanFileName(raw)).toBe(clean);
  });

  it('redacts percent-encoded tokens in logged URLs', () => {
    const url = '/api/v1/files/%73fs_AbCdEf0123456789?x=1';
    expect(redactUrl(url)).not.toContain('AbCdEf0123456789');
    expect(redactUrl('/s/%41%42%43/content?ticket=123.abc')).toBe('/s/[redacted]/content?ticket=[redacted]');
  });
});
