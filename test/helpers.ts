/** Test harness: a fresh app on a temp directory with a random test master key. */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import supertest from 'supertest';
import { createApp, type App } from '../src/app.js';
import { loadConfig, type Config } from '../src/config.js';
import { Keyring } from '../src/crypto/keyring.js';
import { openConfiguredDatabase, type Database, type RawSqlite } from '../src/db/database.js';
import { createLogger } from '../src/http/logging.js';
import { SetupCode } from '../src/services/accounts.js';
import { DiskBlobStore } from '../src/storage/disk.js';
import type { BlobStore } from '../src/storage/blob-store.js';
import { createBlobStore } from '../src/storage/index.js';
import { Writable } from 'node:stream';

export const SETUP_CODE = 'test-setup-code-0123456789';
export const ADMIN = { username: 'admin', password: 'admin password 123' };

export interface Harness {
  dir: string;
  config: Config;
  /** The raw SQLite handle under the app's database (tests read and forge rows with it). */
  db: RawSqlite;
  /** The app's asynchronous database (for calling repositories and ops directly). */
  database: Database;
  /** The disk store (throws when the harness runs on S3: such a test is disk-specific). */
  store: DiskBlobStore;
  /** The configured blob store, whichever backend. */
  blobs: BlobStore;
  keyring: Keyring;
  app: App;
  request: ReturnType<typeof supertest>;
  logLines: string[];
  /** API responses that differ from the route table (status not documented, body off-schema). */
  contractViolations: string[];
  /** Which blob store this harness runs on (SFS_TEST_STORAGE=s3 runs the suites on S3). */
  storage: 'disk' | 's3';
  /** Every entry in the blob store, committed or not (disk files incl. temp files; S3 objects and unfinished multipart uploads). */
  storedBlobs(): Promise<string[]>;
  /** The stored ciphertext of a blob, whichever backend. */
  readBlob(id: string): Promise<Buffer>;
  /** Replaces a blob's stored bytes behind the server's back (tampering tests). */
  writeBlob(id: string, bytes: Buffer): Promise<void>;
  /** Removes the temp dir; throws if any API response broke the documented contract. */
  cleanup(): void;
}

/**
 * With SFS_TEST_STORAGE=s3 (the vitest project "s3"), every harness that does not choose its
 * storage runs on the test S3 service: one bucket for the run, a prefix per data directory.
 */
function storageEnv(env: Record<string, string>, dir: string): Record<string, string> {
  if (process.env.SFS_TEST_STORAGE !== 's3' || env.STORAGE !== undefined) return {};
  const bucket = process.env.SFS_TEST_S3_BUCKET;
  const endpoint = process.env.SFS_TEST_S3_ENDPOINT;
  if (!bucket || !endpoint) throw new Error('SFS_TEST_STORAGE=s3 but the global setup started no S3 service (see test/services)');
  return {
    STORAGE: 's3',
    S3_BUCKET: bucket,
    S3_ENDPOINT: endpoint,
    S3_REGION: process.env.SFS_TEST_S3_REGION ?? 'us-east-1',
    S3_FORCE_PATH_STYLE: 'true',
    S3_PART_SIZE: String(5 * 1024 * 1024),
    // One prefix per data directory, so a second harness on the same directory (a restart) sees the same blobs.
    S3_PREFIX: `h-${createHash('sha256').update(dir).digest('hex').slice(0, 12)}`,
  };
}

async function readAllStream(r: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Builds an app on a temp dir; `env` overrides configuration variables. */
export async function makeHarness(
  env: Record<string, string> = {},
  /** `setupCode`: the code this app proposes (a second instance on the same database proposes its own). */
  opts: { masterKey?: Buffer; dir?: string; setupCode?: string } = {},
): Promise<Harness> {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-test-'));
  const config = loadConfig({ NODE_ENV: 'test', DATA_DIR: 'data', UPLOADS_DIR: 'uploads', LOG_LEVEL: 'debug', ...storageEnv(env, dir), ...env }, dir);
  fs.mkdirSync(config.dataDir, { recursive: true });
  const keyring = new Keyring(opts.masterKey ?? randomBytes(32));
  const database = await openConfiguredDatabase(config);
  // On PostgreSQL there is no raw SQLite handle: a test that reaches for one is SQLite-specific.
  const db =
    database.raw ??
    (new Proxy({ open: false } as RawSqlite, {
      get: (t, p) => {
        if (p === 'open') return false;
        throw new Error('this check reads SQLite directly; the harness runs on PostgreSQL');
      },
    }) as RawSqlite);
  const blobs = await createBlobStore(config);
  const logLines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logLines.push(String(chunk));
      cb();
    },
  });
  const logger = createLogger(config.logLevel, sink);
  // Every API response in every supertest suite is checked against the OpenAPI route table.
  const contractViolations: string[] = [];
  const app = await createApp({ config, db: database, store: blobs, keyring, logger, setup: new SetupCode(opts.setupCode ?? SETUP_CODE), onContractViolation: (m) => contractViolations.push(m) });
  const harness: Harness = {
    dir,
    config,
    db,
    database,
    get store(): DiskBlobStore {
      if (!(blobs instanceof DiskBlobStore)) throw new Error('this check reads the disk store directly; the harness runs on S3');
      return blobs;
    },
    blobs,
    storage: config.storage.kind,
    async storedBlobs() {
      const out: string[] = [];
      for await (const e of blobs.entries()) {
        if (config.storage.kind === 's3') {
          if (e.kind === 'temp') out.push(`upload:${e.path}`);
          // Bucket listings may lag a delete (Swift updates them asynchronously): an object
          // counts only if it is really there.
          else if (!e.id || (await blobs.stat(e.id))) out.push(e.path);
        } else out.push(e.path);
      }
      return out.sort();
    },
    async readBlob(id: string) {
      const st = await blobs.stat(id);
      if (!st) throw new Error(`no blob ${id}`);
      return st.size === 0 ? Buffer.alloc(0) : readAllStream(blobs.getRange(id, 0, st.size - 1));
    },
    async writeBlob(id: string, bytes: Buffer) {
      // Both stores replace a blob atomically on put (disk: rename over it; S3: a new object version).
      await blobs.put(id, (async function* () {
        yield [bytes];
      })());
    },
    keyring,
    app,
    request: supertest(app),
    logLines,
    contractViolations,
    cleanup() {
      if (this.db.open) this.db.close();
      // PostgreSQL: end the pool (nothing waits on it; the database is the suite's to drop).
      if (!database.raw) void database.close();
      // The app writes the audit head file asynchronously; a write may still be landing in
      // data/ while the directory is removed, so let rm retry on ENOTEMPTY.
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 20 });
      if (contractViolations.length) {
        throw new Error(`responses that the OpenAPI document does not describe:\n${[...new Set(contractViolations)].join('\n')}`);
      }
    },
  };
  return harness;
}

/** Runs setup and returns an admin API token. */
export async function setupAdmin(h: Harness): Promise<string> {
  const s = await h.request.post('/api/v1/setup').send({ setupCode: SETUP_CODE, ...ADMIN });
  if (s.status !== 201) throw new Error(`setup failed: ${s.status} ${JSON.stringify(s.body)}`);
  return tokenFor(h, ADMIN.username, ADMIN.password);
}

/** Issues a token for an existing user. */
export async function tokenFor(h: Harness, username: string, password: string): Promise<string> {
  const t = await h.request.post('/api/v1/auth/tokens').send({ username, password, name: 'test' });
  if (t.status !== 201) throw new Error(`token failed: ${t.status} ${JSON.stringify(t.body)}`);
  return t.body.token as string;
}

/** Creates a plain user (as admin) and returns their token. */
export async function makeUser(h: Harness, adminToken: string, username: string): Promise<string> {
  const password = `${username} password 123`;
  const r = await h.request.post('/api/v1/users').set('Authorization', `Bearer ${adminToken}`).send({ username, password });
  if (r.status !== 201) throw new Error(`user create failed: ${r.status} ${JSON.stringify(r.body)}`);
  return tokenFor(h, username, password);
}

/** Every file under a directory, recursively. */
export function listFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
}

/** Supertest parser that collects the raw body as a Buffer. */
export function binaryParser(res: any, cb: (err: Error | null, body: Buffer) => void): void {
  const parts: Buffer[] = [];
  res.on('data', (c: Buffer) => parts.push(c));
  res.on('end', () => cb(null, Buffer.concat(parts)));
  res.on('error', (e: Error) => cb(e, Buffer.concat(parts)));
}

/** Deterministic pseudo-random bytes (fast, reproducible test data). */
export function pattern(size: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Serves an app on a loopback port through the production server wrapper; close() ends every connection. */
export async function serve(app: import('node:http').RequestListener): Promise<{ port: number; close(): Promise<void> }> {
  const { createHttpServer } = await import('../src/server.js');
  const server = createHttpServer(app, { idleTimeoutMs: 30_000 });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as import('node:net').AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
