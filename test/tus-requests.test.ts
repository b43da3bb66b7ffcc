/**
 * tus through upload requests (/r/<token>/tus/) on both configurations: tus-js-client cut off
 * mid-upload and resumed, ending in a file of the request with the uploader's name; and the
 * hostile rows (limits held by open uploads, types by name and by content, a request closed
 * mid-upload, passwords, unknown tokens, another request's upload), each leaving nothing behind.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import * as tus from 'tus-js-client';
import { afterEach, describe, expect, it } from 'vitest';
import { makeHarness, serve, setupAdmin, type Harness } from './helpers.js';

const C = 64 * 1024;
const T = { 'Tus-Resumable': '1.0.0' };
let h: Harness;
let owner: string;
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
  h?.cleanup();
});
const auth = () => ({ Authorization: `Bearer ${owner}` });
const basic = (password: string) => ({ Authorization: `Basic ${Buffer.from(`:${password}`).toString('base64')}` });
const b64 = (s: string) => Buffer.from(s).toString('base64');
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function init(env: Record<string, string> = {}) {
  h = await makeHarness(env);
  owner = await setupAdmin(h);
}

async function createRequest(body: Record<string, unknown> = {}): Promise<{ id: string; token: string }> {
  const r = await h.request.post('/api/v1/requests').set(auth()).send({ title: 'Scans', ...body });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

function create(token: string, length: number, name = 'a.bin', extra: Record<string, string> = {}) {
  return h.request.post(`/r/${token}/tus/`).set(T).set('Upload-Length', String(length)).set('Upload-Metadata', `filename ${b64(name)}`).set(extra);
}
async function created(token: string, length: number, name = 'a.bin', extra: Record<string, string> = {}): Promise<string> {
  const r = await create(token, length, name, extra);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  expect(String(r.headers.location)).toMatch(new RegExp(`^/r/${token}/tus/[0-9a-f]{32}$`));
  return String(r.headers.location).split('/').pop()!;
}
function patch(token: string, id: string, offset: number, body: Buffer, extra: Record<string, string> = {}) {
  return h.request.patch(`/r/${token}/tus/${id}`).set(T).set('Upload-Offset', String(offset)).set('Content-Type', 'application/offset+octet-stream').set(extra).send(body);
}

/** Everything an upload to the request can leave: files, open uploads, holds on the request, blobs and part files. */
async function leftovers(requestId: string) {
  for (let i = 0; i < 100; i++) {
    const [l] = await h.sql<{ n: number }>('SELECT count(*) AS n FROM upload_request_leases');
    if (Number(l!.n) === 0) break;
    await sleep(20);
  }
  const n = async (q: string, p: unknown[] = []) => Number((await h.sql<{ n: number }>(q, p))[0]!.n);
  return {
    files: await n('SELECT count(*) AS n FROM files WHERE request_id = ?', [requestId]),
    uploads: await n('SELECT count(*) AS n FROM uploads'),
    leases: await n('SELECT count(*) AS n FROM upload_request_leases'),
    blobs: (await h.storedBlobs()).length,
  };
}
const NOTHING = { files: 0, uploads: 0, leases: 0, blobs: 0 };

/** A TCP proxy that cuts its first connection after `cutAt` bytes of requests. */
async function cuttingProxy(target: number, cutAt: number): Promise<{ port: number; cuts: () => number }> {
  let cuts = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    let carried = 0;
    const limit = cuts === 0 ? cutAt : Infinity;
    client.on('data', (chunk: Buffer) => {
      if (carried + chunk.length >= limit && cuts === 0) {
        upstream.write(chunk.subarray(0, limit - carried));
        cuts++;
        client.destroy();
        upstream.destroy();
        return;
      }
      carried += chunk.length;
      upstream.write(chunk);
    });
    upstream.on('data', (c) => client.write(c));
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(() => new Promise((r) => server.close(() => r())));
  return { port: (server.address() as net.AddressInfo).port, cuts: () => cuts };
}

describe('tus uploads to an upload request', () => {
  it('tus-js-client, cut mid-upload and resumed: a byte-exact file of the request with the uploader, audited and counted', async () => {
    await init();
    const rq = await createRequest({ password: 'request password 1', requireName: true });
    const srv = await serve(h.app);
    closers.push(srv.close);
    const data = randomBytes(3 * 1024 * 1024 + 123);
    const proxy = await cuttingProxy(srv.port, 1024 * 1024 + 777);
    let fileId = '';
    let fileSha = '';
    const heads: number[] = [];
    await new Promise<void>((resolve, reject) => {
      new tus.Upload(data, {
        endpoint: `http://127.0.0.1:${proxy.port}/r/${rq.token}/tus/`,
        headers: { ...basic('request password 1'), 'X-Uploader-Name': 'Ada Lovelace' },
        retryDelays: [0, 50, 100, 200, 400, 800],
        metadata: { filename: 'scan.bin', filetype: 'application/octet-stream' },
        onAfterResponse(req, res) {
          if (req.getMethod() === 'HEAD') heads.push(Number(res.getHeader('Upload-Offset')));
          if (res.getHeader('Upload-File-Id')) {
            fileId = res.getHeader('Upload-File-Id')!;
            fileSha = res.getHeader('Upload-File-Sha256')!;
          }
        },
        onSuccess: () => resolve(),
        onError: reject,
      }).start();
    });
    expect(proxy.cuts()).toBe(1);
    expect(heads.length).toBeGreaterThanOrEqual(1);
    expect(fileSha).toBe(sha(data));
    const meta = await h.request.get(`/api/v1/files/${fileId}`).set(auth());
    expect(meta.body).toMatchObject({ id: fileId, name: 'scan.bin', size: data.length, sha256: sha(data) });
    const [row] = await h.sql<{ request_id: string; uploader_name: string }>('SELECT request_id, uploader_name FROM files WHERE id = ?', [fileId]);
    expect(row).toEqual({ request_id: rq.id, uploader_name: 'Ada Lovelace' });
    const content = await h.request.get(`/api/v1/files/${fileId}/content`).set(auth()).buffer(true).parse((res, cb) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => cb(null, Buffer.concat(parts)));
    });
    expect(sha(content.body as Buffer)).toBe(sha(data));
    const r = await h.request.get(`/api/v1/requests/${rq.id}`).set(auth());
    expect(r.body).toMatchObject({ filesReceived: 1, bytesReceived: data.length });
    const audit = await h.request.get('/api/v1/audit').set(auth());
    expect(audit.body.events.some((e: any) => e.action === 'request.upload' && e.fileId === fileId && e.details.via === 'tus' && e.details.uploaderName === 'Ada Lovelace')).toBe(true);
    // The hold went with the completion; only the file's blob is stored.
    expect(await leftovers(rq.id)).toEqual({ files: 1, uploads: 1, leases: 0, blobs: 1 });
  });

  it('hostile rows: limits held by open uploads, types by name and content, closed mid-upload, passwords, other tokens', async () => {
    await init();
    // Over maxFileBytes at creation.
    const small = await createRequest({ maxFileBytes: 4 * C });
    const big = await create(small.token, 4 * C + 1);
    expect(big.status).toBe(413);
    expect(big.body.code).toBe('file_too_large');
    expect(await leftovers(small.id)).toEqual(NOTHING);

    // maxBytes: the open upload's declared length counts before any byte arrives.
    const bytes = await createRequest({ maxBytes: 5 * C });
    const first = await created(bytes.token, 3 * C);
    const second = await create(bytes.token, 3 * C);
    expect(second.status).toBe(413);
    expect(second.body.code).toBe('request_limit_exceeded');
    expect(Number((await h.sql<{ n: number }>('SELECT count(*) AS n FROM uploads'))[0]!.n)).toBe(1);
    // Terminating the first gives its room back.
    expect((await h.request.delete(`/r/${bytes.token}/tus/${first}`).set(T)).status).toBe(204);
    expect(await leftovers(bytes.id)).toEqual(NOTHING);

    // maxFiles reached by open uploads.
    const files = await createRequest({ maxFiles: 1 });
    const open = await created(files.token, C);
    const third = await create(files.token, C);
    expect(third.status).toBe(413);
    expect(third.body.code).toBe('too_many_files');
    expect((await h.request.delete(`/r/${files.token}/tus/${open}`).set(T)).status).toBe(204);
    expect(await leftovers(files.id)).toEqual(NOTHING);

    // Types: by the name at creation, and by content on the first PATCH (nothing committed, upload dropped).
    const pdfs = await createRequest({ allowedTypes: ['pdf'] });
    const exe = await create(pdfs.token, C, 'tool.exe');
    expect(exe.status).toBe(415);
    expect(exe.body.code).toBe('file_type_not_allowed');
    const fake = await created(pdfs.token, 2 * C, 'paper.pdf');
    const mz = Buffer.concat([Buffer.from('MZ'), randomBytes(2 * C - 2)]);
    const sniffed = await patch(pdfs.token, fake, 0, mz);
    expect(sniffed.status).toBe(415);
    expect(sniffed.body.code).toBe('file_type_not_allowed');
    expect(await leftovers(pdfs.id)).toEqual(NOTHING);
    // A real PDF goes through (the check is not refusing everything).
    const pdf = Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(C)]);
    const ok = await created(pdfs.token, pdf.length, 'paper.pdf');
    const done = await patch(pdfs.token, ok, 0, pdf);
    expect(done.status).toBe(204);
    expect(done.headers['upload-file-sha256']).toBe(sha(pdf));
    expect(await leftovers(pdfs.id)).toEqual({ files: 1, uploads: 1, leases: 0, blobs: 1 });
    await h.request.delete(`/api/v1/files/${ok}`).set(auth());
    await h.sql('DELETE FROM uploads');

    // Closed mid-upload: the final PATCH stores nothing and the upload is dropped.
    const closing = await createRequest();
    const data = randomBytes(3 * C + 5);
    const mid = await created(closing.token, data.length);
    expect((await patch(closing.token, mid, 0, data.subarray(0, 2 * C))).status).toBe(204);
    expect((await h.request.patch(`/api/v1/requests/${closing.id}`).set(auth()).send({ close: true })).status).toBe(200);
    const last = await patch(closing.token, mid, 2 * C, data.subarray(2 * C));
    expect(last.status).toBe(404);
    expect(await leftovers(closing.id)).toEqual(NOTHING);

    // Wrong password, unknown token and another request's upload URL: no way in.
    const locked = await createRequest({ password: 'request password 2' });
    expect((await create(locked.token, C)).status).toBe(401);
    const wrong = await create(locked.token, C, 'a.bin', basic('not it at all'));
    expect(wrong.status).toBe(401);
    expect(wrong.body.code).toBe('unauthorized');
    const mine = await created(locked.token, 2 * C, 'a.bin', basic('request password 2'));
    const unknown = await create('A'.repeat(43), C);
    const other = await createRequest();
    const cross = await patch(other.token, mine, 0, randomBytes(C));
    const crossHead = await h.request.head(`/r/${other.token}/tus/${mine}`).set(T);
    expect(unknown.status).toBe(404);
    expect(cross.status).toBe(404);
    expect(crossHead.status).toBe(404);
    const closed = await create(closing.token, C);
    expect([closed.status, closed.body.code, closed.body.detail]).toEqual([404, unknown.body.code, unknown.body.detail]);
    // The owner's own tus endpoint does not reach an outsider's upload either.
    expect((await h.request.head(`/api/v1/tus/${mine}`).set(T).set(auth())).status).toBe(404);
    // The upload is untouched by those attempts.
    const still = await h.request.head(`/r/${locked.token}/tus/${mine}`).set(T).set(basic('request password 2'));
    expect(still.status).toBe(200);
    expect(still.headers['upload-offset']).toBe('0');
  });
});
