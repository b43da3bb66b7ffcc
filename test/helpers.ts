/** Test harness: a fresh app on a temp directory with a random test master key. */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import supertest from 'supertest';
import { createApp, type App } from '../src/app.js';
import { loadConfig, type Config } from '../src/config.js';
import { Keyring } from '../src/crypto/keyring.js';
import { openConfiguredDatabase, type Database, type Dialect, type RawSqlite } from '../src/db/database.js';
import { CompiledQuery } from '../src/db/kysely.js';
import BetterSqlite3 from 'better-sqlite3';
import { createRequire } from 'node:module';
import type * as PgModule from 'pg';
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
  /** The configuration variables the harness was built from (for a CLI or child process on the same database and store). */
  env: Record<string, string>;
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
  /** Which database this harness runs on (SFS_TEST_DATABASE=postgres runs the suites on PostgreSQL). */
  dialect: Dialect;
  /**
   * Runs one SQL statement on the app's database, whichever dialect, and returns its rows
   * (SELECT or RETURNING). Parameters are `?` (turned into `$1`, `$2`, … on PostgreSQL);
   * Buffers bind as BLOB / BYTEA. For tests that forge or read rows behind the server's back.
   */
  sql<T = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<T[]>;
  /** Every row of every table of the app's database (for "no plaintext in the database" checks). */
  tableRows(): Promise<Record<string, Record<string, unknown>[]>>;
  /** Every entry in the blob store, committed or not (disk files incl. temp files; S3 objects and unfinished multipart uploads). */
  storedBlobs(): Promise<string[]>;
  /** The stored ciphertext of a blob, whichever backend. */
  readBlob(id: string): Promise<Buffer>;
  /** Replaces a blob's stored bytes behind the server's back (tampering tests). */
  writeBlob(id: string, bytes: Buffer): Promise<void>;
  /** Removes the temp dir and ends the PostgreSQL pool; throws if any API response broke the documented contract. */
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

const pg = createRequire(import.meta.url)('pg') as typeof PgModule;
// Databases this process already made sure of (a restart on the same directory reuses one).
const readyDatabases = new Map<string, Promise<void>>();

/**
 * With SFS_TEST_DATABASE=postgres (the vitest project "scale"), every harness that does not
 * choose its DATABASE_URL runs on its own database on the test PostgreSQL server, named after
 * its data directory so that a second harness on the same directory (a restart) opens the
 * same database. Created when missing; the server is thrown away at the end of the run.
 */
async function databaseEnv(env: Record<string, string>, dir: string): Promise<Record<string, string>> {
  if (process.env.SFS_TEST_DATABASE !== 'postgres' || env.DATABASE_URL !== undefined) return {};
  const base = process.env.SFS_TEST_DATABASE_URL;
  if (!base) throw new Error(`SFS_TEST_DATABASE=postgres but the global setup started no PostgreSQL (${process.env.SFS_TEST_PG_MISSING ?? 'see test/services'})`);
  const name = `sfs_h_${createHash('sha256').update(dir).digest('hex').slice(0, 16)}`;
  let ready = readyDatabases.get(name);
  if (!ready) {
    ready = createDatabaseIfMissing(base, name);
    readyDatabases.set(name, ready);
  }
  await ready;
  const u = new URL(base);
  u.pathname = `/${name}`;
  // Few connections per harness: many harnesses share one test server.
  return { DATABASE_URL: u.toString(), DATABASE_POOL_SIZE: '4' };
}

async function createDatabaseIfMissing(base: string, name: string): Promise<void> {
  const c = new pg.Client({ connectionString: base });
  await c.connect();
  try {
    const have = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (have.rowCount) return;
    // The names are ours (hex), so they are safe to splice in. A copy of the run's migrated
    // template when the global setup made one (the app then finds its schema current).
    const template = process.env.SFS_TEST_PG_TEMPLATE;
    await c.query(`CREATE DATABASE ${name}${template ? ` TEMPLATE ${template}` : ''}`).catch((err: { code?: string }) => {
      if (err.code !== '42P04') throw err; // duplicate_database: another harness just made it
    });
  } finally {
    await c.end();
  }
}

/** `?` placeholders as PostgreSQL's `$n` (outside quoted literals). */
function numberedParams(text: string): string {
  let n = 0;
  return text.replace(/'(?:[^']|'')*'|"(?:[^"]|"")*"|\?/g, (m) => (m === '?' ? `$${++n}` : m));
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
  opts: { masterKey?: Buffer; dir?: string; setupCode?: string; clock?: () => number } = {},
): Promise<Harness> {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-test-'));
  const fullEnv = { NODE_ENV: 'test', DATA_DIR: 'data', UPLOADS_DIR: 'uploads', LOG_LEVEL: 'debug', ...storageEnv(env, dir), ...(await databaseEnv(env, dir)), ...env };
  const config = loadConfig(fullEnv, dir);
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
  const app = await createApp({ config, db: database, store: blobs, keyring, logger, setup: new SetupCode(opts.setupCode ?? SETUP_CODE), clock: opts.clock, onContractViolation: (m) => contractViolations.push(m) });
  const harness: Harness = {
    dir,
    config,
    env: fullEnv,
    db,
    database,
    get store(): DiskBlobStore {
      if (!(blobs instanceof DiskBlobStore)) throw new Error('this check reads the disk store directly; the harness runs on S3');
      return blobs;
    },
    blobs,
    storage: config.storage.kind,
    dialect: database.dialect,
    async sql<T>(text: string, params: readonly unknown[] = []): Promise<T[]> {
      const q = CompiledQuery.raw(database.dialect === 'postgres' ? numberedParams(text) : text, [...params]);
      return (await database.kysely.executeQuery<T>(q)).rows;
    },
    async tableRows() {
      const tables =
        database.dialect === 'postgres'
          ? await this.sql<{ name: string }>("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
          : await this.sql<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'");
      const out: Record<string, Record<string, unknown>[]> = {};
      for (const { name } of tables) out[name] = await this.sql(`SELECT * FROM "${name.replaceAll('"', '""')}"`);
      return out;
    },
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
      // The app writes the audit head asynchronously, and a response cut off by its client
      // (an aborted download) settles and records its audit event after the test has moved
      // on: a write may still land in data/ while the directory is removed. Retry; if it is
      // still busy, finish the removal in the background rather than fail an unrelated test.
      try {
        fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 20 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw err;
        setTimeout(() => void fs.promises.rm(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 50 }).catch(() => {}), 200).unref();
      }
      if (contractViolations.length) {
        throw new Error(`responses that the OpenAPI document does not describe:\n${[...new Set(contractViolations)].join('\n')}`);
      }
    },
  };
  return harness;
}

/** The dialect the vitest project runs harnesses on (for choosing tests before a harness exists). */
export const TEST_DIALECT: Dialect = process.env.SFS_TEST_DATABASE === 'postgres' ? 'postgres' : 'sqlite';

/** A plain SQL connection to a harness' database of its own (no app, no key): what someone with database access holds. */
export interface SqlConnection {
  sql<T = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<T[]>;
  close(): Promise<void>;
}

/** Opens a second, separate connection to the harness' database (a better-sqlite3 handle on the file, or a pg client). */
export async function separateConnection(h: Harness): Promise<SqlConnection> {
  const d = h.config.database;
  if (d.kind === 'postgres') {
    const c = new pg.Client({ connectionString: d.url });
    await c.connect();
    return {
      sql: async <T,>(text: string, params: readonly unknown[] = []) => (await c.query(numberedParams(text), [...params])).rows as T[],
      close: () => c.end(),
    };
  }
  const db = new BetterSqlite3(h.config.dbFile);
  db.pragma('busy_timeout = 2000');
  return {
    sql: async <T,>(text: string, params: readonly unknown[] = []) => {
      const st = db.prepare(text);
      return (st.reader ? st.all(...params) : (st.run(...params), [])) as T[];
    },
    close: async () => void db.close(),
  };
}

/**
 * Waits until every link download has settled (a response settles its reservation, and so the
 * link's counters, in one transaction just after its last byte went out; on PostgreSQL a
 * check from another connection can come before that commit). Bounded: gives up after 5 s.
 */
export async function downloadsSettled(h: Harness): Promise<void> {
  for (let i = 0; i < 250; i++) {
    const [r] = await h.sql<{ n: number }>('SELECT count(*) AS n FROM share_reservations');
    if (r!.n === 0) return;
    await new Promise((res) => setTimeout(res, 20));
  }
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
