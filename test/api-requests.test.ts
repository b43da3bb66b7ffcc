/** Upload requests: the owner's API, uploads by outsiders (multipart and PUT), and every hostile case leaving nothing behind. */
import { createHash } from 'node:crypto';
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { checkResponse } from '../src/http/api-router.js';
import { OUTSIDE_API } from '../src/http/api-table.js';
import { binaryParser, makeHarness, pattern, serve, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
let token: string;
afterEach(() => h?.cleanup());
const auth = () => ({ Authorization: `Bearer ${token}` });
const basic = (password: string) => ({ Authorization: `Basic ${Buffer.from(`:${password}`).toString('base64')}` });
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An uploader's answer must be what the OpenAPI document says (the /r/ routes are outside the API router's own check). */
function documented(res: { status: number; headers: Record<string, string>; body: unknown; req?: { method?: string } }) {
  const op = res.req?.method === 'PUT' ? OUTSIDE_API.putToRequest : OUTSIDE_API.uploadToRequest;
  expect(checkResponse(res.req?.method === 'PUT' ? 'putToRequest' : 'uploadToRequest', op, res.status, res.headers['content-type'], res.body)).toEqual([]);
}

async function init(env: Record<string, string> = {}) {
  h = await makeHarness(env);
  token = await setupAdmin(h);
}

interface Created {
  id: string;
  token: string;
  url: string;
  status: string;
  filesReceived: number;
  bytesReceived: number;
}

async function createRequest(body: Record<string, unknown> = {}): Promise<Created> {
  const r = await h.request.post('/api/v1/requests').set(auth()).send({ title: 'Your tax documents', message: 'Please send last year’s statements.', ...body });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body as Created;
}

/** What an upload to a request can leave behind once its response has closed. */
async function leftovers(requestId: string) {
  // Leases go when the response closes, just after the client read the answer: wait for that (bounded).
  for (let i = 0; i < 150; i++) {
    const [l] = await h.sql<{ n: number }>('SELECT count(*) AS n FROM upload_request_leases');
    const [q] = await h.sql<{ n: number }>('SELECT count(*) AS n FROM quota_leases');
    if (Number(l!.n) === 0 && Number(q!.n) === 0) break;
    await sleep(20);
  }
  const [files] = await h.sql<{ n: number }>('SELECT count(*) AS n FROM files WHERE request_id = ?', [requestId]);
  const [leases] = await h.sql<{ n: number }>('SELECT count(*) AS n FROM upload_request_leases');
  const [quota] = await h.sql<{ n: number }>('SELECT count(*) AS n FROM quota_leases');
  const [row] = await h.sql<{ files_received: number; bytes_received: number }>('SELECT files_received, bytes_received FROM upload_requests WHERE id = ?', [requestId]);
  return { files: Number(files!.n), leases: Number(leases!.n), quotaLeases: Number(quota!.n), filesReceived: Number(row?.files_received ?? 0), bytesReceived: Number(row?.bytes_received ?? 0) };
}

/** The blob store's entries, once a refused upload's deletes have landed (bounded wait). */
async function blobsSettled(expected: number): Promise<string[]> {
  let blobs = await h.storedBlobs();
  for (let i = 0; i < 100 && blobs.length !== expected; i++) {
    await sleep(30);
    blobs = await h.storedBlobs();
  }
  return blobs;
}

describe('the owner creates and manages requests', () => {
  it('returns the token once; the database keeps only its keyed hash; list, get, extend, close, delete', async () => {
    await init({ PUBLIC_URL: 'https://files.example.org' });
    const r = await createRequest({ maxFiles: 3, maxBytes: 10_000, maxFileBytes: 5000, allowedTypes: ['PDF', '.txt'], requireName: true, password: 'request password 1' });
    expect(r.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(r.url).toBe(`https://files.example.org/r/${r.token}`);
    expect(r).toMatchObject({ status: 'active', filesReceived: 0, bytesReceived: 0, allowedTypes: ['pdf', 'txt'], passwordProtected: true, requireName: true, requireEmail: false });
    const rows = await h.tableRows();
    expect(JSON.stringify(rows, (_k, v) => (v?.type === 'Buffer' ? Buffer.from(v.data).toString('base64url') : v))).not.toContain(r.token);
    expect(JSON.stringify(rows)).not.toContain('request password 1');

    const list = await h.request.get('/api/v1/requests').set(auth());
    expect(list.status).toBe(200);
    expect(list.body.requests.map((x: { id: string }) => x.id)).toEqual([r.id]);
    expect(JSON.stringify(list.body)).not.toContain(r.token);

    const ext = await h.request.patch(`/api/v1/requests/${r.id}`).set(auth()).send({ expiresInSeconds: 3600 });
    expect(ext.status).toBe(200);
    expect(Math.abs(Date.parse(ext.body.expiresAt) - Date.now() - 3600_000)).toBeLessThan(60_000);
    const closed = await h.request.patch(`/api/v1/requests/${r.id}`).set(auth()).send({ close: true });
    expect(closed.body.status).toBe('closed');
    const audit = await h.request.get('/api/v1/audit').set(auth());
    const actions = audit.body.events.map((e: { action: string }) => e.action);
    expect(actions).toContain('request.create');
    expect(actions).toContain('request.close');
    expect(JSON.stringify(audit.body)).not.toContain(r.token);

    expect((await h.request.delete(`/api/v1/requests/${r.id}`).set(auth())).status).toBe(204);
    expect((await h.request.get(`/api/v1/requests/${r.id}`).set(auth())).status).toBe(404);
  });

  it('validates limits, and another user cannot see or change the request', async () => {
    await init({ MAX_FILE_SIZE: '1MB' });
    for (const bad of [{ title: '' }, { maxFiles: 0 }, { maxFileBytes: 2_000_000 }, { allowedTypes: ['../x'] }, { expiresInSeconds: 10 * 365 * 86400 }, { surprise: 1 }]) {
      const r = await h.request.post('/api/v1/requests').set(auth()).send({ title: 't', ...bad });
      expect(r.status, JSON.stringify(bad)).toBe(400);
      expect(r.body.code).toBe('validation_error');
    }
    const r = await createRequest();
    await h.request.post('/api/v1/users').set(auth()).send({ username: 'mallory', password: 'mallory password 1' });
    const m = await h.request.post('/api/v1/auth/tokens').send({ username: 'mallory', password: 'mallory password 1' });
    const other = { Authorization: `Bearer ${m.body.token}` };
    expect((await h.request.get(`/api/v1/requests/${r.id}`).set(other)).status).toBe(404);
    expect((await h.request.patch(`/api/v1/requests/${r.id}`).set(other).send({ close: true })).status).toBe(404);
    expect((await h.request.delete(`/api/v1/requests/${r.id}`).set(other)).status).toBe(404);
    expect((await h.request.get('/api/v1/requests').set(other)).body.requests).toEqual([]);
  });
});

describe('uploading to a request', () => {
  it('curl -F (two files) and curl -T: encrypted, owned by the owner, in their quota, marked with the request and uploader; the receipt lists only this upload', async () => {
    await init();
    const r = await createRequest({ requireName: true, requireEmail: true });
    const a = pattern(70_000, 3);
    const b = Buffer.from('second file\n');
    const multi = await h.request.post(`/r/${r.token}`).field('name', 'Ada Client').field('email', 'ada@example.org').attach('file', a, 'a.bin').attach('file', b, 'b.txt');
    expect(multi.status, JSON.stringify(multi.body)).toBe(201);
    expect(multi.body.files).toEqual([
      { name: 'a.bin', size: a.length, sha256: sha(a) },
      { name: 'b.txt', size: b.length, sha256: sha(b) },
    ]);
    expect(Date.parse(multi.body.receivedAt)).toBeGreaterThan(0);
    documented(multi as never);
    const c = Buffer.from('from curl -T');
    const put = await h.request.put(`/r/${r.token}/c.txt`).set({ 'X-Uploader-Name': 'Bob', 'X-Uploader-Email': 'bob@example.org' }).send(c);
    expect(put.status, JSON.stringify(put.body)).toBe(201);
    documented(put as never);
    // The second uploader's receipt names their file only.
    expect(put.body.files).toEqual([{ name: 'c.txt', size: c.length, sha256: sha(c) }]);

    // The owner's list shows them, marked, and filters by request; they download as sent.
    const own = await h.request.put('/api/v1/uploads/mine.txt').set(auth()).send(Buffer.from('mine'));
    const all = await h.request.get('/api/v1/files').set(auth());
    expect(all.body.files).toHaveLength(4);
    const only = await h.request.get(`/api/v1/files?requestId=${r.id}`).set(auth());
    expect(only.body.files.map((f: { name: string }) => f.name).sort()).toEqual(['a.bin', 'b.txt', 'c.txt']);
    const fa = only.body.files.find((f: { name: string }) => f.name === 'a.bin');
    expect(fa).toMatchObject({ requestId: r.id, uploaderName: 'Ada Client', uploaderEmail: 'ada@example.org', sha256: sha(a) });
    expect(all.body.files.find((f: { id: string }) => f.id === own.body.file.id).requestId).toBeUndefined();
    const content = await h.request.get(`/api/v1/files/${fa.id}/content`).set(auth()).buffer(true).parse(binaryParser);
    expect(sha(content.body as Buffer)).toBe(sha(a));
    // Ciphertext only in the store; quota usage counts the request's files.
    const blob = await h.readBlob(fa.id);
    expect(blob.includes(a.subarray(0, 64))).toBe(false);
    const me = await h.request.get('/api/v1/me').set(auth());
    expect(me.body.usageBytes).toBe(a.length + b.length + c.length + 4);

    const detail = await h.request.get(`/api/v1/requests/${r.id}`).set(auth());
    expect(detail.body).toMatchObject({ filesReceived: 3, bytesReceived: a.length + b.length + c.length });
    expect(detail.body.files).toHaveLength(3);
    const audit = await h.request.get('/api/v1/audit').set(auth());
    const uploads = audit.body.events.filter((e: { action: string }) => e.action === 'request.upload');
    expect(uploads).toHaveLength(3);
    expect(uploads[0]).toMatchObject({ actor: `request:${r.id}`, ip: expect.any(String), details: { requestId: r.id, uploaderName: 'Bob', via: 'put' } });
  });

  it('a browser without JavaScript posts the form (with its CSRF token) and gets the receipt as a page', async () => {
    await init();
    const r = await createRequest();
    const page = await h.request.get(`/r/${r.token}`).set('Accept', 'text/html');
    const cookie = String(page.headers['set-cookie']).split(';')[0]!;
    const action = /action="([^"]+)"/.exec(page.text)![1]!.replaceAll('&amp;', '&');
    const body = Buffer.from('a scan');
    const res = await h.request.post(action).set({ Cookie: cookie, Origin: 'http://127.0.0.1', Accept: 'text/html' }).field('name', 'Ann').attach('file', body, 'scan.txt');
    expect(res.status).toBe(201);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.text).toContain('scan.txt');
    expect(res.text).toContain(sha(body));
  });

  it('a protected request takes the password as Basic auth (any user name) or the page\'s ticket', async () => {
    await init();
    const r = await createRequest({ password: 'request password 1' });
    const ok = await h.request.put(`/r/${r.token}/ok.txt`).set(basic('request password 1')).send(Buffer.from('ok'));
    expect(ok.status).toBe(201);
    const page = await h.request.get(`/r/${r.token}`);
    expect(page.status).toBe(200);
    // Before the password, the page shows nothing of the request.
    expect(page.text).not.toContain('Your tax documents');
    expect(page.text).toContain('protected by a password');
    const cookie = String(page.headers['set-cookie']).split(';')[0]!;
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
    const wrong = await h.request.post(`/r/${r.token}/unlock`).set({ Cookie: cookie }).type('form').send({ _csrf: csrf, password: 'not the password' });
    expect(wrong.status).toBe(401);
    expect(wrong.text).not.toContain('Your tax documents');
    const unlocked = await h.request.post(`/r/${r.token}/unlock`).set({ Cookie: cookie }).type('form').send({ _csrf: csrf, password: 'request password 1' });
    expect(unlocked.status).toBe(200);
    expect(unlocked.text).toContain('Your tax documents');
    const ticket = decodeURIComponent(/ticket=([^&"]+)/.exec(unlocked.text)![1]!);
    const withTicket = await h.request.put(`/r/${r.token}/t.txt`).set('X-Upload-Ticket', ticket).send(Buffer.from('t'));
    expect(withTicket.status).toBe(201);
    const audit = await h.request.get('/api/v1/audit').set(auth());
    expect(audit.body.events.some((e: { action: string }) => e.action === 'request.password_failure')).toBe(true);
  });

  it('the uploader page shows title, message, limits and who asked, and the missing page is the same for every dead request', async () => {
    await init();
    const r = await createRequest({ maxFiles: 4, allowedTypes: ['pdf'] });
    const page = await h.request.get(`/r/${r.token}`).set('Accept', 'text/html');
    expect(page.status).toBe(200);
    expect(page.text).toContain('Your tax documents');
    expect(page.text).toContain('Please send last year’s statements.');
    expect(page.text).toContain('admin');
    expect(page.text).toContain('up to 4 in all');
    expect(page.text).toContain('.pdf');
    const unknown = await h.request.get(`/r/${'A'.repeat(43)}`);
    await h.request.patch(`/api/v1/requests/${r.id}`).set(auth()).send({ close: true });
    const closed = await h.request.get(`/r/${r.token}`);
    expect(closed.status).toBe(404);
    expect(closed.text).toBe(unknown.text);
  });
});

type Setup = (r: Created, other: Created) => Promise<void>;
interface HostileCase {
  name: string;
  request?: Record<string, unknown>;
  before?: Setup;
  send: (r: Created, other: Created) => Promise<{ status: number; body: { code?: string } }>;
  status: number;
  code: string;
  /** Files already through the request before the hostile upload. */
  filesBefore?: number;
}

const big = pattern(300_000, 7);
const put = (r: Created, name: string, body: Buffer, headers: Record<string, string> = {}) => h.request.put(`/r/${r.token}/${name}`).set(headers).send(body);
const post = (r: Created, name: string, body: Buffer, fields: Record<string, string> = {}, headers: Record<string, string> = {}) => {
  let q = h.request.post(`/r/${r.token}`).set(headers);
  for (const [k, v] of Object.entries(fields)) q = q.field(k, v);
  return q.attach('file', body, name);
};

/** The page's CSRF cookie and token for a request (what a browser holds after opening it). */
async function pageCsrf(r: Created): Promise<{ cookie: string; csrf: string }> {
  const page = await h.request.get(`/r/${r.token}`).set('Accept', 'text/html');
  const cookie = String(page.headers['set-cookie']).split(';')[0]!;
  // The upload form carries it in its action; the password form in a hidden field.
  const csrf = decodeURIComponent(/_csrf(?:=|" value=")([^&"]+)/.exec(page.text)![1]!);
  return { cookie, csrf };
}

const HOSTILE: HostileCase[] = [
  { name: 'unknown token', send: (r) => put({ ...r, token: 'B'.repeat(43) }, 'x.txt', Buffer.from('x')), status: 404, code: 'not_found' },
  {
    name: 'expired request',
    before: async (r) => void (await h.sql('UPDATE upload_requests SET expires_at = ? WHERE id = ?', [Date.now() - 1000, r.id])),
    send: (r) => put(r, 'x.txt', Buffer.from('x')),
    status: 404,
    code: 'not_found',
  },
  {
    name: 'closed request',
    before: async (r) => void (await h.request.patch(`/api/v1/requests/${r.id}`).set(auth()).send({ close: true })),
    send: (r) => post(r, 'x.txt', Buffer.from('x')),
    status: 404,
    code: 'not_found',
  },
  {
    name: 'full request (maxFiles)',
    request: { maxFiles: 1 },
    before: async (r) => expect((await put(r, 'first.txt', Buffer.from('first'))).status).toBe(201),
    send: (r) => put(r, 'second.txt', Buffer.from('second')),
    status: 404,
    code: 'not_found',
    filesBefore: 1,
  },
  { name: 'wrong password', request: { password: 'request password 1' }, send: (r) => put(r, 'x.txt', Buffer.from('x'), basic('not the password')), status: 401, code: 'unauthorized' },
  { name: 'missing password', request: { password: 'request password 1' }, send: (r) => post(r, 'x.txt', Buffer.from('x')), status: 401, code: 'unauthorized' },
  { name: 'over maxFileBytes mid-stream (multipart)', request: { maxFileBytes: 100_000 }, send: (r) => post(r, 'big.bin', big), status: 413, code: 'file_too_large' },
  { name: 'over maxFileBytes by Content-Length (PUT)', request: { maxFileBytes: 100_000 }, send: (r) => put(r, 'big.bin', big), status: 413, code: 'file_too_large' },
  {
    name: 'more files in one body than maxFiles',
    request: { maxFiles: 2 },
    send: (r) => h.request.post(`/r/${r.token}`).attach('file', Buffer.from('1'), '1.txt').attach('file', Buffer.from('2'), '2.txt').attach('file', Buffer.from('3'), '3.txt'),
    status: 413,
    code: 'too_many_files',
  },
  { name: 'disallowed type by name', request: { allowedTypes: ['pdf'] }, send: (r) => post(r, 'tool.exe', Buffer.from('%PDF-1.7 pretend')), status: 415, code: 'file_type_not_allowed' },
  { name: 'disallowed type by sniffed content', request: { allowedTypes: ['pdf'] }, send: (r) => put(r, 'invoice.pdf', Buffer.concat([Buffer.from('MZ'), pattern(10_000, 2)])), status: 415, code: 'file_type_not_allowed' },
  { name: 'text extension with binary content', request: { allowedTypes: ['txt'] }, send: (r) => post(r, 'notes.txt', Buffer.concat([Buffer.from('PK\x03\x04'), pattern(9000, 5)])), status: 415, code: 'file_type_not_allowed' },
  { name: 'missing required name', request: { requireName: true }, send: (r) => post(r, 'x.txt', Buffer.from('x'), { email: 'a@example.org' }), status: 400, code: 'validation_error' },
  { name: 'missing required email (PUT)', request: { requireEmail: true }, send: (r) => put(r, 'x.txt', Buffer.from('x'), { 'X-Uploader-Name': 'Ann' }), status: 400, code: 'validation_error' },
  {
    name: "another request's ticket",
    request: { password: 'request password 1' },
    send: async (r, other) => {
      const svc = h.app.services.requests;
      const ticket = svc.issueTicket((await svc.repo.byId(other.id))!);
      return put(r, 'x.txt', Buffer.from('x'), { 'X-Upload-Ticket': ticket });
    },
    status: 401,
    code: 'unauthorized',
  },
  {
    name: "another request's CSRF token on the form",
    send: async (r, other) => {
      const { cookie, csrf } = await pageCsrf(other);
      return post(r, 'x.txt', Buffer.from('x'), {}, { Cookie: cookie, 'X-CSRF-Token': csrf, Origin: 'http://127.0.0.1' });
    },
    status: 403,
    code: 'csrf_invalid',
  },
  {
    name: 'CSRF token missing on the form (a browser)',
    send: async (r) => {
      const { cookie } = await pageCsrf(r);
      return post(r, 'x.txt', Buffer.from('x'), {}, { Cookie: cookie, Origin: 'http://evil.example' });
    },
    status: 403,
    code: 'csrf_invalid',
  },
];

describe('hostile uploads: status, problem code, and nothing left (files, blobs, leases)', () => {
  for (const c of HOSTILE) {
    it(c.name, async () => {
      await init();
      const r = await createRequest(c.request);
      const other = await createRequest({ title: 'another request', password: 'other password 12' });
      await c.before?.(r, other);
      const blobs = await h.storedBlobs();
      const res = await c.send(r, other);
      expect(res.status, JSON.stringify(res.body)).toBe(c.status);
      documented(res as never);
      expect(res.body.code).toBe(c.code);
      expect(await blobsSettled(blobs.length)).toEqual(blobs);
      const left = await leftovers(r.id);
      expect(left).toMatchObject({ files: c.filesBefore ?? 0, leases: 0, quotaLeases: 0, filesReceived: c.filesBefore ?? 0 });
    });
  }
});

/** A PUT whose body the test feeds by hand, to hold an upload in flight. */
function slowPut(port: number, path: string, headers: Record<string, string> = {}) {
  const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path, headers: { 'Transfer-Encoding': 'chunked', ...headers } });
  const done = new Promise<{ status: number; body: { code?: string } }>((resolve) => {
    req.on('response', (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : {} }));
    });
    req.on('error', () => resolve({ status: 0, body: {} }));
  });
  return { req, done };
}

/** Waits until the request's live leases hold at least `bytes` (the first upload is really in flight). */
async function leased(requestId: string, bytes: number) {
  for (let i = 0; i < 250; i++) {
    const [r] = await h.sql<{ n: number }>('SELECT coalesce(sum(bytes), 0) AS n FROM upload_request_leases WHERE request_id = ?', [requestId]);
    if (Number(r!.n) >= bytes) return;
    await sleep(20);
  }
  throw new Error('the first upload never reserved its bytes');
}

describe('bytes in flight count', () => {
  it('over maxBytes across two parallel uploads: the second is stopped mid-stream, the first completes, the total never exceeds maxBytes', async () => {
    await init();
    const r = await createRequest({ maxBytes: 300_000, maxFileBytes: 250_000 });
    const s = await serve(h.app);
    try {
      const blobs = await h.storedBlobs();
      const first = slowPut(s.port, `/r/${r.token}/first.bin`);
      first.req.write(pattern(150_000, 1));
      await leased(r.id, 150_000);
      const second = await h.request.put(`/r/${r.token}/second.bin`).send(pattern(200_000, 2));
      expect(second.status).toBe(413);
      expect(second.body.code).toBe('request_limit_exceeded');
      first.req.end(pattern(50_000, 3));
      const a = await first.done;
      expect(a.status).toBe(201);
      const left = await leftovers(r.id);
      expect(left).toMatchObject({ files: 1, leases: 0, quotaLeases: 0, filesReceived: 1, bytesReceived: 200_000 });
      expect((await blobsSettled(blobs.length + 1)).length).toBe(blobs.length + 1);
    } finally {
      await s.close();
    }
  });

  it('a request closed while an upload is in flight takes nothing from it', async () => {
    await init();
    const r = await createRequest();
    const s = await serve(h.app);
    try {
      const blobs = await h.storedBlobs();
      const up = slowPut(s.port, `/r/${r.token}/late.bin`);
      up.req.write(pattern(20_000, 1));
      await leased(r.id, 20_000);
      expect((await h.request.patch(`/api/v1/requests/${r.id}`).set(auth()).send({ close: true })).status).toBe(200);
      up.req.end(pattern(20_000, 2));
      const res = await up.done;
      expect(res.status).toBe(404);
      expect(res.body.code).toBe('not_found');
      expect(await leftovers(r.id)).toMatchObject({ files: 0, leases: 0, quotaLeases: 0, filesReceived: 0 });
      expect(await blobsSettled(blobs.length)).toEqual(blobs);
    } finally {
      await s.close();
    }
  });

  it("the owner's quota bounds uploads to their requests, without telling the uploader about it", async () => {
    await init({ USER_QUOTA_BYTES: '100000' });
    const r = await createRequest();
    const res = await h.request.put(`/r/${r.token}/big.bin`).send(pattern(150_000, 4));
    expect(res.status).toBe(413);
    expect(res.body.code).toBe('request_limit_exceeded');
    expect(JSON.stringify(res.body)).not.toContain('quota');
    expect(await leftovers(r.id)).toMatchObject({ files: 0, leases: 0, quotaLeases: 0 });
  });
});

describe('notifications', () => {
  it("an upload through a request tells the owner (their requestUpload choice), in the commit's transaction, without the link token", async () => {
    await init({ SMTP_URL: 'smtp://127.0.0.1:9' });
    const me = await h.request.patch('/api/v1/me').set(auth()).send({ email: 'owner@example.org', notifications: { requestUpload: ['email'] } });
    expect(me.status, JSON.stringify(me.body)).toBe(200);
    const r = await createRequest();
    expect((await put(r, 'a.txt', Buffer.from('a'))).status).toBe(201);
    const rows = await h.sql<{ type: string; payload: string }>('SELECT type, payload FROM notification_outbox');
    const ev = rows.filter((x) => x.type === 'request.upload');
    expect(ev).toHaveLength(1);
    expect(JSON.parse(ev[0]!.payload).data).toMatchObject({ requestId: r.id, count: 1, requestName: 'Your tax documents' });
    expect(JSON.stringify(rows)).not.toContain(r.token);
    // A refused upload sends nothing.
    expect((await put(r, 'b.txt', pattern(10, 1), { 'Content-Range': 'bytes 0-9/10' })).status).toBe(400);
    expect((await h.sql('SELECT type FROM notification_outbox')).filter((x) => (x as { type: string }).type === 'request.upload')).toHaveLength(1);
  });
});

describe('rate limits', () => {
  it('uploads are limited per address and per request (429)', async () => {
    await init({ REQUEST_UPLOAD_RATE_LIMIT: '2' });
    const r = await createRequest();
    expect((await put(r, '1.txt', Buffer.from('1'))).status).toBe(201);
    expect((await put(r, '2.txt', Buffer.from('2'))).status).toBe(201);
    const third = await put(r, '3.txt', Buffer.from('3'));
    expect(third.status).toBe(429);
    expect(third.body.code).toBe('rate_limited');
    expect(await leftovers(r.id)).toMatchObject({ files: 2, leases: 0 });
    // Another request from the same address: the per-address budget is spent for it too.
    const other = await createRequest();
    expect((await put(other, '4.txt', Buffer.from('4'))).status).toBe(429);
  });

  it('and per request, whatever the address (429)', async () => {
    await init({ REQUEST_UPLOAD_RATE_LIMIT_PER_REQUEST: '1', TRUST_PROXY: 'true' });
    const r = await createRequest();
    expect((await put(r, '1.txt', Buffer.from('1'), { 'X-Forwarded-For': '203.0.113.1' })).status).toBe(201);
    const second = await put(r, '2.txt', Buffer.from('2'), { 'X-Forwarded-For': '203.0.113.2' });
    expect(second.status).toBe(429);
    documented(second as never);
    // Another request is not affected.
    const other = await createRequest();
    expect((await put(other, '3.txt', Buffer.from('3'), { 'X-Forwarded-For': '203.0.113.3' })).status).toBe(201);
    expect(await leftovers(r.id)).toMatchObject({ files: 1, leases: 0 });
  });
});
