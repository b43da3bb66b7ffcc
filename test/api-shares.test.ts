/** Share links: creation, recipient page and downloads, passwords, identical 404s, download budgets. */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { binaryParser, downloadsSettled, listFiles, makeHarness, pattern, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
let token: string;
afterEach(() => h?.cleanup());
const auth = () => ({ Authorization: `Bearer ${token}` });
const basic = (password: string) => ({ Authorization: `Basic ${Buffer.from(`:${password}`).toString('base64')}` });

async function init(env: Record<string, string> = {}) {
  h = await makeHarness(env);
  token = await setupAdmin(h);
}

async function upload(content: Buffer, name = 'report.pdf') {
  const r = await h.request.put(`/api/v1/uploads/${name}`).set(auth()).send(content);
  expect(r.status).toBe(201);
  return r.body.file as { id: string; name: string; size: number; sha256: string };
}

async function share(fileId: string, body: Record<string, unknown> = {}) {
  const r = await h.request.post(`/api/v1/files/${fileId}/shares`).set(auth()).send(body);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body as { id: string; url: string; token: string; downloads: number; bytesServed: number; maxDownloads: number | null; passwordProtected: boolean; expiresAt: string };
}

const get = (path: string, headers: Record<string, string> = {}) => h.request.get(path).set(headers).buffer(true).parse(binaryParser);

/** The link's counters once its downloads have settled. */
async function shareRow(id: string) {
  await downloadsSettled(h);
  return (await h.sql<{ downloads: number; bytes_served: number }>('SELECT downloads, bytes_served FROM shares WHERE id = ?', [id]))[0]!;
}

async function listen(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer(h.app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe('creating and listing shares', () => {
  it('returns the link once; the database keeps only a hash', async () => {
    await init({ PUBLIC_URL: 'https://files.example.org' });
    const f = await upload(Buffer.from('hello'));
    const s = await share(f.id, { maxDownloads: 3, password: 'share password 1', note: 'for Bob' });
    expect(s.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(s.url).toBe(`https://files.example.org/s/${s.token}`);
    expect(s).toMatchObject({ maxDownloads: 3, downloads: 0, bytesServed: 0, passwordProtected: true });
    expect(Date.parse(s.expiresAt) - Date.now()).toBeGreaterThan(7 * 86400_000 - 60_000);
    if (h.dialect === 'sqlite') h.db.pragma('wal_checkpoint(FULL)');
    for (const file of listFiles(h.config.dataDir)) {
      const bytes = fs.readFileSync(file);
      expect(bytes.includes(Buffer.from(s.token)), file).toBe(false);
      expect(bytes.includes(Buffer.from('share password 1')), file).toBe(false);
    }
    // Every row too (on PostgreSQL the rows are not in data/).
    for (const [table, rows] of Object.entries(await h.tableRows())) {
      for (const row of rows) {
        for (const [col, v] of Object.entries(row)) {
          const bytes = Buffer.isBuffer(v) ? v : Buffer.from(String(v));
          expect(bytes.includes(Buffer.from(s.token)), `${table}.${col}`).toBe(false);
          expect(bytes.includes(Buffer.from('share password 1')), `${table}.${col}`).toBe(false);
        }
      }
    }
    const [row] = await h.sql<{ password_hash: string }>('SELECT password_hash FROM shares WHERE id = ?', [s.id]);
    expect(row.password_hash).toMatch(/^\$argon2id\$/);
    const list = await h.request.get(`/api/v1/files/${f.id}/shares`).set(auth());
    expect(list.status).toBe(200);
    expect(list.body.shares).toHaveLength(1);
    expect(list.body.shares[0]).toMatchObject({ id: s.id, note: 'for Bob', status: 'active' });
    expect(JSON.stringify(list.body)).not.toContain(s.token);
    expect(JSON.stringify(list.body)).not.toMatch(/argon|token/i);
  });

  it('without PUBLIC_URL the link uses the request host, and ignores X-Forwarded-Host when not trusted', async () => {
    await init();
    const f = await upload(Buffer.from('x'));
    const r = await h.request.post(`/api/v1/files/${f.id}/shares`).set(auth()).set('Host', 'files.local:3000').set('X-Forwarded-Host', 'evil.example').send({});
    expect(r.body.url).toBe(`http://files.local:3000/s/${r.body.token}`);
  });

  it.each([
    [{ expiresInSeconds: 91 * 86400 }, 'expiresInSeconds'],
    [{ expiresInSeconds: 10 }, 'expiresInSeconds'],
    [{ maxDownloads: 0 }, 'maxDownloads'],
    [{ password: 'short' }, 'password'],
    [{ bogus: 1 }, 'bogus'],
  ])('rejects %j naming the field', async (body, field) => {
    await init();
    const f = await upload(Buffer.from('x'));
    const r = await h.request.post(`/api/v1/files/${f.id}/shares`).set(auth()).send(body);
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('validation_error');
    expect(r.body.detail).toContain(field);
  });

  it("cannot share another user's file", async () => {
    await init();
    const f = await upload(Buffer.from('x'));
    await h.request.post('/api/v1/users').set(auth()).send({ username: 'eve', password: 'eve password 123' });
    const eve = (await h.request.post('/api/v1/auth/tokens').send({ username: 'eve', password: 'eve password 123' })).body.token;
    const r = await h.request.post(`/api/v1/files/${f.id}/shares`).set('Authorization', `Bearer ${eve}`).send({});
    expect(r.status).toBe(404);
  });
});

describe('recipient', () => {
  it('page shows name, size and checksum; the link downloads the exact bytes with download headers', async () => {
    await init();
    const content = pattern(200_000, 3);
    const f = await upload(content, 'Q3 résumé.pdf');
    const s = await share(f.id, { maxDownloads: 2 });
    const page = await h.request.get(`/s/${s.token}`);
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.text).toContain('Q3 résumé.pdf');
    expect(page.text).toContain(f.sha256);
    expect(page.text).toContain('195 KiB');
    expect(page.text).toMatch(/Downloads left<\/dt><dd>2/);
    const r = await get(`/s/${s.token}/content`);
    expect(r.status).toBe(200);
    expect((r.body as Buffer).equals(content)).toBe(true);
    expect(r.headers['content-disposition']).toContain("filename*=UTF-8''Q3%20r%C3%A9sum%C3%A9.pdf");
    expect(r.headers['etag']).toBe(`"${f.sha256}"`);
    expect(r.headers['content-security-policy']).toBe("sandbox; default-src 'none'");
    const range = await get(`/s/${s.token}/content`, { Range: 'bytes=100-199' });
    expect(range.status).toBe(206);
    expect((range.body as Buffer).equals(content.subarray(100, 200))).toBe(true);
    expect(await shareRow(s.id)).toEqual({ downloads: 1, bytes_served: 200_100 });
  });

  it('a password-protected page reveals nothing before the password', async () => {
    await init();
    const f = await upload(Buffer.from('secret contents'), 'merger-plan.docx');
    const s = await share(f.id, { password: 'open sesame 42' });
    const page = await h.request.get(`/s/${s.token}`);
    expect(page.status).toBe(200);
    expect(page.text).toContain('type="password"');
    expect(page.text).not.toContain('merger-plan');
    expect(page.text).not.toContain(f.sha256);
    expect(page.text).not.toContain(String(f.size) + ' bytes');
  });

  it('Basic auth: missing and wrong passwords are 401, the right one downloads (curl -u :PASSWORD)', async () => {
    await init();
    const f = await upload(Buffer.from('basic bytes'));
    const s = await share(f.id, { password: 'open sesame 42' });
    const none = await h.request.get(`/s/${s.token}/content`);
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toMatch(/^Basic/);
    expect(none.body.code).toBe('unauthorized');
    const wrong = await h.request.get(`/s/${s.token}/content`).set(basic('nope nope nope'));
    expect(wrong.status).toBe(401);
    const ok = await get(`/s/${s.token}/content`, { Authorization: `Basic ${Buffer.from('anyone:open sesame 42').toString('base64')}` });
    expect(ok.status).toBe(200);
    expect(ok.body.toString()).toBe('basic bytes');
    const head = await h.request.head(`/s/${s.token}/content`);
    expect(head.status).toBe(401);
  });

  it('form password: CSRF required, wrong password re-renders with an error, right one shows the details with a ticket download link', async () => {
    await init();
    const content = pattern(100_000, 5);
    const f = await upload(content);
    const s = await share(f.id, { password: 'open sesame 42', maxDownloads: 5 });
    const agent = (await import('supertest')).default.agent(h.app);
    const noCsrf = await agent.post(`/s/${s.token}`).type('form').send({ password: 'open sesame 42' });
    expect(noCsrf.status).toBe(403);
    expect(noCsrf.body.code).toBe('csrf_invalid');
    const page = await agent.get(`/s/${s.token}`);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
    expect(String(page.headers['set-cookie'])).toMatch(/HttpOnly/i);
    const wrong = await agent.post(`/s/${s.token}`).type('form').send({ _csrf: csrf, password: 'not the password' });
    expect(wrong.status).toBe(401);
    expect(wrong.text).toContain('not right');
    const right = await agent.post(`/s/${s.token}`).type('form').send({ _csrf: csrf, password: 'open sesame 42' });
    expect(right.status).toBe(200);
    expect(right.text).toContain(f.sha256);
    expect(right.text).not.toContain('not right');
    const location = /href="(\/s\/[^"]+\/content\?ticket=[^"]+)"/.exec(right.text)![1]!;
    expect(location).toMatch(new RegExp(`^/s/${s.token}/content\\?ticket=`));
    // The ticket works without the password, for full and Range requests, from a fresh client.
    const full = await get(location);
    expect(full.status).toBe(200);
    expect((full.body as Buffer).equals(content)).toBe(true);
    const part = await get(location, { Range: 'bytes=10-19' });
    expect(part.status).toBe(206);
    expect((part.body as Buffer).equals(content.subarray(10, 20))).toBe(true);
    // The page with a ticket shows the details.
    const details = await h.request.get(`/s/${s.token}?ticket=${encodeURIComponent(location.split('ticket=')[1]!)}`);
    expect(details.text).toContain(f.sha256);
    // A forged or foreign ticket does not.
    const forged = await h.request.get(`/s/${s.token}/content?ticket=9999999999.${'A'.repeat(43)}`);
    expect(forged.status).toBe(401);
    const forgedId = await h.request.get(`/s/${s.token}/content?ticket=9999999999.${'A'.repeat(22)}.${'A'.repeat(43)}`);
    expect(forgedId.status).toBe(401);
    const other = await share(f.id, { password: 'other password 1' });
    const foreign = await h.request.get(`/s/${other.token}/content?${location.split('?')[1]}`);
    expect(foreign.status).toBe(401);
  });

  it('CSRF token from one link does not work on another', async () => {
    await init();
    const f = await upload(Buffer.from('x'));
    const a = await share(f.id, { password: 'open sesame 42' });
    const b = await share(f.id, { password: 'open sesame 42' });
    const agent = (await import('supertest')).default.agent(h.app);
    const page = await agent.get(`/s/${a.token}`);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
    const r = await agent.post(`/s/${b.token}`).type('form').send({ _csrf: csrf, password: 'open sesame 42' });
    expect(r.status).toBe(403);
  });
});

describe('unavailable links all look the same', () => {
  it('unknown, revoked, expired, exhausted and deleted-file links give identical 404s', async () => {
    await init();
    const f = await upload(Buffer.from('abc'));
    const revoked = await share(f.id);
    expect((await h.request.delete(`/api/v1/shares/${revoked.id}`).set(auth())).status).toBe(204);
    const expired = await share(f.id);
    await h.sql('UPDATE shares SET expires_at = ? WHERE id = ?', [Date.now() - 1, expired.id]);
    const exhausted = await share(f.id, { maxDownloads: 1 });
    expect((await get(`/s/${exhausted.token}/content`)).status).toBe(200);
    const g = await upload(Buffer.from('gone'));
    const deleted = await share(g.id);
    expect((await h.request.delete(`/api/v1/files/${g.id}`).set(auth())).status).toBe(204);
    const tokens = ['A'.repeat(43), 'short', revoked.token, expired.token, exhausted.token, deleted.token];
    const pages = await Promise.all(tokens.map((t) => h.request.get(`/s/${t}`)));
    const contents = await Promise.all(tokens.map((t) => h.request.get(`/s/${t}/content`)));
    for (const p of pages) {
      expect(p.status).toBe(404);
      expect(p.text).toBe(pages[0]!.text);
    }
    for (const c of contents) {
      expect(c.status).toBe(404);
      expect({ ...c.body, requestId: '' }).toEqual({ ...contents[0]!.body, requestId: '' });
    }
    expect(contents[0]!.body.code).toBe('not_found');
    const listed = await h.request.get(`/api/v1/files/${f.id}/shares`).set(auth());
    const status = Object.fromEntries(listed.body.shares.map((s: { id: string; status: string }) => [s.id, s.status]));
    expect(status).toMatchObject({ [revoked.id]: 'revoked', [expired.id]: 'expired', [exhausted.id]: 'exhausted' });
  });

  it('the sweep marks expired shares', async () => {
    await init();
    const f = await upload(Buffer.from('abc'));
    const s = await share(f.id);
    await h.sql('UPDATE shares SET expires_at = ? WHERE id = ?', [Date.now() - 1, s.id]);
    expect(await h.app.services.shares.sweep()).toBe(1);
    expect(await h.sql('SELECT count(*) AS n FROM shares WHERE id = ? AND expired_at IS NOT NULL', [s.id])).toEqual([{ n: 1 }]);
  });
});

describe('password guessing is rate limited', () => {
  it('per client IP, with Retry-After', async () => {
    await init({ SHARE_PASSWORD_RATE_LIMIT: '3', SHARE_PASSWORD_RATE_LIMIT_PER_SHARE: '100' });
    const f = await upload(Buffer.from('x'));
    const s = await share(f.id, { password: 'open sesame 42' });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await h.request.get(`/s/${s.token}/content`).set(basic(`guess ${i} guess`))).status);
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    const limited = await h.request.get(`/s/${s.token}/content`).set(basic('open sesame 42'));
    expect(limited.status).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(limited.body.code).toBe('rate_limited');
  });

  it('per share, even when the guesses come from many addresses', async () => {
    await init({ TRUST_PROXY: 'true', SHARE_PASSWORD_RATE_LIMIT: '100', SHARE_PASSWORD_RATE_LIMIT_PER_SHARE: '4' });
    const f = await upload(Buffer.from('x'));
    const s = await share(f.id, { password: 'open sesame 42' });
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      statuses.push((await h.request.get(`/s/${s.token}/content`).set('X-Forwarded-For', `203.0.113.${i}`).set(basic(`guess ${i} guess`))).status);
    }
    expect(statuses).toEqual([401, 401, 401, 401, 429, 429]);
    const [events] = await h.sql<{ n: number }>("SELECT count(*) AS n FROM audit_events WHERE action = 'rate_limit.hit'");
    expect(events.n).toBeGreaterThanOrEqual(1);
    expect(events.n).toBeLessThan(6);
  });
});

describe('download budgets that allow resume', () => {
  it('two concurrent full downloads against maxDownloads=1: exactly one gets the file', async () => {
    await init();
    const content = pattern(8 * 1024 * 1024, 9);
    const f = await upload(content);
    const s = await share(f.id, { maxDownloads: 1 });
    const srv = await listen();
    try {
      // First download: headers arrive, then the client stops reading (the response stays in flight).
      const first = await new Promise<http.IncomingMessage>((resolve) => http.get({ port: srv.port, host: '127.0.0.1', path: `/s/${s.token}/content` }, resolve));
      expect(first.statusCode).toBe(200);
      first.pause();
      const second = await new Promise<number>((resolve) =>
        http.get({ port: srv.port, host: '127.0.0.1', path: `/s/${s.token}/content` }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        }),
      );
      expect(second).toBe(404);
      const hash = createHash('sha256');
      first.on('data', (d) => hash.update(d));
      first.resume();
      await new Promise((r) => first.on('end', r));
      expect(hash.digest('hex')).toBe(f.sha256);
      await new Promise((r) => setTimeout(r, 50));
      expect((await shareRow(s.id)).downloads).toBe(1);
      expect((await h.request.get(`/s/${s.token}/content`)).status).toBe(404);
    } finally {
      await srv.close();
    }
  });

  it('an aborted download followed by a Range request for the rest succeeds and counts as one', async () => {
    await init();
    const content = pattern(6 * 1024 * 1024, 10);
    const f = await upload(content);
    const s = await share(f.id, { maxDownloads: 1 });
    const srv = await listen();
    try {
      const received = await new Promise<Buffer>((resolve) => {
        http.get({ port: srv.port, host: '127.0.0.1', path: `/s/${s.token}/content` }, (res) => {
          const parts: Buffer[] = [];
          let n = 0;
          res.on('data', (d: Buffer) => {
            parts.push(d);
            n += d.length;
            if (n >= 1024 * 1024) {
              res.destroy();
              resolve(Buffer.concat(parts));
            }
          });
        });
      });
      for (let i = 0; i < 50 && (await h.sql<{ n: number }>('SELECT count(*) AS n FROM share_reservations'))[0]!.n !== 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect((await shareRow(s.id)).downloads).toBe(0);
      const rest = await get(`/s/${s.token}/content`, { Range: `bytes=${received.length}-` });
      expect(rest.status).toBe(206);
      expect(Buffer.concat([received, rest.body as Buffer]).equals(content)).toBe(true);
      expect((await shareRow(s.id)).downloads).toBe(1);
      expect((await h.request.get(`/s/${s.token}/content`).set('Range', 'bytes=0-10')).status).toBe(404);
    } finally {
      await srv.close();
    }
  });

  it('many partial ranges hit the (N + 1) × size byte ceiling', async () => {
    await init();
    const content = pattern(100_000, 11);
    const f = await upload(content);
    const s = await share(f.id, { maxDownloads: 1 });
    const statuses: number[] = [];
    // Each request stops one byte short of the end, so it never takes a completion slot.
    for (let i = 0; i < 4; i++) statuses.push((await get(`/s/${s.token}/content`, { Range: 'bytes=0-49999' })).status);
    // 4 × 50 000 = 200 000 = (1 + 1) × 100 000; the fifth would exceed it.
    expect(statuses).toEqual([206, 206, 206, 206]);
    expect((await get(`/s/${s.token}/content`, { Range: 'bytes=0-0' })).status).toBe(404);
    expect(await shareRow(s.id)).toEqual({ downloads: 0, bytes_served: 200_000 });
  });

  it('a zero-byte file counts one download per request', async () => {
    await init();
    const f = await upload(Buffer.alloc(0), 'empty.txt');
    const s = await share(f.id, { maxDownloads: 2 });
    expect((await get(`/s/${s.token}/content`)).status).toBe(200);
    expect((await get(`/s/${s.token}/content`)).status).toBe(200);
    expect((await get(`/s/${s.token}/content`)).status).toBe(404);
    expect((await shareRow(s.id)).downloads).toBe(2);
  });

  it('HEAD does not use the budget', async () => {
    await init();
    const f = await upload(Buffer.from('abc'));
    const s = await share(f.id, { maxDownloads: 1 });
    for (let i = 0; i < 3; i++) expect((await h.request.head(`/s/${s.token}/content`)).status).toBe(200);
    expect(await shareRow(s.id)).toEqual({ downloads: 0, bytes_served: 0 });
  });

  it('an expired reservation (a crashed response) does not burn the budget', async () => {
    await init();
    const f = await upload(Buffer.from('abc'));
    const s = await share(f.id, { maxDownloads: 1 });
    await h.sql('INSERT INTO share_reservations (id, share_id, bytes, completion_slot, expires_at) VALUES (?, ?, ?, 1, ?)', ['f'.repeat(32), s.id, 3, Date.now() - 1]);
    expect((await get(`/s/${s.token}/content`)).status).toBe(200);
  });
});

describe('logs', () => {
  it('never contain share tokens, tickets or share passwords', async () => {
    await init({ LOG_LEVEL: 'trace' });
    const f = await upload(Buffer.from('x'));
    const s = await share(f.id, { password: 'open sesame 42' });
    await h.request.get(`/s/${s.token}`);
    await h.request.get(`/s/${s.token}/content`).set(basic('open sesame 42'));
    const agent = (await import('supertest')).default.agent(h.app);
    const page = await agent.get(`/s/${s.token}`);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
    const right = await agent.post(`/s/${s.token}`).type('form').send({ _csrf: csrf, password: 'open sesame 42' });
    const href = /href="(\/s\/[^"]+\/content\?ticket=[^"]+)"/.exec(right.text)![1]!;
    const ticket = decodeURIComponent(href.split('ticket=')[1]!);
    await h.request.get(href);
    const logs = h.logLines.join('\n');
    expect(logs).toContain('/s/[redacted]');
    for (const secret of [s.token, ticket, ticket.split('.')[1]!, ticket.split('.')[2]!, 'open sesame 42', csrf]) expect(logs).not.toContain(secret);
  });
});
