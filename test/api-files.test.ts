/** Files API through supertest: uploads, listing, downloads, ranges, deletes, and what is left on disk. */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CHUNK_SIZE as C, chunkOffset } from '../src/crypto/format.js';
import { binaryParser, listFiles, makeHarness, makeUser, pattern, setupAdmin, type Harness } from './helpers.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let h: Harness;
let token: string;
const auth = () => ({ Authorization: `Bearer ${token}` });

beforeAll(async () => {
  h = await makeHarness({ MAX_FILE_SIZE: '1MiB', MAX_FILES_PER_REQUEST: '3' });
  token = await setupAdmin(h);
});
afterAll(() => h.cleanup());

async function uploadOne(content: Buffer, name = 'data.bin', type = 'application/octet-stream') {
  const r = await h.request.post('/api/v1/files').set(auth()).attach('file', content, { filename: name, contentType: type });
  expect(r.status).toBe(201);
  return r.body.files[0] as { id: string; name: string; size: number; sha256: string; mimeType: string; createdAt: string };
}

async function download(id: string, headers: Record<string, string> = {}) {
  return h.request
    .get(`/api/v1/files/${id}/content`)
    .set({ ...auth(), ...headers })
    .buffer(true)
    .parse(binaryParser);
}

async function fileRowCount(): Promise<number> {
  return (await h.sql<{ n: number }>('SELECT count(*) AS n FROM files'))[0]!.n;
}
const blobs = () => h.storedBlobs();

describe('upload and download', () => {
  it('runs on the store and database its vitest project names (SQLite + disk, or PostgreSQL + the real S3 service)', async () => {
    expect(h.storage).toBe(process.env.SFS_TEST_STORAGE === 's3' ? 's3' : 'disk');
    expect(h.dialect).toBe(process.env.SFS_TEST_DATABASE === 'postgres' ? 'postgres' : 'sqlite');
    const meta = await uploadOne(pattern(10, 1), 'where.bin');
    const where = (await h.storedBlobs()).find((b) => b.includes(meta.id))!;
    expect(where).toMatch(h.storage === 's3' ? /^h-[0-9a-f]{12}\/[0-9a-f]{2}\/[0-9a-f]{32}\.enc$/ : /\/uploads\/[0-9a-f]{2}\/[0-9a-f]{32}\.enc$/);
  });

  it.each([0, 1, C - 1, C, C + 1, 3 * C + 7])('multipart round trip of %i bytes', async (size) => {
    const content = pattern(size, size + 3);
    const meta = await uploadOne(content);
    expect(meta).toMatchObject({ name: 'data.bin', size, sha256: sha(content), mimeType: 'application/octet-stream' });
    expect(meta.id).toMatch(/^[0-9a-f]{32}$/);
    const r = await download(meta.id);
    expect(r.status).toBe(200);
    expect((r.body as Buffer).equals(content)).toBe(true);
    expect(r.headers['content-length']).toBe(String(size));
  });

  it('several files in one multipart request', async () => {
    const a = pattern(1000, 1);
    const b = pattern(70_000, 2);
    const r = await h.request
      .post('/api/v1/files')
      .set(auth())
      .attach('file', a, { filename: 'a.txt', contentType: 'text/plain' })
      .attach('file', b, { filename: 'b.bin' });
    expect(r.status).toBe(201);
    expect(r.body.files.map((f: { name: string }) => f.name)).toEqual(['a.txt', 'b.bin']);
    expect(r.body.files[0].mimeType).toBe('text/plain');
    for (const [i, c] of [a, b].entries()) {
      expect((await download(r.body.files[i].id)).body.equals(c)).toBe(true);
    }
  });

  it('raw PUT upload with a Unicode name, and the download headers', async () => {
    const content = Buffer.from('<html><script>alert(1)</script></html>');
    const r = await h.request
      .put(`/api/v1/uploads/${encodeURIComponent('résumé €.html')}`)
      .set(auth())
      .set('Content-Type', 'text/html')
      .send(content);
    expect(r.status).toBe(201);
    expect(r.body.file).toMatchObject({ name: 'résumé €.html', size: content.length, mimeType: 'text/html', sha256: sha(content) });
    const d = await download(r.body.file.id);
    expect(d.status).toBe(200);
    expect(d.body.equals(content)).toBe(true);
    expect(d.headers['content-type']).toMatch(/^text\/html/);
    expect(d.headers['content-disposition']).toContain('attachment');
    expect(d.headers['content-disposition']).toContain("filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%82%AC.html");
    expect(d.headers['etag']).toBe(`"${sha(content)}"`);
    expect(d.headers['repr-digest']).toBe(`sha-256=:${createHash('sha256').update(content).digest('base64')}:`);
    expect(d.headers['accept-ranges']).toBe('bytes');
    expect(d.headers['x-content-type-options']).toBe('nosniff');
    expect(d.headers['content-security-policy']).toBe("sandbox; default-src 'none'");
    expect(d.headers['cache-control']).toBe('private, no-store');
  });

  it('PUT without a content type guesses from the name', async () => {
    const r = await h.request.put('/api/v1/uploads/notes.txt').set(auth()).set('Content-Type', '').send(Buffer.from('hi'));
    expect(r.status).toBe(201);
    expect(r.body.file.mimeType).toBe('text/plain');
  });

  it('hostile file names are cleaned, not refused', async () => {
    const cases: [string, string][] = [
      ['../../etc/passwd', 'passwd'],
      ['C:\\Windows\\evil.exe', 'evil.exe'],
      ['invoice\u202Efdp.exe', 'invoicefdp.exe'],
      ['a%0Db%0Ac.txt', 'abc.txt'], // CR/LF as browsers escape them in multipart names
      ['...', 'file'],
      ['..', 'file'],
      ['Cafe\u0301.txt', 'Café.txt'],
    ];
    for (const [raw, clean] of cases) {
      const meta = await uploadOne(Buffer.from('x'), raw);
      expect(meta.name, raw).toBe(clean);
    }
    const nul = await h.request.put('/api/v1/uploads/a%00b%01c%7F.txt').set(auth()).send(Buffer.from('x'));
    expect(nul.body.file.name).toBe('abc.txt');
    const long = await uploadOne(Buffer.from('x'), 'a'.repeat(5000) + '.pdf');
    expect([...long.name].length).toBe(255);
    expect(long.name.endsWith('.pdf')).toBe(true);
  });

  it('HEAD returns the headers without a body', async () => {
    const content = pattern(5000, 4);
    const meta = await uploadOne(content);
    const r = await h.request.head(`/api/v1/files/${meta.id}/content`).set(auth());
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe('5000');
    expect(r.headers['etag']).toBe(`"${sha(content)}"`);
    expect(r.text ?? '').toBe('');
  });

  it('metadata and list with cursor paging, newest first', async () => {
    const other = await makeUser(h, token, 'pager');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await h.request.put(`/api/v1/uploads/p${i}.txt`).set('Authorization', `Bearer ${other}`).send(Buffer.from(`n${i}`));
      ids.push(r.body.file.id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const r = await h.request
        .get('/api/v1/files')
        .set('Authorization', `Bearer ${other}`)
        .query(cursor ? { limit: 2, cursor } : { limit: 2 });
      expect(r.status).toBe(200);
      expect(r.body.files.length).toBeLessThanOrEqual(2);
      seen.push(...r.body.files.map((f: { id: string }) => f.id));
      cursor = r.body.nextCursor;
    } while (cursor);
    expect(seen).toEqual([...ids].reverse());
    const m = await h.request.get(`/api/v1/files/${ids[0]}`).set('Authorization', `Bearer ${other}`);
    expect(m.body).toEqual({ id: ids[0], name: 'p0.txt', size: 2, mimeType: 'text/plain', sha256: sha(Buffer.from('n0')), createdAt: expect.any(String), expiresAt: null, legalHold: false });
    expect(Object.keys(m.body)).not.toContain('wrappedDek');
    const bad = await h.request.get('/api/v1/files?limit=500').set('Authorization', `Bearer ${other}`);
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe('validation_error');
    expect(bad.body.detail).toContain('limit');
  });
});

describe('ranges', () => {
  const size = 3 * C + 500;
  const content = pattern(size, 42);
  let id: string;
  beforeAll(async () => {
    id = (await uploadOne(content)).id;
  });

  const cases: [string, string, number, number][] = [
    ['start', 'bytes=0-99', 0, 99],
    ['middle across a chunk boundary', `bytes=${C - 50}-${C + 49}`, C - 50, C + 49],
    ['suffix', 'bytes=-300', size - 300, size - 1],
    ['open end', `bytes=${2 * C + 1}-`, 2 * C + 1, size - 1],
    ['end past the size is clamped', `bytes=${size - 10}-${size + 1000}`, size - 10, size - 1],
  ];
  it.each(cases)('%s', async (_n, range, start, end) => {
    const r = await download(id, { Range: range });
    expect(r.status).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes ${start}-${end}/${size}`);
    expect(r.headers['content-length']).toBe(String(end - start + 1));
    expect((r.body as Buffer).equals(content.subarray(start, end + 1))).toBe(true);
  });

  it.each([`bytes=${size}-`, `bytes=${size + 5}-${size + 10}`, 'bytes=-0'])('unsatisfiable %s gives 416', async (range) => {
    const r = await h.request.get(`/api/v1/files/${id}/content`).set(auth()).set('Range', range);
    expect(r.status).toBe(416);
    expect(r.headers['content-range']).toBe(`bytes */${size}`);
    expect(r.body.code).toBe('range_not_satisfiable');
  });

  it.each(['bytes=5-1', 'bytes=abc', 'items=0-5', 'bytes=0-1,5-9', 'bytes=--5'])('invalid or multi %s is ignored (200)', async (range) => {
    const r = await download(id, { Range: range });
    expect(r.status).toBe(200);
    expect((r.body as Buffer).equals(content)).toBe(true);
  });

  it('If-Range with a stale validator sends the whole file', async () => {
    const r = await download(id, { Range: 'bytes=0-9', 'If-Range': '"deadbeef"' });
    expect(r.status).toBe(200);
    const ok = await download(id, { Range: 'bytes=0-9', 'If-Range': `"${sha(content)}"` });
    expect(ok.status).toBe(206);
  });

  it('an empty file answers any byte range with 416', async () => {
    const empty = await uploadOne(Buffer.alloc(0));
    const r = await h.request.get(`/api/v1/files/${empty.id}/content`).set(auth()).set('Range', 'bytes=0-');
    expect(r.status).toBe(416);
    expect(r.headers['content-range']).toBe('bytes */0');
  });
});

describe('ownership and deletion', () => {
  it("another user's file is 404, exactly like a missing one", async () => {
    const meta = await uploadOne(Buffer.from('secret'));
    const mallory = await makeUser(h, token, 'mallory');
    const theirs = await h.request.get(`/api/v1/files/${meta.id}`).set('Authorization', `Bearer ${mallory}`);
    const missing = await h.request.get(`/api/v1/files/${'0'.repeat(32)}`).set('Authorization', `Bearer ${mallory}`);
    expect(theirs.status).toBe(404);
    expect(missing.status).toBe(404);
    expect({ ...theirs.body, requestId: '' }).toEqual({ ...missing.body, requestId: '' });
    for (const path of [`/api/v1/files/${meta.id}/content`]) {
      expect((await h.request.get(path).set('Authorization', `Bearer ${mallory}`)).status).toBe(404);
    }
    expect((await h.request.delete(`/api/v1/files/${meta.id}`).set('Authorization', `Bearer ${mallory}`)).status).toBe(404);
    expect((await download(meta.id)).body.toString()).toBe('secret');
  });

  it('delete removes row, wrapped key and ciphertext', async () => {
    const meta = await uploadOne(pattern(100_000, 8));
    expect(await h.blobs.stat(meta.id)).not.toBeNull();
    const r = await h.request.delete(`/api/v1/files/${meta.id}`).set(auth());
    expect(r.status).toBe(204);
    expect(await h.blobs.stat(meta.id)).toBeNull();
    expect(await h.sql('SELECT count(*) AS n FROM files WHERE id = ?', [meta.id])).toEqual([{ n: 0 }]);
    expect((await h.request.get(`/api/v1/files/${meta.id}`).set(auth())).status).toBe(404);
    expect((await download(meta.id)).status).toBe(404);
  });

  it('ids that are not ids are 404', async () => {
    for (const id of ['..%2F..%2Fdata', 'ABC', '1', '0'.repeat(33)]) {
      expect((await h.request.get(`/api/v1/files/${id}/content`).set(auth())).status).toBe(404);
    }
  });
});

describe('refused uploads leave nothing behind', () => {
  it('multipart sha256 field that does not match gives 422 and stores nothing', async () => {
    const before = { rows: await fileRowCount(), blobs: (await blobs()).length };
    const r = await h.request
      .post('/api/v1/files')
      .set(auth())
      .field('sha256', 'a'.repeat(64))
      .attach('file', Buffer.from('hello'), 'x.txt');
    expect(r.status).toBe(422);
    expect(r.body.code).toBe('checksum_mismatch');
    expect({ rows: await fileRowCount(), blobs: (await blobs()).length }).toEqual(before);
  });

  it('multipart sha256 field that matches is accepted', async () => {
    const r = await h.request.post('/api/v1/files').set(auth()).field('sha256', sha(Buffer.from('hello'))).attach('file', Buffer.from('hello'), 'x.txt');
    expect(r.status).toBe(201);
  });

  it('a mismatch on the second file removes the first one too', async () => {
    const before = { rows: await fileRowCount(), blobs: (await blobs()).length };
    const r = await h.request
      .post('/api/v1/files')
      .set(auth())
      .attach('file', Buffer.from('first'), 'one.txt')
      .field('sha256', 'b'.repeat(64))
      .attach('file', Buffer.from('second'), 'two.txt');
    expect(r.status).toBe(422);
    expect({ rows: await fileRowCount(), blobs: (await blobs()).length }).toEqual(before);
  });

  it('PUT with a wrong Content-Digest gives 422 and stores nothing', async () => {
    const before = { rows: await fileRowCount(), blobs: (await blobs()).length };
    const wrong = createHash('sha256').update('other').digest('base64');
    const r = await h.request.put('/api/v1/uploads/x.bin').set(auth()).set('Content-Digest', `sha-256=:${wrong}:`).send(Buffer.from('data'));
    expect(r.status).toBe(422);
    expect(r.body.code).toBe('checksum_mismatch');
    expect({ rows: await fileRowCount(), blobs: (await blobs()).length }).toEqual(before);
    const right = createHash('sha256').update('data').digest('base64');
    const ok = await h.request.put('/api/v1/uploads/x.bin').set(auth()).set('Repr-Digest', `sha-256=:${right}:`).send(Buffer.from('data'));
    expect(ok.status).toBe(201);
  });

  it('over-size multipart upload gives 413 and leaves no temp file and no row', async () => {
    const before = { rows: await fileRowCount(), blobs: (await blobs()).length };
    const r = await h.request.post('/api/v1/files').set(auth()).attach('file', pattern(1024 * 1024 + 1, 9), 'big.bin');
    expect(r.status).toBe(413);
    expect(r.body.code).toBe('file_too_large');
    expect(r.headers['connection']).toBe('close');
    expect({ rows: await fileRowCount(), blobs: (await blobs()).length }).toEqual(before);
  });

  it('over-size PUT is refused from Content-Length', async () => {
    const before = { rows: await fileRowCount(), blobs: (await blobs()).length };
    const r = await h.request.put('/api/v1/uploads/big.bin').set(auth()).send(pattern(1024 * 1024 + 1, 9));
    expect(r.status).toBe(413);
    expect(r.body.code).toBe('file_too_large');
    expect({ rows: await fileRowCount(), blobs: (await blobs()).length }).toEqual(before);
  });

  it('too many files gives 413 too_many_files and stores none of them', async () => {
    const before = { rows: await fileRowCount(), blobs: (await blobs()).length };
    let req = h.request.post('/api/v1/files').set(auth());
    for (let i = 0; i < 4; i++) req = req.attach('file', Buffer.from(`f${i}`), `f${i}.txt`);
    const r = await req;
    expect(r.status).toBe(413);
    expect(r.body.code).toBe('too_many_files');
    expect({ rows: await fileRowCount(), blobs: (await blobs()).length }).toEqual(before);
  });

  it('no file part, wrong content type, and a malformed body are 4xx problems', async () => {
    const noFile = await h.request.post('/api/v1/files').set(auth()).field('x', 'y');
    expect(noFile.status).toBe(400);
    expect(noFile.body.code).toBe('validation_error');
    const json = await h.request.post('/api/v1/files').set(auth()).send({ a: 1 });
    expect(json.status).toBe(415);
    expect(json.headers['content-type']).toMatch(/^application\/problem\+json/);
    const broken = await h.request
      .post('/api/v1/files')
      .set(auth())
      .set('Content-Type', 'multipart/form-data; boundary=XYZ')
      .send('--XYZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nunterminated');
    expect(broken.status).toBe(400);
    expect(broken.body.code).toBe('bad_request');
  });

  it('a client that aborts mid-upload leaves nothing behind', async () => {
    const before = { rows: await fileRowCount(), blobs: (await blobs()).length };
    const server = http.createServer(h.app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((resolve) => {
      const req = http.request({ port, host: '127.0.0.1', method: 'PUT', path: '/api/v1/uploads/partial.bin', headers: { ...auth(), 'Content-Length': String(900_000) } });
      req.on('error', () => resolve());
      req.write(pattern(300_000, 1));
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 200);
    });
    // Give the server a moment to notice the abort and clean up.
    for (let i = 0; i < 50 && (await blobs()).length !== before.blobs; i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise<void>((r) => server.close(() => r()));
    expect({ rows: await fileRowCount(), blobs: (await blobs()).length }).toEqual(before);
  });
});

describe('at rest', () => {
  it('no file under uploads/ or data/, no stored blob and no database row contains the plaintext', async () => {
    const marker = 'PLAINTEXT-CANARY-7f3a91';
    const content = Buffer.from(`${marker}\n`.repeat(20_000));
    await uploadOne(content, 'canary.txt', 'text/plain');
    await h.request.put('/api/v1/uploads/canary2.txt').set(auth()).send(content);
    if (h.dialect === 'sqlite') h.db.pragma('wal_checkpoint(FULL)');
    // Everything stored: every file under data/ (and uploads/ on disk), every blob read
    // back through the store (the bucket's objects on S3), and every row of every table
    // (the only place metadata lives on PostgreSQL).
    const files = [...listFiles(h.config.uploadsDir), ...listFiles(h.config.dataDir)];
    // (On PostgreSQL + S3 nothing at all need be stored locally.)
    if (h.dialect === 'sqlite' || h.storage === 'disk') expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      expect(fs.readFileSync(f).includes(Buffer.from(marker)), f).toBe(false);
    }
    const ids = (await h.sql<{ id: string }>('SELECT id FROM files')).map((r) => r.id);
    expect(ids.length).toBeGreaterThan(1);
    for (const id of ids) expect((await h.readBlob(id)).includes(Buffer.from(marker)), id).toBe(false);
    const tables = await h.tableRows();
    expect(tables.files?.length).toBe(ids.length);
    for (const [table, rows] of Object.entries(tables)) {
      for (const row of rows) {
        for (const [col, v] of Object.entries(row)) {
          const bytes = Buffer.isBuffer(v) ? v : Buffer.from(String(v));
          expect(bytes.includes(Buffer.from(marker)), `${table}.${col}`).toBe(false);
        }
      }
    }
  });

  it('stored ciphertext has the expected exact size (and on disk, owner-only permissions)', async () => {
    const meta = await uploadOne(pattern(C + 1, 3));
    expect((await h.blobs.stat(meta.id))?.size).toBe(chunkOffset(2, C) - C + 1);
    if (h.storage === 'disk') expect(fs.statSync(h.store.pathOf(meta.id)).mode & 0o077).toBe(0);
  });
});

describe('tampered ciphertext', () => {
  it('damage in the first chunk is a clean 500 integrity_error with no file bytes', async () => {
    const meta = await uploadOne(pattern(3 * C, 11));
    const buf = await h.readBlob(meta.id);
    buf[chunkOffset(0, C) + 10]! ^= 1;
    await h.writeBlob(meta.id, buf);
    const r = await h.request.get(`/api/v1/files/${meta.id}/content`).set(auth());
    expect(r.status).toBe(500);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(r.body.code).toBe('integrity_error');
    expect(JSON.stringify(r.body)).not.toMatch(/stack|at \//);
    expect(h.logLines.some((l) => l.includes('integrity_error') && l.includes(r.body.requestId))).toBe(true);
  });

  it('damage in a later chunk cuts the connection after the verified prefix', async () => {
    const content = pattern(4 * C, 12);
    const meta = await uploadOne(content);
    const buf = await h.readBlob(meta.id);
    buf[chunkOffset(2, C) + 10]! ^= 1;
    await h.writeBlob(meta.id, buf);
    const server = http.createServer(h.app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const result = await new Promise<{ status: number; received: Buffer; aborted: boolean }>((resolve) => {
      http.get({ port, host: '127.0.0.1', path: `/api/v1/files/${meta.id}/content`, headers: auth() }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, received: Buffer.concat(parts), aborted: false }));
        res.on('error', () => resolve({ status: res.statusCode!, received: Buffer.concat(parts), aborted: true }));
        res.on('aborted', () => resolve({ status: res.statusCode!, received: Buffer.concat(parts), aborted: true }));
      });
    });
    await new Promise<void>((r) => server.close(() => r()));
    expect(result.status).toBe(200);
    expect(result.aborted).toBe(true);
    expect(result.received.length).toBeLessThanOrEqual(2 * C);
    expect(result.received.equals(content.subarray(0, result.received.length))).toBe(true);
  });

  it('a size edited in the database fails to unwrap (integrity_error)', async () => {
    const meta = await uploadOne(pattern(1000, 13));
    await h.sql('UPDATE files SET size = 999 WHERE id = ?', [meta.id]);
    const r = await h.request.get(`/api/v1/files/${meta.id}/content`).set(auth());
    expect(r.status).toBe(500);
    expect(r.body.code).toBe('integrity_error');
  });

  it('a wrapped DEK moved to another row fails to unwrap', async () => {
    const a = await uploadOne(pattern(1000, 14));
    const b = await uploadOne(pattern(1000, 15));
    await h.sql('UPDATE files SET wrapped_dek = (SELECT wrapped_dek FROM files WHERE id = ?) WHERE id = ?', [a.id, b.id]);
    const r = await h.request.get(`/api/v1/files/${b.id}/content`).set(auth());
    expect(r.status).toBe(500);
    expect(r.body.code).toBe('integrity_error');
  });

  it('ciphertext of another file swapped in is refused', async () => {
    const a = await uploadOne(pattern(1000, 16));
    const b = await uploadOne(pattern(1000, 17));
    await h.writeBlob(b.id, await h.readBlob(a.id));
    const r = await h.request.get(`/api/v1/files/${b.id}/content`).set(auth());
    expect(r.status).toBe(500);
    expect(r.body.code).toBe('integrity_error');
  });

  it('missing ciphertext is an integrity_error, not a crash', async () => {
    const a = await uploadOne(pattern(10, 18));
    await h.blobs.delete(a.id);
    const r = await h.request.get(`/api/v1/files/${a.id}/content`).set(auth());
    expect(r.status).toBe(500);
    expect(r.body.code).toBe('integrity_error');
  });
});
