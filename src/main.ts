/**
 * The only module with side effects: reads configuration, loads keys, opens the database,
 * sweeps leftovers, and listens. Any start-up problem prints one clear line and exits 1.
 */
import 'dotenv/config';
import fs from 'node:fs';
import path from 'node:path';
import { createApp } from './app.js';
import { UploadsRepo } from './db/uploads.js';
import { ConfigError, loadConfig } from './config.js';
import { openConfiguredDatabase, type Database } from './db/database.js';
import { FilesRepo } from './db/files.js';
import { MasterKeysRepo } from './db/master-keys.js';
import { createLogger } from './http/logging.js';
import { keyFileLoader, loadKeyring } from './keyfile.js';
import { SetupCode } from './services/accounts.js';
import { KeyMismatchError, checkKeyringAgainstDb, registerActiveKey } from './services/key-check.js';
import { DataDirLockedError, acquireDataDirLock, type DataDirLock } from './ops/dir-lock.js';
import { createHttpServer } from './server.js';
import { auditHeadsFor, createBlobStore, describeStore } from './storage/index.js';
import { startPurgeSchedule } from './services/lifecycle.js';

/** Age after which an object-store blob without a row, or an unfinished upload, is a leftover. */
const ORPHAN_GRACE_MS = 6 * 3600_000;

function fail(message: string): never {
  process.stderr.write(`\nsfs: cannot start: ${message}\n\n`);
  process.exit(1);
}

async function main(): Promise<void> {
  // The AWS SDK warns on Node 20 that releases after January 2027 need Node 22; the lockfile
  // pins a release that supports Node 20, so the warning is noise in every start-up log.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  const logger = createLogger(config.logLevel);

  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  // Before anything touches the directory: a second server would migrate, sweep "orphan"
  // blobs of the first one's uploads in flight, and clobber its pid file. The OS lock is
  // held until this process ends, however it ends.
  let lock: DataDirLock;
  try {
    lock = acquireDataDirLock(config.dataDir, 'server');
  } catch (err) {
    if (err instanceof DataDirLockedError) fail(err.message);
    throw err;
  }
  process.on('exit', () => lock.release());
  let db: Database;
  try {
    db = await openConfiguredDatabase(config);
  } catch (err) {
    // Say which setting is wrong and why, never the URL (it may hold the password).
    if (config.database.kind === 'postgres') fail(`DATABASE_URL: cannot use the PostgreSQL database: ${(err as Error).message}`);
    throw err;
  }
  let keys;
  try {
    // Never generate a fresh key for a database that already used one: it would read nothing.
    keys = loadKeyring(config, { mayGenerate: (await new MasterKeysRepo(db.kysely).list()).length === 0 });
  } catch (err) {
    fail((err as Error).message);
  }
  if (keys.generatedFile) {
    const bar = '!'.repeat(78);
    process.stderr.write(
      `\n${bar}\n  A NEW MASTER KEY was generated at ${keys.generatedFile} (mode 0600).\n` +
        `  Every stored file is unreadable without it. BACK IT UP NOW, separately from\n` +
        `  data/ and uploads/ (a backup holding both protects nothing).\n` +
        `  In production the server refuses to start without a key: npm run keygen.\n${bar}\n\n`,
    );
  }

  // A new active key must be introduced on purpose: `sfs key rotate`, this flag or MASTER_KEY_NEW=1.
  const acceptNewKey = config.acceptNewKey || process.argv.slice(2).includes('--accept-new-key');
  try {
    await checkKeyringAgainstDb(db.kysely, keys.keyring, { acceptNewKey });
  } catch (err) {
    if (err instanceof KeyMismatchError) fail(err.message);
    throw err;
  }
  // Once accepted, the key is known: later starts need no flag.
  if (acceptNewKey) await registerActiveKey(db.kysely, keys.keyring);
  // A rotation run beside this server (sfs key rotate) may wrap files under a key this process
  // was not started with: re-read the key file for it, checked against the database.
  keys.keyring.setLoader(keyFileLoader(config, db.kysely, (message) => logger.warn({ problem: message }, 'key file not reloaded')));

  const store = await createBlobStore(config);
  if (config.storage.kind === 's3') {
    // Loaded only here: a disk server never imports the AWS SDK (see storage/index.ts).
    const { S3BlobStore, StoreUnavailableError } = await import('./storage/s3.js');
    try {
      if (store instanceof S3BlobStore) await store.verifyReachable(config.storage.endpoint ?? `AWS ${config.storage.region}`);
    } catch (err) {
      if (err instanceof StoreUnavailableError) fail(err.message);
      throw err;
    }
  }
  // On disk the data directory is ours alone, so every temp file is a crash leftover. A
  // bucket may be shared by other instances with uploads in flight: there only leftovers
  // older than the grace period are removed.
  const graceMs = config.storage.kind === 's3' ? ORPHAN_GRACE_MS : 0;
  // Open resumable uploads keep their multipart upload (S3) however old: they resume later.
  const openUploads = new Set(await new UploadsRepo(db.kysely).openIds());
  const swept = await store.sweepTemp(graceMs, Date.now(), openUploads);
  if (swept) logger.warn({ removed: swept, store: describeStore(config) }, 'removed unfinished writes left by an interrupted run');
  // Blobs are committed before their rows are inserted; a crash in between leaves
  // ciphertext whose DEK was never stored. Any blob without a row (and past the grace
  // period) is such a leftover and can never be read: remove it.
  const known = new Set(await new FilesRepo(db.kysely).allBlobIds());
  let orphans = 0;
  const now = Date.now();
  for await (const e of store.entries()) {
    if (e.kind === 'blob' && e.id && !known.has(e.id) && now - e.mtimeMs >= graceMs) {
      await store.removeEntry(e);
      orphans++;
    }
  }
  if (orphans) logger.warn({ removed: orphans }, 'removed ciphertext left without a row by an interrupted upload');

  const setupFile = path.join(config.dataDir, 'setup-code');
  // One code for every instance on the database: the first to start stores its proposal, the
  // others read that one back (services/accounts.ts SetupCode), so all print the same code.
  const setup = SetupCode.generate(setupFile);
  const code = await setup.establish(db.kysely, keys.keyring);
  if (code !== null) {
    process.stderr.write(
      `\n  No account exists yet. One-time setup code: ${code}\n` +
        `  (also in ${setupFile}). Create the first admin before exposing this server,\n` +
        `  in a browser at http://localhost:${config.port}/setup, or with:\n` +
        `  curl -X POST http://localhost:${config.port}/api/v1/setup -H 'Content-Type: application/json' \\\n` +
        `       -d '{"setupCode":"<code>","username":"admin","password":"<at least 10 characters>"}'\n\n`,
    );
  } else {
    fs.rmSync(setupFile, { force: true });
    // Setup is closed (e.g. `sfs user create` made the first user): the stored code is useless.
    await db.kysely.deleteFrom('setup_code').execute();
  }

  let tls: { cert: Buffer; key: Buffer } | undefined;
  if (config.tls) {
    try {
      tls = { cert: fs.readFileSync(config.tls.certFile), key: fs.readFileSync(config.tls.keyFile) };
    } catch (err) {
      fail(`TLS_CERT_FILE / TLS_KEY_FILE: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  if (config.trustProxy !== false && !config.publicUrl) {
    logger.warn(
      'TRUST_PROXY is on without PUBLIC_URL: share links are built from X-Forwarded-Host, which a client can forge. Set PUBLIC_URL.',
    );
    process.stderr.write('sfs: warning: TRUST_PROXY is set but PUBLIC_URL is not; set PUBLIC_URL so share links cannot be poisoned\n');
  }
  const app = await createApp({ config, db, store, keyring: keys.keyring, logger, setup, auditHeads: auditHeadsFor(config, store) });
  // Expired shares and sessions stop working at their expiry instant anyway; the sweep marks
  // the shares, drops reservations left by crashed responses, and deletes dead sessions.
  const sweep = async () => {
    try {
      const n = await app.services.shares.sweep();
      if (n) logger.info({ expired: n }, 'share sweep');
      const ended = await app.services.sessions.sweep();
      if (ended) logger.info({ ended }, 'session sweep');
      // Leases of uploads that ended without a release (a killed instance) and spent counters.
      await app.services.requests.sweep();
      const uploads = await app.services.tus.sweep();
      if (uploads) logger.info({ uploads }, 'expired resumable uploads removed');
      const leases = await app.services.vault.quota.sweep();
      if (leases) logger.info({ leases }, 'quota lease sweep');
      await app.services.rateLimits.sweep();
    } catch (err) {
      logger.warn({ err }, 'housekeeping sweep failed');
    }
  };
  await sweep();
  setInterval(() => void sweep(), 10 * 60_000).unref();
  // The notification worker: delivers the outbox (claimed with a lease, so any number of
  // instances can run it), retries with backoff, and scans for links about to expire.
  app.services.notify.start();
  // The purge job: every instance schedules it, the lease row lets one run it at a time.
  if (config.purgeSchedule) startPurgeSchedule(app.services.lifecycle, config.purgeSchedule, logger);
  const server = createHttpServer(app, { idleTimeoutMs: config.socketIdleTimeoutMs, tls });

  server.on('error', (err: NodeJS.ErrnoException) => {
    fail(err.code === 'EADDRINUSE' ? `port ${config.port} on ${config.host} is already in use (set PORT)` : err.message);
  });
  server.listen(config.port, config.host, () => {
    const addr = server.address();
    const port = typeof addr === 'object' && addr ? addr.port : config.port;
    const scheme = tls ? 'https' : 'http';
    const shown = config.host === '127.0.0.1' || config.host === '::1' ? 'localhost' : config.host;
    logger.info({ port, host: config.host, keyId: keys.keyring.active.id }, 'listening');
    // Information for operators only; the data directory lock is what keeps others out.
    fs.writeFileSync(pidFile, String(process.pid), { mode: 0o600 });
    process.stderr.write(`sfs listening on ${scheme}://${shown}:${port}\n`);
  });

  const pidFile = path.join(config.dataDir, 'server.pid');
  process.on('exit', () => {
    // Never remove a pid file that is not ours.
    try {
      if (fs.readFileSync(pidFile, 'utf8') === String(process.pid)) fs.rmSync(pidFile, { force: true });
    } catch {
      /* already gone */
    }
  });
  // Graceful shutdown: stop accepting, let requests in flight finish (their connections
  // close afterwards), and after SHUTDOWN_GRACE_MS cut what is left. Uploads cut short never
  // become visible: their temp files are removed, or swept at the next start.
  let stopping = false;
  const active = new Set<import('node:http').ServerResponse>();
  const finish = () => {
    server.closeAllConnections();
    // The audit head file is written asynchronously: let the last write land first.
    void app.services.audit
      .flush()
      .then(() => db.close())
      .finally(() => {
        logger.info('stopped');
        process.exit(0);
      });
  };
  const track = (_req: unknown, res: import('node:http').ServerResponse) => {
    active.add(res);
    if (stopping) res.shouldKeepAlive = false;
    res.on('close', () => {
      active.delete(res);
      if (stopping && active.size === 0) setImmediate(finish);
    });
  };
  server.on('request', track);
  server.on('checkContinue', track);
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, inFlight: active.size }, 'shutting down');
    // Deliveries in flight finish or their lease runs out; no new ones start.
    app.services.notify.stop();
    server.close();
    server.closeIdleConnections();
    for (const res of active) if (!res.headersSent) res.shouldKeepAlive = false;
    if (active.size === 0) return void setImmediate(finish);
    setTimeout(() => {
      logger.warn({ inFlight: active.size }, 'grace period over; closing remaining connections');
      server.closeAllConnections();
      // Give the cut requests a moment to remove their temp files.
      setTimeout(finish, 500).unref();
    }, config.shutdownGraceMs).unref();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`sfs: fatal: ${(err as Error).message}\n`);
  process.exit(1);
});
