/**
 * The application on an S3-compatible object store (real OpenStack Swift s3api): uploads
 * and downloads through the API, share links, ranges, tampering, aborted uploads, and that
 * nothing but ciphertext ever reaches the bucket. Plus the server's start-up checks.
 */
import { GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HEADER_LENGTH } from '../src/crypto/format.js';
import { childEnv, runToExit, startChild, tempDir } from './child.js';
import { binaryParser, makeHarness, pattern, setupAdmin, type Harness } from './helpers.js';
import { freshBucket, s3Available, s3Env, testS3Client } from './services/services.js';

const S3_OK = s3Available('app on S3');
const CHUNK = 65_536;

describe.runIf(S3_OK)('the application on S3 storage', () => {
  let client: S3Client;
  let bucket: Awaited<ReturnType<typeof freshBucket>>;
  let h: Harness;
  let token: string;
  const auth = () => ({ Authorization: `Bearer ${token}` });

  beforeAll(async () => {
    client = testS3Client();
    bucket = await freshBucket(client);
    h = await makeHarness(s3Env(bucket.name, { S3_PREFIX: 'tenant-a' }));
    token = await setupAdmin(h);
  });
  afterAll(async () => {
    h?.cleanup();
    await bucket?.remove();
  });

  async function objects(): Promise<{ key: string; body: Buffer }[]> {
    const out = [];
    const l = await client.send(new ListObjectsV2Command({ Bucket: bucket.name }));
    for (const o of l.Contents ?? []) {
      const r = await client.send(new GetObjectCommand({ Bucket: bucket.name, Key: o.Key }));
      out.push({ key: o.Key!, body: Buffer.from(await r.Body!.transformToByteArray()) });
    }
    return out;
  }
  async function unfinishedUploads(): Promise<number> {
    const u = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket.name }));
    return (u.Uploads ?? []).length;
  }
  const download = (id: string, headers: Record<string, string> = {}) =>
    h.request.get(`/api/v1/files/${id}/content`).set({ ...auth(), ...headers }).buffer(true).parse(binaryParser);

  it.each([0, CHUNK - 1, CHUNK, CHUNK + 1, 6 * 1024 * 1024 + 5])('a %i-byte PUT upload downloads byte-exact, whole and by range', async (size) => {
    const content = pattern(size, size + 3);
    const up = await h.request.put(`/api/v1/uploads/f${size}.bin`).set(auth()).set('Content-Type', 'application/octet-stream').send(content);
    expect(up.status).toBe(201);
    const id = up.body.file.id as string;
    const full = await download(id);
    expect(full.status).toBe(200);
    expect((full.body as Buffer).equals(content)).toBe(true);
    if (size > 10) {
      const start = Math.floor(size / 3);
      const r = await download(id, { Range: `bytes=${start}-${start + 9}` });
      expect(r.status).toBe(206);
      expect((r.body as Buffer).equals(content.subarray(start, start + 10))).toBe(true);
    }
    // The object holds the ciphertext: header plus one 16-byte tag per chunk.
    const keys = (await objects()).map((o) => o.key);
    expect(keys).toContain(`tenant-a/${id.slice(0, 2)}/${id}.enc`);
  });

  it('a multipart form upload and a share link work without an account', async () => {
    const a = pattern(200_000, 1);
    const b = pattern(5, 2);
    const up = await h.request.post('/api/v1/files').set(auth()).attach('file', a, 'a.bin').attach('file', b, 'b.bin');
    expect(up.status).toBe(201);
    const [fa] = up.body.files as { id: string }[];
    const s = await h.request.post(`/api/v1/files/${fa!.id}/shares`).set(auth()).send({});
    expect(s.status).toBe(201);
    const got = await h.request.get(new URL(s.body.url as string).pathname + '/content').buffer(true).parse(binaryParser);
    expect(got.status).toBe(200);
    expect((got.body as Buffer).equals(a)).toBe(true);
  });

  it('only ciphertext reaches the bucket: a marker in a file is in no object and no database file', async () => {
    const marker = 'MARKER-7f3c1d-patient-record-do-not-leak';
    const content = Buffer.from(`${marker}\n`.repeat(50_000));
    const up = await h.request.put('/api/v1/uploads/records.txt').set(auth()).set('Content-Type', 'text/plain').send(content);
    expect(up.status).toBe(201);
    expect(((await download(up.body.file.id)).body as Buffer).equals(content)).toBe(true);
    const all = await objects();
    expect(all.length).toBeGreaterThan(0);
    for (const o of all) expect(o.body.includes(marker)).toBe(false);
    const fs = await import('node:fs');
    for (const f of fs.readdirSync(h.config.dataDir)) {
      const p = `${h.config.dataDir}/${f}`;
      if (fs.statSync(p).isFile()) expect(fs.readFileSync(p).includes(marker)).toBe(false);
    }
  });

  it('a tampered object is refused, not served', async () => {
    const content = pattern(3 * CHUNK, 9);
    const up = await h.request.put('/api/v1/uploads/t.bin').set(auth()).send(content);
    const id = up.body.file.id as string;
    const key = `tenant-a/${id.slice(0, 2)}/${id}.enc`;
    const obj = (await objects()).find((o) => o.key === key)!;
    const bad = Buffer.from(obj.body);
    bad[HEADER_LENGTH + 10]! ^= 1;
    await client.send(new PutObjectCommand({ Bucket: bucket.name, Key: key, Body: bad }));
    const r = await download(id);
    expect(r.status).toBe(500);
    expect(r.body.toString()).toContain('integrity_error');
    expect((r.body as Buffer).includes(content.subarray(0, 64))).toBe(false);
  });

  it('deleting a file deletes its object', async () => {
    const up = await h.request.put('/api/v1/uploads/gone.bin').set(auth()).send(pattern(1000));
    const id = up.body.file.id as string;
    expect((await objects()).some((o) => o.key.endsWith(`${id}.enc`))).toBe(true);
    expect((await h.request.delete(`/api/v1/files/${id}`).set(auth())).status).toBe(204);
    // Asked of the object itself: bucket listings may lag a delete.
    expect(await exists(client, bucket.name, `tenant-a/${id.slice(0, 2)}/${id}.enc`)).toBe(false);
  });

  it('an upload cut off mid-stream leaves no object, no unfinished multipart upload and no row', async () => {
    const srv = h.app.listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    const port = (srv.address() as import('node:net').AddressInfo).port;
    const before = (await objects()).length;
    const rowsBefore = (h.db.prepare('SELECT count(*) AS n FROM files').get() as { n: number }).n;
    let sawMultipart = false;
    await new Promise<void>((resolve) => {
      const req = http.request({ port, method: 'PUT', path: '/api/v1/uploads/cut.bin', headers: { ...auth(), 'Content-Length': String(40 * 1024 * 1024) } });
      req.on('error', () => resolve());
      req.on('close', () => resolve());
      let sent = 0;
      const piece = pattern(1024 * 1024, 4);
      const pump = () => {
        while (sent < 14 * 1024 * 1024) {
          sent += piece.length;
          if (!req.write(piece)) return void req.once('drain', pump);
        }
        // Wait until the multipart upload exists (parts on their way), then vanish.
        void (async () => {
          for (let i = 0; i < 100 && (await unfinishedUploads()) === 0; i++) await new Promise((r) => setTimeout(r, 50));
          sawMultipart = (await unfinishedUploads()) > 0;
          req.destroy();
        })();
      };
      pump();
    });
    // The server notices the abort and aborts the multipart upload.
    let pending = 1;
    for (let i = 0; i < 60 && pending > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      pending = await unfinishedUploads();
    }
    srv.close();
    expect(sawMultipart).toBe(true);
    expect(pending).toBe(0);
    expect((await objects()).length).toBe(before);
    expect((h.db.prepare('SELECT count(*) AS n FROM files').get() as { n: number }).n).toBe(rowsBefore);
  });

  it('/readyz checks the bucket', async () => {
    const r = await h.request.get('/readyz');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ status: 'ok' });
  });
});

describe.runIf(S3_OK)('server start-up on S3', () => {
  let client: S3Client;
  let bucket: Awaited<ReturnType<typeof freshBucket>>;
  beforeAll(async () => {
    client = testS3Client();
    bucket = await freshBucket(client);
  });
  afterAll(async () => {
    await bucket?.remove();
  });
  const creds = () => ({ AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID!, AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY! });

  it.each([
    ['a missing bucket', { S3_BUCKET: 'sfs-missing-bucket-1' }, /cannot start: S3_BUCKET: bucket "sfs-missing-bucket-1" does not exist/],
    ['wrong credentials', { AWS_SECRET_ACCESS_KEY: 'not-the-secret' }, /cannot start: S3: access to bucket .* denied/],
    ['an unreachable endpoint', { S3_ENDPOINT: 'http://127.0.0.1:9', S3_MAX_ATTEMPTS: '1' }, /cannot start: S3_ENDPOINT: cannot reach http:\/\/127\.0\.0\.1:9/],
    ['a bad setting', { S3_BUCKET: 'Bad_Bucket' }, /cannot start: S3_BUCKET: expected a bucket name/],
  ])('refuses with one line naming %s', async (_label, extra, message) => {
    const dir = tempDir();
    const r = await runToExit(childEnv(dir, { ...s3Env(bucket.name), ...creds(), ...extra }));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(r.stderr).not.toContain('not-the-secret');
  });

  it('starts, serves an upload from the bucket, and stores nothing under UPLOADS_DIR', async () => {
    const dir = tempDir();
    const child = await startChild(childEnv(dir, { ...s3Env(bucket.name), ...creds() }));
    try {
      const fs = await import('node:fs');
      const code = /setup code: (\S+)/.exec(child.stderr())![1]!;
      const base = `http://127.0.0.1:${child.port}`;
      const post = (p: string, body: unknown, headers: Record<string, string> = {}) =>
        fetch(base + p, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body) });
      expect((await post('/api/v1/setup', { setupCode: code, username: 'admin', password: 'admin password 123' })).status).toBe(201);
      const t = (await (await post('/api/v1/auth/tokens', { username: 'admin', password: 'admin password 123', name: 't' })).json()) as { token: string };
      const content = pattern(300_000, 5);
      const up = await fetch(`${base}/api/v1/uploads/x.bin`, { method: 'PUT', headers: { Authorization: `Bearer ${t.token}` }, body: new Uint8Array(content) });
      expect(up.status).toBe(201);
      const { file: { id } } = (await up.json()) as { file: { id: string } };
      const got = Buffer.from(await (await fetch(`${base}/api/v1/files/${id}/content`, { headers: { Authorization: `Bearer ${t.token}` } })).arrayBuffer());
      expect(got.equals(content)).toBe(true);
      const uploads = `${dir}/uploads`;
      expect(fs.existsSync(uploads) ? fs.readdirSync(uploads, { recursive: true }) : []).toEqual([]);
      expect((await objectsIn(client, bucket.name)).some((k) => k.endsWith(`${id}.enc`))).toBe(true);
    } finally {
      await child.stop();
    }
  });
});

/** HEAD of one object: the store's answer, unlike a listing, never lags a delete. */
async function exists(client: S3Client, bucket: string, key: string): Promise<boolean> {
  try {
    await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw err;
  }
}

async function objectsIn(client: S3Client, bucket: string): Promise<string[]> {
  const l = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
  return (l.Contents ?? []).map((o) => o.Key!);
}

describe.runIf(S3_OK)('the command line on S3 storage', () => {
  const SFS = path.resolve(import.meta.dirname, '..', 'dist', 'cli', 'sfs.js');
  const key = randomBytes(32);
  let client: S3Client;
  let bucket: Awaited<ReturnType<typeof freshBucket>>;
  let h: Harness;
  let token: string;
  beforeAll(async () => {
    client = testS3Client();
    bucket = await freshBucket(client);
    h = await makeHarness(s3Env(bucket.name), { masterKey: key });
    token = await setupAdmin(h);
  });
  afterAll(async () => {
    h?.cleanup();
    await bucket?.remove();
  });
  const sfs = (args: string[]) => {
    const env = {
      PATH: process.env.PATH ?? '',
      DATA_DIR: h.config.dataDir,
      MASTER_KEY: key.toString('base64'),
      AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID!,
      AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY!,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      ...s3Env(bucket.name),
    };
    const r = spawnSync(process.execPath, [SFS, ...args], { env, cwd: h.dir, encoding: 'utf8' });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('sfs verify reads every blob from the bucket and names a tampered one; gc removes row-less objects', async () => {
    const ids: string[] = [];
    for (const [i, size] of [10, 3 * CHUNK + 1].entries()) {
      const up = await h.request.put(`/api/v1/uploads/v${i}.bin`).set('Authorization', `Bearer ${token}`).send(pattern(size, i));
      expect(up.status).toBe(201);
      ids.push(up.body.file.id as string);
    }
    const ok = sfs(['verify', '--json']);
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
    const report = JSON.parse(ok.stdout) as { entries: { id: string; status: string }[] };
    expect(report.entries.map((e) => [e.id, e.status]).sort()).toEqual(ids.map((id) => [id, 'ok']).sort());

    const key2 = `${ids[1]!.slice(0, 2)}/${ids[1]}.enc`;
    const obj = await client.send(new GetObjectCommand({ Bucket: bucket.name, Key: key2 }));
    const bytes = Buffer.from(await obj.Body!.transformToByteArray());
    bytes[HEADER_LENGTH + CHUNK + 40]! ^= 0x80;
    await client.send(new PutObjectCommand({ Bucket: bucket.name, Key: key2, Body: bytes }));
    const bad = sfs(['verify', '--json']);
    expect(bad.status).toBe(1);
    const entries = (JSON.parse(bad.stdout) as { entries: { id: string; status: string; chunk?: number }[] }).entries;
    expect(entries.find((e) => e.id === ids[1])).toMatchObject({ status: 'corrupt', chunk: 1 });
    expect(entries.find((e) => e.id === ids[0])).toMatchObject({ status: 'ok' });

    // An object no row refers to (an upload interrupted between commit and row) is garbage.
    const orphan = 'ab'.padEnd(32, '0');
    await client.send(new PutObjectCommand({ Bucket: bucket.name, Key: `${orphan.slice(0, 2)}/${orphan}.enc`, Body: Buffer.alloc(100) }));
    const gc = sfs(['gc', '--min-age', '0', '--json']);
    expect(gc.status).toBe(0);
    expect(JSON.stringify(JSON.parse(gc.stdout))).toContain(orphan);
    const left = await objectsIn(client, bucket.name);
    expect(await exists(client, bucket.name, `${orphan.slice(0, 2)}/${orphan}.enc`)).toBe(false);
    expect(left.filter((k) => ids.some((id) => k.endsWith(`${id}.enc`)))).toHaveLength(2);
  });

  it('backup copies the bucket; restoring into the live (non-empty) bucket is refused before the local database is touched', async () => {
    const up = await h.request.put('/api/v1/uploads/bk.bin').set('Authorization', `Bearer ${token}`).send(pattern(1000, 9));
    expect(up.status).toBe(201);
    const b = sfs(['backup', path.join(h.dir, 'b'), '--json']);
    expect(b.status, b.stderr).toBe(0);
    expect(JSON.parse(b.stdout).files.count).toBeGreaterThan(0);
    const r = sfs(['restore', path.join(h.dir, 'b')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('target blob store is not empty');
    expect(fs.readdirSync(h.config.dataDir).filter((n) => n.includes('before-restore'))).toEqual([]);
  });
});
