/**
 * The audit head kept outside the database, with two instances on one database: on disk (the
 * single-node layout, `data/audit-head`) and on PostgreSQL + S3 (the real Swift s3api, one
 * head object per writer beside the blobs). Checked through `sfs audit verify` / `export`
 * as an operator runs them, and through the blob store's own listing.
 */
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as PgModule from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../src/services/audit.js';
import { S3AuditHeads, S3BlobStore } from '../src/storage/s3.js';
import { tempDir } from './child.js';
import { makeHarness, type Harness } from './helpers.js';
import { freshBucket, s3Available, s3Env, testS3Client } from './services/services.js';

const SFS = path.resolve(import.meta.dirname, '..', 'dist', 'cli', 'sfs.js');
const PG_URL = process.env.SFS_TEST_DATABASE_URL;
if (!PG_URL && process.env.REQUIRE_SERVICES === '1') throw new Error('REQUIRE_SERVICES=1 but no PostgreSQL is running');
const S3_OK = s3Available('audit heads on S3') && !!PG_URL;
const PREFIX = 'tenant-h';
const HEAD_DIR = `${PREFIX}/audit-head/`;
const pg = createRequire(import.meta.url)('pg') as typeof PgModule;

interface Head {
  seq: number;
  mac: string;
}

/** Two instances (harnesses) on one database and one head location, plus the sfs command line on it. */
interface Layout {
  a: Harness;
  b: Harness;
  /** Runs `sfs` on this layout. */
  sfs(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }>;
  /** Writes a head behind the server's back (a stranger's or a forger's). */
  plant(name: string, head: Head): Promise<void>;
  /** Removes every head (a fresh install, or someone who deleted them). */
  wipeHeads(): Promise<void>;
  /** How many heads are stored. */
  headCount(): Promise<number>;
  dispose(): Promise<void>;
}

const masterKey = randomBytes(32);

/** Runs the built CLI without blocking this process (whose apps may hold the database's transaction lock meanwhile). */
function runSfs(env: Record<string, string>, cwd: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [SFS, ...args],
      { env: { PATH: process.env.PATH ?? '', MASTER_KEY: masterKey.toString('base64'), LOG_LEVEL: 'warn', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...env }, cwd, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') return reject(err);
        resolve({ status: err ? (err.code as number) : 0, stdout, stderr });
      },
    );
  });
}

async function diskLayout(): Promise<Layout> {
  const a = await makeHarness({ STORAGE: 'disk' }, { masterKey });
  // A second process on the same data directory (as `sfs` commands beside the server are).
  const b = await makeHarness({ STORAGE: 'disk' }, { masterKey, dir: a.dir });
  const file = a.config.auditHeadFile;
  return {
    a,
    b,
    sfs: (args) => runSfs({ DATA_DIR: a.config.dataDir, UPLOADS_DIR: a.config.uploadsDir }, a.dir, args),
    plant: async (_name, head) => fs.writeFileSync(file, JSON.stringify(head) + '\n', { mode: 0o600 }),
    wipeHeads: async () => fs.rmSync(file, { force: true }),
    headCount: async () => (fs.existsSync(file) ? 1 : 0),
    async dispose() {
      b.cleanup();
      a.cleanup();
    },
  };
}

async function s3Layout(): Promise<Layout> {
  const name = `sfs_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(PG_URL!);
  u.pathname = `/${name}`;
  const client: S3Client = testS3Client();
  const bucket = await freshBucket(client);
  const env = { DATABASE_URL: u.toString(), ...s3Env(bucket.name, { S3_PREFIX: PREFIX }) };
  // Two instances: separate data directories (no shared disk), one database, one bucket.
  const a = await makeHarness(env, { masterKey });
  const b = await makeHarness(env, { masterKey });
  const cliDir = tempDir();
  const keys = async () => ((await client.send(new ListObjectsV2Command({ Bucket: bucket.name, Prefix: HEAD_DIR }))).Contents ?? []).map((o) => o.Key!);
  return {
    a,
    b,
    sfs: (args) =>
      runSfs(
        {
          ...env,
          DATA_DIR: path.join(cliDir, 'data'),
          UPLOADS_DIR: path.join(cliDir, 'uploads'),
          AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? '',
          AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? '',
        },
        cliDir,
        args,
      ),
    plant: async (n, head) => void (await client.send(new PutObjectCommand({ Bucket: bucket.name, Key: `${HEAD_DIR}${n}.json`, Body: JSON.stringify(head) }))),
    wipeHeads: async () => {
      for (const k of await keys()) await client.send(new DeleteObjectCommand({ Bucket: bucket.name, Key: k }));
    },
    // Asked of each object: Swift's listings may lag a delete.
    headCount: async () => {
      let n = 0;
      for (const k of await keys()) {
        try {
          await client.send(new HeadObjectCommand({ Bucket: bucket.name, Key: k }));
          n++;
        } catch {
          /* listed but deleted */
        }
      }
      return n;
    },
    async dispose() {
      b.cleanup();
      a.cleanup();
      await a.database.close();
      await b.database.close();
      fs.rmSync(cliDir, { recursive: true, force: true });
      await bucket.remove();
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/** Records `n` events through one instance's audit log and waits until its head is stored. */
async function events(h: Harness, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await h.app.services.audit.record({ actor: 'system', action: 'test.event', outcome: 'success', details: { i } });
  await h.app.services.audit.flush();
}

async function cut(h: Harness, fromSeq: number): Promise<void> {
  await h.database.kysely.deleteFrom('audit_events').where('seq', '>=', fromSeq).execute();
}

async function macOf(h: Harness, seq: number): Promise<string> {
  const r = await h.database.kysely.selectFrom('audit_events').select('mac').where('seq', '=', seq).executeTakeFirstOrThrow();
  return Buffer.from(r.mac).toString('hex');
}

async function verify(l: Layout): Promise<{ status: number | null; result: Record<string, unknown> }> {
  const r = await l.sfs(['audit', 'verify', '--json']);
  if (!r.stdout.trim()) throw new Error(`sfs audit verify printed nothing (status ${r.status}): ${r.stderr}`);
  return { status: r.status, result: JSON.parse(r.stdout) as Record<string, unknown> };
}

const LAYOUTS = [
  { name: 'SQLite + disk (data/audit-head)', run: true, open: diskLayout, headsPerInstance: false },
  { name: 'PostgreSQL + S3 (one head object per instance)', run: S3_OK, open: s3Layout, headsPerInstance: true },
];

let layout: Layout | undefined;
afterEach(async () => {
  await layout?.dispose();
  layout = undefined;
});

describe.each(LAYOUTS.filter((l) => l.run))('audit heads on $name', ({ open, headsPerInstance }) => {
  it('truncating the log is detected with both instances’ heads present; export still reads every row', async () => {
    const l = (layout = await open());
    await events(l.a, 3);
    await events(l.b, 3);
    expect(await l.headCount()).toBe(headsPerInstance ? 2 : 1);
    expect(await verify(l)).toMatchObject({ status: 0, result: { ok: true, count: 6, head: { seq: 6 } } });
    const exported = await l.sfs(['audit', 'export']);
    expect(exported.status).toBe(0);
    expect(exported.stdout.trim().split('\n').map((line) => (JSON.parse(line) as { seq: number }).seq)).toEqual([1, 2, 3, 4, 5, 6]);

    await cut(l.a, 5);
    const r = await verify(l);
    expect(r.status).toBe(1);
    expect(r.result).toMatchObject({ ok: false, brokenAt: 5 });
    expect(String(r.result.reason)).toContain('cut off the end');
  });

  it('a head from instance A newer than B’s is the end the chain must reach', async () => {
    const l = (layout = await open());
    await events(l.a, 2);
    await events(l.b, 2);
    await events(l.a, 2);
    if (headsPerInstance) {
      // Valid older heads listed before and after the newest, so neither the first nor the
      // last object listed is the one that counts.
      const mac2 = await macOf(l.a, 2);
      await l.plant('0000', { seq: 2, mac: mac2 });
      await l.plant('zzzz', { seq: 2, mac: mac2 });
      expect(await l.headCount()).toBe(4);
    }
    expect(await verify(l)).toMatchObject({ status: 0, result: { ok: true, count: 6, head: { seq: 6 } } });
    await cut(l.a, 6);
    expect(await verify(l)).toMatchObject({ status: 1, result: { ok: false, brokenAt: 6 } });
  });

  it('no head at all (a fresh install) verifies, before and after the first events', async () => {
    const l = (layout = await open());
    await l.wipeHeads();
    expect(await verify(l)).toMatchObject({ status: 0, result: { ok: true, count: 0, head: null } });
    await events(l.a, 2);
    await l.wipeHeads();
    expect(await verify(l)).toMatchObject({ status: 0, result: { ok: true, count: 2, head: null } });
  });

  it.each([
    ['a head that says seq 10 while the chain ends at 3', (mac: string) => ({ seq: 10, mac }), 4, 'cut off the end'],
    ['a head at seq 2 with another MAC than row 2’s', () => ({ seq: 2, mac: 'ab'.repeat(32) }), 2, 'does not match the head'],
  ])('%s fails', async (_name, forged, brokenAt, reason) => {
    const l = (layout = await open());
    await events(l.a, 3);
    expect((await verify(l)).status).toBe(0);
    await l.plant('forged', forged(await macOf(l.a, 3)));
    const r = await verify(l);
    expect(r.status).toBe(1);
    expect(r.result).toMatchObject({ ok: false, brokenAt });
    expect(String(r.result.reason)).toContain(reason);
  });
});

describe.runIf(S3_OK)('audit head objects in the bucket', () => {
  it('are not blobs: the store never lists them, so the sweep and gc never remove them', async () => {
    const l = (layout = await s3Layout());
    await events(l.a, 1);
    await events(l.b, 1);
    expect(await l.headCount()).toBe(2);
    const seen: string[] = [];
    for await (const e of l.a.blobs.entries()) seen.push(e.path);
    expect(seen.filter((p) => p.includes('audit-head'))).toEqual([]);
    const gc = await l.sfs(['gc', '--min-age', '0', '--json']);
    expect(gc.status, gc.stderr).toBe(0);
    expect(await l.headCount()).toBe(2);
    expect(await verify(l)).toMatchObject({ status: 0, result: { ok: true, count: 2, head: { seq: 2 } } });
  });

  it('hold only seq and MAC, and stale heads behind a new one are pruned, never one ahead', async () => {
    const l = (layout = await s3Layout());
    await events(l.a, 2);
    await events(l.b, 2);
    const client = testS3Client();
    const bucket = l.a.config.storage.kind === 's3' ? l.a.config.storage.bucket : '';
    const listed = (await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: HEAD_DIR }))).Contents ?? [];
    for (const o of listed) {
      const body = await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: o.Key }))).Body!.transformToString();
      expect(Object.keys(JSON.parse(body) as object).sort()).toEqual(['mac', 'seq']);
      expect(o.Key).toMatch(new RegExp(`^${HEAD_DIR}[0-9a-f]{16}\\.json$`));
    }
    // A later writer whose clock says the others have not written for two hours.
    const store = l.a.blobs as S3BlobStore;
    const pruner = new S3AuditHeads(client, { bucket, prefix: `${PREFIX}/`, sse: {} }, () => Date.now() + 2 * 3600_000);
    await new AuditLog({ db: l.a.database, keyring: l.a.keyring, heads: pruner }).record({ actor: 'cli', action: 'test.event', outcome: 'success' });
    expect(await l.headCount()).toBe(1);
    expect(await verify(l)).toMatchObject({ status: 0, result: { ok: true, count: 5, head: { seq: 5 }, heads: 1 } });
    expect(store.auditHeads().describe()).toBe(`s3://${bucket}/${HEAD_DIR}`);

    // A stale head ahead of the new one is kept (and, being ahead of the chain, reported).
    await l.plant('ahead', { seq: 9, mac: 'cd'.repeat(32) });
    const again = new S3AuditHeads(client, { bucket, prefix: `${PREFIX}/`, sse: {} }, () => Date.now() + 2 * 3600_000);
    await new AuditLog({ db: l.a.database, keyring: l.a.keyring, heads: again }).record({ actor: 'cli', action: 'test.event', outcome: 'success' });
    expect(await l.headCount()).toBe(2);
    expect(await verify(l)).toMatchObject({ status: 1, result: { ok: false, brokenAt: 7 } });
  });
});
