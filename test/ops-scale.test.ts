/**
 * Operations on the scale-out configuration (issue 12), through the built `sfs` CLI and child
 * servers against a real PostgreSQL 15 and a real S3 store (Swift): backup under load and
 * restore into an empty target, restore refusing a non-empty one, `sfs migrate` from SQLite +
 * disk (refused while the source server runs, interrupted and resumed, byte-exact after),
 * the single-writer operation lock, and verify / gc / user on PostgreSQL + S3.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { childAdminToken, childEnv, jsonRequest, startChild, tempDir, type Child } from './child.js';
import { freshBucket, freshDatabase, s3Available, s3Env, testS3Client } from './services/services.js';

const SFS = path.resolve(import.meta.dirname, '..', 'dist', 'cli', 'sfs.js');
const PG_BASE = process.env.SFS_TEST_DATABASE_URL;
const canRun = Boolean(PG_BASE) && s3Available('ops-scale');


async function query<T = Record<string, unknown>>(url: string, text: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(text, params)).rows as T[];
  } finally {
    await c.end();
  }
}

const creds = () => ({
  AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID!,
  AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY!,
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
});

/** Environment of a server or CLI on `dir` with the given database and bucket (none: SQLite + disk). */
function envFor(dir: string, key: Buffer, target?: { url: string; bucket: string }): Record<string, string> {
  return childEnv(dir, {
    MASTER_KEY: key.toString('base64'),
    ...(target ? { DATABASE_URL: target.url, ...s3Env(target.bucket), ...creds() } : {}),
  });
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  json(): any;
}

/** Runs `sfs` asynchronously (a running child server in this process keeps being served meanwhile). */
function sfs(env: Record<string, string>, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [SFS, ...args], { env, cwd: path.dirname(env.DATA_DIR!) });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c) => (stdout += c));
    p.stderr.on('data', (c) => (stderr += c));
    p.on('error', reject);
    p.on('exit', (status) => resolve({ status, stdout, stderr, json: () => JSON.parse(stdout) }));
  });
}

function request(port: number, method: string, p: string, headers: Record<string, string>, body?: Buffer): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers: { ...headers, ...(body ? { 'Content-Length': body.length } : {}) } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(parts) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function upload(c: Child, token: string, name: string, content: Buffer): Promise<string> {
  const r = await request(c.port, 'PUT', `/api/v1/uploads/${name}`, { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream' }, content);
  if (r.status !== 201) throw new Error(`upload ${name}: ${r.status} ${r.body.toString()}`);
  return JSON.parse(r.body.toString()).file.id as string;
}

async function download(c: Child, token: string, id: string): Promise<Buffer> {
  const r = await request(c.port, 'GET', `/api/v1/files/${id}/content`, { Authorization: `Bearer ${token}` });
  if (r.status !== 200) throw new Error(`download ${id}: ${r.status} ${r.body.toString()}`);
  return r.body;
}

describe.runIf(canRun)('operations on PostgreSQL + S3', () => {
  const client = canRun ? testS3Client() : undefined;
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  });

  async function target(): Promise<{ url: string; bucket: string }> {
    const db = await freshDatabase();
    const b = await freshBucket(client!);
    cleanups.push(() => db.drop(), () => b.remove());
    return { url: db.url, bucket: b.name };
  }

  async function server(env: Record<string, string>): Promise<Child> {
    const c = await startChild(env);
    cleanups.push(() => c.stop('SIGKILL'));
    return c;
  }

  it('backup while uploads are in flight restores into an empty database and bucket that verify; a non-empty target is refused', async () => {
    const key = randomBytes(32);
    const a = await target();
    const dirA = tempDir();
    const srv = await server(envFor(dirA, key, a));
    const token = await childAdminToken(srv);
    const before = new Map<string, Buffer>();
    for (const n of [1, 70_000, 300_000]) {
      const content = randomBytes(n);
      before.set(await upload(srv, token, `f${n}.bin`, content), content);
    }
    // Uploads in flight through the running server while the backup runs in another process.
    const inFlight = new Map<string, Buffer>();
    const loads = Array.from({ length: 4 }, (_, i) => {
      const content = randomBytes(1_500_000 + i);
      return upload(srv, token, `load${i}.bin`, content).then((id) => inFlight.set(id, content));
    });
    // And one held open for the whole backup: half its body sent before, the rest after.
    const held = randomBytes(3 * 1024 * 1024);
    let heldId = '';
    let heldRest = () => {};
    const heldDone = new Promise<void>((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port: srv.port, method: 'PUT', path: '/api/v1/uploads/held.bin', headers: { Authorization: `Bearer ${token}`, 'Content-Length': held.length } },
        (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => {
            if (res.statusCode === 201) heldId = JSON.parse(text).file.id;
            resolve();
          });
        },
      );
      req.on('error', reject);
      req.write(held.subarray(0, held.length / 2));
      heldRest = () => req.end(held.subarray(held.length / 2));
    });
    const backupDir = path.join(tempDir(), 'backup');
    const b = await sfs(envFor(dirA, key, a), ['backup', backupDir, '--json']);
    heldRest();
    await Promise.all([...loads, heldDone]);
    expect(heldId).toMatch(/^[0-9a-f]{32}$/);
    expect(b.status, b.stderr).toBe(0);
    const m = b.json();
    expect(m).toMatchObject({ version: 2, masterKeyIncluded: false, source: { dialect: 'postgres' } });
    expect(m.files.count).toBeGreaterThanOrEqual(3);
    // Nothing in the backup is plaintext, and the key is not in it.
    const blobFiles = fs.readdirSync(path.join(backupDir, 'uploads'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    expect(blobFiles.length).toBe(m.files.count);
    for (const e of blobFiles) {
      const bytes = fs.readFileSync(path.join(e.parentPath, e.name));
      for (const content of [...before.values(), ...inFlight.values()]) if (content.length >= 64) expect(bytes.includes(content.subarray(0, 64))).toBe(false);
      expect(bytes.includes(key)).toBe(false);
    }

    // Restore into a fresh database and bucket (no server on them yet).
    const t = await target();
    const dirB = tempDir();
    const envB = envFor(dirB, key, t);
    const r = await sfs(envB, ['restore', backupDir, '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.json().files).toBe(m.files.count);
    const v = await sfs(envB, ['verify', '--json']);
    expect(v.status, v.stdout + v.stderr).toBe(0);
    expect(v.json().counts).toEqual({ ok: m.files.count, corrupt: 0, missing: 0, orphan: 0 });
    const av = await sfs(envB, ['audit', 'verify']);
    expect(av.status, av.stdout + av.stderr).toBe(0);
    // The other commands on PostgreSQL + S3.
    const users = await sfs(envB, ['user', 'list', '--json']);
    expect(users.status, users.stderr).toBe(0);
    expect(users.json().users.map((u: { username: string }) => u.username)).toEqual(['admin']);
    const gc = await sfs(envB, ['gc', '--dry-run', '--min-age', '0', '--json']);
    expect(gc.status, gc.stderr).toBe(0);
    expect(gc.json().removed).toEqual([]);

    // A server on the restored target serves every backed-up file byte-exact, with the old token.
    const srvB = await server(envB);
    for (const [id, content] of before) expect((await download(srvB, token, id)).equals(content)).toBe(true);
    const restoredIds = (await query<{ id: string }>(t.url, 'SELECT id FROM files')).map((x) => x.id);
    // The upload still in flight when the snapshot was taken is not in it, and left nothing behind.
    expect(restoredIds).not.toContain(heldId);
    expect(restoredIds.length).toBe(m.files.count);
    for (const id of restoredIds) {
      const expected = before.get(id) ?? inFlight.get(id);
      expect(expected, `restored file ${id} was uploaded`).toBeDefined();
      expect((await download(srvB, token, id)).equals(expected!)).toBe(true);
    }
    await srvB.stop();

    // Restoring again is refused: the target is no longer empty; it is left as it was.
    const again = await sfs(envB, ['restore', backupDir]);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/target database is not empty/);
    expect((await query(t.url, 'SELECT id FROM files')).length).toBe(restoredIds.length);
    // The restored chain's head is where verify reads it (the bucket): cutting rows off the end shows.
    await query(t.url, 'DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)');
    const cut = await sfs(envB, ['audit', 'verify']);
    expect(cut.status, cut.stdout).toBe(1);
    // An empty database but a bucket holding something else is refused too, before any change.
    const t2 = await target();
    await client!.send(new PutObjectCommand({ Bucket: t2.bucket, Key: 'someone-elses.txt', Body: 'x' }));
    const dirty = await sfs(envFor(tempDir(), key, t2), ['restore', backupDir]);
    expect(dirty.status).toBe(1);
    expect(dirty.stderr).toMatch(/target blob store is not empty/);
    expect(await query(t2.url, 'SELECT id FROM files')).toEqual([]);
  });

  it('the operation lock: a second backup or rotation while another holds it is refused, naming the holder; an expired one is taken over', async () => {
    const key = randomBytes(32);
    const a = await target();
    const dir = tempDir();
    const env = envFor(dir, key, a);
    const srv = await server(env);
    await upload(srv, await childAdminToken(srv), 'a.bin', randomBytes(1000));
    // Another instance's operation holds the lock (as a running backup's renewals keep it).
    await query(a.url, "INSERT INTO op_locks (name, token, holder, acquired_at, expires_at) VALUES ('single-writer', 'x', 'backup (pid 4242 on other-host, since then)', $1, $2)", [
      Date.now(),
      Date.now() + 3_600_000,
    ]);
    for (const args of [['backup', path.join(tempDir(), 'b')], ['key', 'rotate'], ['key', 'rotate', '--reencrypt']]) {
      const r = await sfs(env, args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(1);
      expect(r.stderr).toContain('backup (pid 4242 on other-host');
    }
    // Its holder died without releasing it: once expired, the next operation takes it.
    await query(a.url, 'UPDATE op_locks SET expires_at = 0');
    const b = await sfs(env, ['backup', path.join(tempDir(), 'b2'), '--json']);
    expect(b.status, b.stderr).toBe(0);
    // Released at the end: nothing is left in the table.
    expect(await query(a.url, 'SELECT holder FROM op_locks')).toEqual([]);
  });

  it('key rotate --reencrypt on PostgreSQL + S3: new objects, rows swapped, old objects gone; resumable; the files read back under the new key only', async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const a = await target();
    const dir = tempDir();
    const srv = await server(envFor(dir, oldKey, a));
    const token = await childAdminToken(srv);
    const files = new Map<string, Buffer>();
    for (const n of [0, 40_000, 6 * 1024 * 1024 + 7]) {
      const content = randomBytes(n);
      files.set(await upload(srv, token, `r${n}.bin`, content), content);
    }
    expect(await srv.stop()).toBe(0);
    const objects = async () => {
      const out = new Map<string, Buffer>();
      const l = await client!.send(new ListObjectsV2Command({ Bucket: a.bucket }));
      for (const o of l.Contents ?? []) {
        if (o.Key!.startsWith('.probe/') || o.Key!.startsWith('audit-head/')) continue; // not blobs
        const got = await client!.send(new GetObjectCommand({ Bucket: a.bucket, Key: o.Key! }));
        out.set(o.Key!, Buffer.from(await got.Body!.transformToByteArray()));
      }
      return out;
    };
    const before = await objects();
    expect([...before.keys()].every((k) => /^[0-9a-f]{2}\/[0-9a-f]{32}\.enc$/.test(k))).toBe(true);

    const rotEnv = { ...envFor(dir, newKey, a), MASTER_KEYS_PREVIOUS: oldKey.toString('base64') };
    // In slices: one file, then the rest.
    const first = await sfs(rotEnv, ['key', 'rotate', '--reencrypt', '--max-files', '1', '--json']);
    expect(first.status, first.stderr).toBe(1);
    expect(first.json().reencrypt).toMatchObject({ reencrypted: 1, interrupted: true, failed: [] });
    const rest = await sfs(rotEnv, ['key', 'rotate', '--reencrypt', '--json']);
    expect(rest.status, rest.stderr).toBe(0);
    expect(rest.json().reencrypt).toMatchObject({ reencrypted: 2, interrupted: false, failed: [] });

    // Every file now lives in a new object (a new generation), with entirely new bytes; the old objects are gone.
    const after = await objects();
    expect(after.size).toBe(files.size);
    for (const [k, bytes] of after) {
      expect(k).toMatch(/^[0-9a-f]{2}\/[0-9a-f]{32}\.g1\.enc$/);
      for (const old of before.values()) expect(bytes.subarray(40, 104).equals(old.subarray(40, 104))).toBe(false);
    }
    const gens = await query<{ blob_gen: number }>(a.url, 'SELECT blob_gen FROM files');
    expect(gens.map((g) => g.blob_gen)).toEqual([1, 1, 1]);
    // With the new key alone: verify passes (no orphan, no missing), and the server serves every file byte-exact.
    const newOnly = envFor(dir, newKey, a);
    const v = await sfs(newOnly, ['verify', '--json']);
    expect(v.status, v.stdout + v.stderr).toBe(0);
    expect(v.json().counts).toEqual({ ok: 3, corrupt: 0, missing: 0, orphan: 0 });
    const srv2 = await server(newOnly);
    for (const [id, content] of files) expect((await download(srv2, token, id)).equals(content)).toBe(true);
    // A backup of re-encrypted files restores too (blob ids with their generation).
    const bdir = path.join(tempDir(), 'b');
    const b = await sfs(newOnly, ['backup', bdir, '--json']);
    expect(b.status, b.stderr).toBe(0);
    const t = await target();
    const envT = envFor(tempDir(), newKey, t);
    expect((await sfs(envT, ['restore', bdir])).status).toBe(0);
    const vt = await sfs(envT, ['verify', '--json']);
    expect(vt.json().counts).toEqual({ ok: 3, corrupt: 0, missing: 0, orphan: 0 });
  });

  it('migrate from SQLite + disk: refused while the source server runs, interrupted and resumed, then byte-exact with tokens, links and the audit chain', async () => {
    const key = randomBytes(32);
    const dir = tempDir();
    const source = envFor(dir, key);
    const srv = await server(source);
    const token = await childAdminToken(srv);
    const files = new Map<string, Buffer>();
    for (const n of [0, 5000, 200_000, 1_100_000]) {
      const content = randomBytes(n);
      files.set(await upload(srv, token, `m${n}.bin`, content), content);
    }
    const [sharedId, sharedContent] = [...files][2]!;
    const share = await jsonRequest(srv.port, 'POST', `/api/v1/files/${sharedId}/shares`, {}, { Authorization: `Bearer ${token}` });
    expect(share.status).toBe(201);
    const t = await target();
    const args = ['migrate', '--to-database', t.url, '--to-bucket', t.bucket, '--json'];
    const migrateEnv = { ...source, ...creds(), S3_ENDPOINT: s3Env(t.bucket).S3_ENDPOINT!, S3_REGION: s3Env(t.bucket).S3_REGION!, S3_FORCE_PATH_STYLE: 'true' };

    const live = await sfs(migrateEnv, args);
    expect(live.status).toBe(2);
    expect(live.stderr).toContain('server is running');
    expect(await query(t.url, "SELECT 1 FROM information_schema.tables WHERE table_name = 'files'")).toEqual([]);
    expect(await srv.stop()).toBe(0);

    // Interrupted after two blobs: the target database stays empty (a server on it serves nothing).
    const first = await sfs(migrateEnv, [...args, '--max-blobs', '2']);
    expect(first.status, first.stderr).toBe(1);
    expect(first.json()).toMatchObject({ interrupted: true, copied: 2, resumed: 0 });
    expect(await query(t.url, 'SELECT id FROM files')).toEqual([]);
    const second = await sfs(migrateEnv, args);
    expect(second.status, second.stderr).toBe(0);
    expect(second.json()).toMatchObject({ interrupted: false, files: 4, copied: 2, resumed: 2 });
    // Done: a third run is refused (the target is no longer empty).
    const third = await sfs(migrateEnv, args);
    expect(third.status).toBe(1);
    expect(third.stderr).toMatch(/not empty/);

    const envT = envFor(dir, key, t);
    const v = await sfs(envT, ['verify', '--json']);
    expect(v.status, v.stdout + v.stderr).toBe(0);
    expect(v.json().counts).toEqual({ ok: 4, corrupt: 0, missing: 0, orphan: 0 });
    const av = await sfs(envT, ['audit', 'verify']);
    expect(av.status, av.stdout + av.stderr).toBe(0);
    const srvT = await server(envT);
    for (const [id, content] of files) expect((await download(srvT, token, id)).equals(content)).toBe(true);
    const viaLink = await request(srvT.port, 'GET', `/s/${share.body.token}/content`, {});
    expect(viaLink.status).toBe(200);
    expect(viaLink.body.equals(sharedContent)).toBe(true);
    // New work on the target: an upload, and the audit chain continues intact.
    const id = await upload(srvT, token, 'after.bin', randomBytes(3000));
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(await srvT.stop()).toBe(0);
    const av2 = await sfs(envT, ['audit', 'verify']);
    expect(av2.status, av2.stdout + av2.stderr).toBe(0);
    // The head came along (into the bucket): cutting rows off the end of the target's log shows.
    await query(t.url, 'DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)');
    const cut = await sfs(envT, ['audit', 'verify']);
    expect(cut.status, cut.stdout).toBe(1);
    // The migration is gone from the source's data directory; the source is left as it was.
    expect(fs.readdirSync(path.join(dir, 'data')).filter((n) => n.startsWith('migrate'))).toEqual([]);
  });
});
