/**
 * vitest global setup: starts OpenStack Swift's S3 API on loopback from this project's
 * script (test/services/start-swift-s3.sh) when the Debian packages are installed and we are
 * root, exports where it listens (SFS_TEST_S3_* and the AWS credential variables the SDK's
 * default chain reads), and stops it after the run. Set SFS_TEST_S3_ENDPOINT (plus
 * AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) to use a store you run yourself instead.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
// Each run gets its own Swift (data directory and ports from the pid), so two runs on one
// machine (two checkouts, a developer beside CI) never share one, nor stop each other's.
const SLOT = process.pid % 900;
const DATA = path.join(process.env.SFS_TEST_SERVICES_DIR ?? '/tmp/sfs-test-services', `swift-${process.pid}`);
const PORTS = {
  SWIFT_S3_PORT: String(21000 + SLOT * 5),
  SWIFT_BACKEND_PORT_BASE: String(21001 + SLOT * 5),
  SWIFT_MEMCACHED_PORT: String(21004 + SLOT * 5),
};
/** What starting Swift here needs; vitest.config.ts defines the "scale" project only when it (and PostgreSQL) is present. */
export const SWIFT_BINARIES = ['/usr/bin/swift-ring-builder', '/usr/bin/memcached', '/usr/bin/swift-proxy-server', '/usr/bin/swift-object-server'];

/** True when this machine can start the test S3 service (or one is given in SFS_TEST_S3_ENDPOINT). */
export function s3CanRun(): boolean {
  if (process.env.SFS_TEST_S3_ENDPOINT) return true;
  return SWIFT_BINARIES.every((b) => fs.existsSync(b)) && process.getuid?.() === 0;
}
let sharedBucket: { remove(): Promise<void> } | undefined;

let started = false;
let pgStarted = false;
// Per run as well, like Swift above.
const PG_DATA = path.join(process.env.SFS_TEST_SERVICES_DIR ?? '/tmp/sfs-test-services', `pg-${process.pid}`);
const PG_BINARIES = ['/usr/lib/postgresql/15/bin/postgres', '/usr/lib/postgresql/15/bin/initdb', '/usr/lib/postgresql/15/bin/psql'];

/** True when this machine can start the test PostgreSQL (or one is given in SFS_TEST_DATABASE_URL). */
export function pgCanRun(): boolean {
  if (process.env.SFS_TEST_DATABASE_URL) return true;
  return PG_BINARIES.every((b) => fs.existsSync(b)) && process.getuid?.() === 0;
}

/**
 * Starts PostgreSQL 15 on loopback (test/services/start-pg.sh: own data dir and port, fsync
 * off) and exports SFS_TEST_DATABASE_URL; same skip and REQUIRE_SERVICES rules as Swift. Set
 * SFS_TEST_DATABASE_URL (a role that may CREATE DATABASE) to use a server you run yourself.
 */
function setupPostgres(): void {
  if (process.env.SFS_TEST_DATABASE_URL) return;
  const missing = PG_BINARIES.filter((b) => !fs.existsSync(b));
  const why = missing.length
    ? 'no PostgreSQL 15 (apt-get install -y postgresql-15)'
    : process.getuid?.() !== 0
      ? 'PostgreSQL is started as root (user postgres); run the tests as root or set SFS_TEST_DATABASE_URL'
      : '';
  if (why) {
    if (process.env.REQUIRE_SERVICES === '1') throw new Error(`REQUIRE_SERVICES=1 but cannot start PostgreSQL: ${why}`);
    process.env.SFS_TEST_PG_MISSING = why;
    console.log(`\n  SKIPPED PostgreSQL suites: ${why}\n`);
    return;
  }
  let out: string;
  try {
    out = execFileSync(path.join(HERE, 'start-pg.sh'), [PG_DATA], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 120_000,
      env: { ...process.env, PG_PORT: process.env.SFS_TEST_PG_PORT ?? String(26000 + SLOT), PG_USER: 'sfs', PG_PASSWORD: 'sfs-test', PG_DB: 'sfs' },
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`could not start PostgreSQL: ${e.stderr?.trim().split('\n').slice(-5).join(' | ') || e.message}`);
  }
  pgStarted = true;
  const url = /^DATABASE_URL=(.*)$/m.exec(out)?.[1];
  if (!url) throw new Error('start-pg.sh printed no DATABASE_URL');
  process.env.SFS_TEST_DATABASE_URL = url;
}

/**
 * A database on the test server migrated once for the run, from which the "scale" project's
 * harnesses copy theirs (CREATE DATABASE … TEMPLATE: about half the cost of migrating each
 * one). Named after the migrations' SQL, so a server kept between runs never hands out a
 * template of an older schema. Exported as SFS_TEST_PG_TEMPLATE.
 */
async function pgTemplate(): Promise<void> {
  const base = process.env.SFS_TEST_DATABASE_URL;
  if (!base) return;
  const { createHash } = await import('node:crypto');
  const { createRequire } = await import('node:module');
  const { PG_MIGRATIONS } = await import('../../src/db/migrations/postgres.js');
  const { openConfiguredDatabase } = await import('../../src/db/database.js');
  const pg = createRequire(import.meta.url)('pg') as typeof import('pg');
  const name = `sfs_tpl_${createHash('sha256').update(JSON.stringify(PG_MIGRATIONS)).digest('hex').slice(0, 16)}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    const have = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (!have.rowCount) {
      // Built under another name and renamed when complete, so a half-made template is never used.
      const building = `${name}_${process.pid}`;
      await admin.query(`CREATE DATABASE ${building}`);
      const u = new URL(base);
      u.pathname = `/${building}`;
      const db = await openConfiguredDatabase({ dbFile: '', database: { kind: 'postgres', url: u.toString(), poolSize: 1, sslCaFile: undefined } });
      await db.close();
      await admin.query(`ALTER DATABASE ${building} RENAME TO ${name}`).catch(async (err: { code?: string }) => {
        if (err.code !== '42P04') throw err; // another run made it meanwhile
        await admin.query(`DROP DATABASE ${building}`);
      });
    }
  } finally {
    await admin.end();
  }
  process.env.SFS_TEST_PG_TEMPLATE = name;
}

export async function setup(): Promise<void> {
  setupPostgres();
  await pgTemplate();
  // The lockfile pins an SDK release that supports Node 20: its Node 22 notice is noise.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  if (process.env.SFS_TEST_S3_ENDPOINT) return void (await shareBucket());
  const missing = SWIFT_BINARIES.filter((b) => !fs.existsSync(b));
  const why = missing.length
    ? `no OpenStack Swift (apt-get install -y swift swift-proxy swift-account swift-container swift-object memcached)`
    : process.getuid?.() !== 0
      ? 'Swift is started as root (user swift / memcache); run the tests as root or set SFS_TEST_S3_ENDPOINT'
      : '';
  if (why) {
    if (process.env.REQUIRE_SERVICES === '1') throw new Error(`REQUIRE_SERVICES=1 but cannot start the S3 service: ${why}`);
    process.env.SFS_TEST_S3_MISSING = why;
    console.log(`\n  SKIPPED object-store suites (S3 on Swift): ${why}\n`);
    return;
  }
  let out: string;
  try {
    out = execFileSync(path.join(HERE, 'start-swift-s3.sh'), [DATA], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 120_000,
      env: { ...process.env, ...PORTS },
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`could not start Swift's S3 API: ${e.stderr?.trim().split('\n').slice(-5).join(' | ') || e.message}`);
  }
  started = true;
  const vars = Object.fromEntries(
    out
      .split('\n')
      .map((l) => /^([A-Z0-9_]+)=(.*)$/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1], m[2]]),
  ) as Record<string, string>;
  process.env.SFS_TEST_S3_ENDPOINT = vars.S3_ENDPOINT;
  process.env.SFS_TEST_S3_REGION = vars.S3_REGION;
  process.env.SFS_TEST_S3_ACCESS_KEY_ID = vars.S3_ACCESS_KEY_ID;
  process.env.SFS_TEST_S3_SECRET_ACCESS_KEY = vars.S3_SECRET_ACCESS_KEY;
  // The SDK's default credential chain (what the server uses) reads these.
  process.env.AWS_ACCESS_KEY_ID = vars.S3_ACCESS_KEY_ID;
  process.env.AWS_SECRET_ACCESS_KEY = vars.S3_SECRET_ACCESS_KEY;
  await shareBucket();
}

/** One bucket for the suites the "scale" project runs again on S3 (each harness takes its own prefix). */
async function shareBucket(): Promise<void> {
  const { freshBucket, testS3Client } = await import('./services.js');
  const b = await freshBucket(testS3Client());
  sharedBucket = b;
  process.env.SFS_TEST_S3_BUCKET = b.name;
}

export async function teardown(): Promise<void> {
  if (pgStarted) execFileSync(path.join(HERE, 'stop-pg.sh'), [PG_DATA, '--purge'], { stdio: 'ignore', timeout: 60_000 });
  await sharedBucket?.remove().catch(() => {});
  if (!started) return;
  execFileSync(path.join(HERE, 'stop-swift-s3.sh'), [DATA, '--purge'], { stdio: 'ignore', timeout: 60_000 });
}
