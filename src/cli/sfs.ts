#!/usr/bin/env node
/**
 * The `sfs` command line: host-side operations that read the same configuration as the
 * server. Human output by default, `--json` for scripts, a progress bar on long work when
 * attached to a terminal, exit 0 only on full success (1: the operation found or hit a
 * problem, 2: usage or configuration error). Passwords come from a prompt or stdin, never
 * from argv (argv is visible to every user of the host through ps).
 */
import 'dotenv/config';
import { SingleBar } from 'cli-progress';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, loadConfig, type Config } from '../config.js';
import type { Keyring } from '../crypto/keyring.js';
import { openConfiguredDatabase, type Database } from '../db/database.js';
import { auditRows } from '../services/audit.js';
import { UploadsRepo } from '../db/uploads.js';
import { FilesRepo } from '../db/files.js';
import { AppError } from '../errors.js';
import { KeyFileExistsError, generateKeyFile, loadKeyring } from '../keyfile.js';
import { BackupError, backup, checkBackupFor, databaseNotEmpty, storeNotEmpty, moveAside, restoreV1, restoreV2, type MovedAside } from '../ops/backup.js';
import { migrateStore, targetLabel } from '../ops/migrate.js';
import { acquireOpLock, withOpLock } from '../ops/op-lock.js';
import { DataDirLockedError, acquireDataDirLock } from '../ops/dir-lock.js';
import { gc } from '../ops/gc.js';
import { KeyInUseError, checkpointWal, keyStatus, retire, rotate, type RotateResult } from '../ops/keys.js';
import { reencrypt, type ReencryptResult } from '../ops/reencrypt.js';
import { scrub } from '../ops/scrub.js';
import { AccountsService, normalizeUsername } from '../services/accounts.js';
import type { UserRow } from '../db/users.js';
import { SharesRepo } from '../db/shares.js';
import { adminAction } from '../http/routes/accounts.js';
import { presentShares } from '../http/routes/shares.js';
import { ShareFilesRepo } from '../db/share-files.js';
import { deleteUser } from '../services/offboarding.js';
import { removeUploadsOf } from '../services/tus.js';
import { openIntegrity } from '../services/integrity.js';
import { AuditLog, verifyAuditChain } from '../services/audit.js';
import { KeyMismatchError, checkKeyringAgainstDb } from '../services/key-check.js';
import { PasswordHasher } from '../services/passwords.js';
import { MfaService } from '../services/mfa.js';
import { WebSessions } from '../services/sessions.js';
import { VaultService } from '../services/vault.js';
import { LifecycleService } from '../services/lifecycle.js';
import { DiskBlobStore } from '../storage/disk.js';
import { auditHeadsFor, createBlobStore } from '../storage/index.js';

class UsageError extends Error {}
/** An operation that ran but did not fully succeed: its report is already printed. */
class Unsuccessful extends Error {}

interface Command {
  usage: string;
  summary: string;
  options?: ParseArgsConfig['options'];
  positionals?: [min: number, max: number];
  run(ctx: Ctx): Promise<void>;
}

interface Ctx {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  json: boolean;
  config: Config;
  out(human: string, json: unknown): void;
}

const JSON_OPT = { json: { type: 'boolean' as const, default: false } };

function progress(enabled: boolean, label: string) {
  if (!enabled || !process.stderr.isTTY) return { update: (_d: number, _t: number) => {}, stop: () => {} };
  const bar = new SingleBar({ format: `${label} [{bar}] {percentage}% {value}/{total}`, stream: process.stderr, hideCursor: true });
  let started = false;
  return {
    update(done: number, total: number) {
      if (!started) {
        bar.start(total, 0);
        started = true;
      }
      bar.setTotal(total);
      bar.update(done);
    },
    stop: () => started && bar.stop(),
  };
}

/**
 * Opens the database and the keyring without ever generating a key. A new active key passes
 * the check only for `key rotate` (which registers it) or with MASTER_KEY_NEW=1.
 */
async function open(config: Config, opts: { checkKeys: boolean; acceptNewKey?: boolean }): Promise<{ db: Database; keyring: Keyring }> {
  if (config.database.kind === 'sqlite' && !fs.existsSync(config.dbFile)) throw new UsageError(`no database at ${config.dbFile} (is DATA_DIR right?)`);
  const db = await openConfiguredDatabase(config);
  const { keyring } = loadKeyring(config, { mayGenerate: false });
  if (opts.checkKeys) await checkKeyringAgainstDb(db.kysely, keyring, { acceptNewKey: opts.acceptNewKey || config.acceptNewKey });
  return { db, keyring };
}

/** Accounts on `db`; needs the master key, because user rows are sealed with a key it protects. */
async function accountsOn(db: Database, config: Config, notifier?: import('../services/notify/notifier.js').Notifier): Promise<AccountsService> {
  const { keyring } = loadKeyring(config, { mayGenerate: false });
  const { keys, upgraded } = await openIntegrity(db, keyring);
  if (upgraded && Object.values(upgraded).some((n) => n > 0)) await audit(db, keyring, config, 'integrity.upgrade', 'success', { ...upgraded });
  return new AccountsService({ db, integrity: keys, hasher: new PasswordHasher(1), tokenDefaultTtl: config.tokenDefaultTtl, tokenMaxTtl: config.tokenMaxTtl, notifier });
}

/**
 * The notifier for a CLI change: it only writes the outbox (the servers' workers deliver).
 * Loaded on use, so commands that send nothing never load the mail library.
 */
async function notifierOn(db: Database, keyring: Keyring, config: Config): Promise<import('../services/notify/notifier.js').Notifier> {
  const { Notifier } = await import('../services/notify/notifier.js');
  const { createLogger } = await import('../http/logging.js');
  const notifier = new Notifier({ db, keyring, config: config.notify, publicUrl: config.publicUrl, logger: createLogger('silent') });
  await notifier.init();
  return notifier;
}

/**
 * Applies an admin change to the named user, as the API and admin pages do: tokens (and, on
 * disable, links) are revoked by the service, browser sessions end when the user is disabled or
 * the password reset, and the change is audited with the CLI as the actor.
 */
async function changeUser(config: Config, name: string, changes: { disabled?: boolean; password?: string }): Promise<{ id: string; username: string }> {
  const { db, keyring } = await open(config, { checkKeys: false });
  try {
    // "An admin changed your account" and the admin-wide audit stream, as from the API.
    const notifier = await notifierOn(db, keyring, config);
    const accounts = await accountsOn(db, config, notifier);
    const user = await findUser(accounts, name);
    const effects = await accounts.adminUpdate(user.id, changes);
    await new WebSessions({ db, integrity: accounts.integrity, idleMs: config.sessionIdleMs, maxMs: config.sessionMaxMs }).endAllForUser(user.id);
    await new AuditLog({ db, keyring, heads: auditHeadsFor(config), onAppend: (trx, row) => notifier.auditAppendedIn(trx, row) }).record({
      actor: 'cli',
      action: adminAction(changes),
      outcome: 'success',
      subjectUserId: user.id,
      details: { disabled: changes.disabled, passwordReset: changes.password !== undefined, revokedTokens: effects.revokedTokens, revokedShares: effects.revokedShares, via: 'cli' },
    });
    return user;
  } finally {
    await db.close();
  }
}

/** The user with this name (normalised as everywhere), or not_found. */
async function findUser(accounts: AccountsService, name: string): Promise<UserRow> {
  const user = await accounts.users.byUsername(normalizeUsername(name));
  if (!user) throw new AppError('not_found', `no user named "${name}"`);
  return user;
}

/** The value of --user, required by the share commands. */
function userOption(values: Ctx['values']): string {
  if (typeof values.user !== 'string' || values.user.trim() === '') throw new UsageError('--user NAME is required');
  return values.user;
}

async function audit(db: Database, keyring: Keyring, config: Config, action: string, outcome: 'success' | 'failure', details: Record<string, unknown>): Promise<void> {
  await new AuditLog({ db, keyring, heads: auditHeadsFor(config) }).record({ actor: 'cli', action, outcome, details });
}

async function readPassword(): Promise<string> {
  if (!process.stdin.isTTY) {
    const rl = readline.createInterface({ input: process.stdin });
    for await (const line of rl) {
      rl.close();
      return line;
    }
    throw new UsageError('no password on stdin');
  }
  const ask = (prompt: string) =>
    new Promise<string>((resolve) => {
      const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: true });
      // Mute the echo of typed characters.
      (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = (s: string) => {
        if (s.includes(prompt)) process.stdout.write(prompt);
      };
      rl.question(prompt, (answer) => {
        rl.close();
        process.stdout.write('\n');
        resolve(answer);
      });
    });
  const a = await ask('Password: ');
  const b = await ask('Repeat password: ');
  if (a !== b) throw new UsageError('the passwords do not match');
  return a;
}

const COMMANDS: Record<string, Command> = {
  'key generate': {
    usage: 'sfs key generate [--out FILE]',
    summary: 'write a new random master key (mode 0600); never overwrites',
    options: { out: { type: 'string' } },
    async run({ values, config, out }) {
      const file = typeof values.out === 'string' ? path.resolve(values.out) : config.masterKeyFile;
      generateKeyFile(file);
      out(`Wrote a new master key to ${file} (mode 0600).\nBack it up now, separately from data/ and uploads/.`, { file });
    },
  },
  'key status': {
    usage: 'sfs key status [--json]',
    summary: 'key ids in the keyring and the database, files per key, active key, check values',
    options: JSON_OPT,
    async run({ config, out }) {
      const { db, keyring } = await open(config, { checkKeys: false });
      const rows = await keyStatus(db, keyring);
      await db.close();
      const lines = rows.map(
        (r) =>
          `${r.keyId}  ${r.active ? 'ACTIVE  ' : '        '} keyring:${r.inKeyring ? 'yes' : 'no '}  database:${r.inDatabase ? 'yes' : 'no '}  files:${String(r.files).padStart(7)}  check:${r.checkValueMatches === null ? '-' : r.checkValueMatches ? 'ok' : 'MISMATCH'}`,
      );
      out(lines.join('\n'), { keys: rows });
      if (rows.some((r) => r.checkValueMatches === false || (r.files > 0 && !r.inKeyring))) throw new Unsuccessful();
    },
  },
  'key rotate': {
    usage: 'sfs key rotate [--batch N] [--reencrypt [--max-files N]] [--json]',
    summary: 'rewrap every data key under the active master key (safe while serving; resumable); --reencrypt: fresh keys and ciphertext',
    options: { ...JSON_OPT, batch: { type: 'string' }, reencrypt: { type: 'boolean', default: false }, 'max-files': { type: 'string' } },
    async run({ values, config, json, out }) {
      // Running rotate is how a new active key is introduced: it registers the key.
      const { db, keyring } = await open(config, { checkKeys: true, acceptNewKey: true });
      // One single-writer operation at a time, on every host sharing the database.
      let lock;
      try {
        lock = await acquireOpLock(db, values.reencrypt ? 'key rotate --reencrypt' : 'key rotate');
      } catch (err) {
        await db.close();
        throw err;
      }
      let result: RotateResult;
      let re: ReencryptResult | undefined;
      try {
        let stop = false;
        const onSignal = () => {
          stop = true;
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        const bar = progress(!json, 'rewrapping');
        const batchSize = values.batch === undefined ? 200 : Number(values.batch);
        if (!Number.isInteger(batchSize) || batchSize < 1) throw new UsageError('--batch: expected a positive whole number');
        const maxFiles = values['max-files'] === undefined ? undefined : Number(values['max-files']);
        if (maxFiles !== undefined && (!values.reencrypt || !Number.isInteger(maxFiles) || maxFiles < 1)) {
          throw new UsageError('--max-files: expected a positive whole number, with --reencrypt');
        }
        result = await rotate(db, keyring, { batchSize, onProgress: (p) => bar.update(p.done, p.total), shouldStop: () => stop });
        bar.stop();
        await audit(db, keyring, config, 'key.rotate', result.failed.length || result.interrupted ? 'failure' : 'success', {
          activeKey: keyring.active.id,
          rewrapped: result.rewrapped,
          skipped: result.skipped,
          failed: result.failed.length,
          secrets: result.secrets,
          interrupted: result.interrupted,
        });
        if (values.reencrypt && !result.interrupted && result.failed.length === 0) {
          // Disk: the blob is swapped by rename; an object store: a new object and a row swap (ops/reencrypt.ts).
          const store = await createBlobStore(config);
          const rebar = progress(!json, 're-encrypting');
          re = await reencrypt(db, new VaultService({ db, store, keyring }), store, keyring, {
            progressFile: path.join(config.dataDir, 'reencrypt-progress'),
            maxFiles,
            shouldStop: () => stop,
            onProgress: (d, t) => rebar.update(d, t),
          });
          rebar.stop();
          await audit(db, keyring, config, 'key.reencrypt', re.failed.length || re.interrupted ? 'failure' : 'success', {
            activeKey: keyring.active.id,
            reencrypted: re.reencrypted,
            skipped: re.skipped,
            repaired: re.repaired,
            failed: re.failed.length,
            interrupted: re.interrupted,
          });
        }
      } catch (err) {
        await lock.release().catch(() => {});
        await db.close();
        throw err;
      }
      await lock.release();
      // Last, after the audit events: no old wrapped key (nor any page holding one) stays in the -wal file.
      await checkpointWal(db);
      await db.close();
      const human = [
        `Active key: ${keyring.active.id}`,
        `Rewrapped ${result.rewrapped} file key(s) and ${result.secrets} service secret(s); ${result.skipped} changed meanwhile (skipped).`,
        ...result.failed.map((f) => `FAILED ${f.id}: ${f.reason}`),
        result.interrupted ? 'Interrupted: run "sfs key rotate" again to continue where it stopped.' : '',
        re ? `Re-encrypted ${re.reencrypted} file(s) under fresh data keys; ${re.skipped} skipped (done earlier in this run, or changed meanwhile); ${re.repaired} repaired.` : '',
        ...(re?.failed ?? []).map((f) => `FAILED ${f.id}: ${f.reason}`),
        re?.interrupted ? 'Interrupted: run "sfs key rotate --reencrypt" again to continue where it stopped.' : '',
      ].filter(Boolean);
      out(human.join('\n'), { activeKey: keyring.active.id, ...result, ...(re ? { reencrypt: re } : {}) });
      if (result.failed.length || result.interrupted || re?.failed.length || re?.interrupted) throw new Unsuccessful();
    },
  },
  'key retire': {
    usage: 'sfs key retire ID [--json]',
    summary: "remove a key's check value once no file references it",
    options: JSON_OPT,
    positionals: [1, 1],
    async run({ positionals, config, out }) {
      const id = positionals[0]!;
      const { db, keyring } = await open(config, { checkKeys: false });
      if (id === keyring.active.id) throw new UsageError(`${id} is the active key; rotate to another key first`);
      try {
        const removed = await retire(db, id);
        if (removed) await audit(db, keyring, config, 'key.retire', 'success', { keyId: id });
        out(removed ? `Retired key ${id}. Remove it from the configuration once no backup you keep needs it.` : `No key ${id} in the database.`, { keyId: id, retired: removed });
        if (!removed) throw new Unsuccessful();
      } finally {
        await db.close();
      }
    },
  },
  verify: {
    usage: 'sfs verify [--file ID] [--json]',
    summary: 'scrub: verify every chunk and checksum of every stored file; report missing and orphan ciphertext',
    options: { ...JSON_OPT, file: { type: 'string' } },
    async run({ values, config, json, out }) {
      const { db, keyring } = await open(config, { checkKeys: true });
      const store = await createBlobStore(config);
      const vault = new VaultService({ db, store, keyring });
      const bar = progress(!json, 'verifying');
      const report = await scrub(vault, store, { fileId: typeof values.file === 'string' ? values.file : undefined, onProgress: (d, t) => bar.update(d, t) });
      bar.stop();
      await db.close();
      const lines = report.entries.map((e) => {
        const where = e.status === 'corrupt' ? (e.chunk === null || e.chunk === undefined ? ' (header, key or length)' : ` (chunk ${e.chunk})`) : '';
        return `${e.status.toUpperCase().padEnd(7)} ${e.id}${e.name ? `  ${e.name}` : ''}${where}`;
      });
      lines.push(`${report.counts.ok} ok, ${report.counts.corrupt} corrupt, ${report.counts.missing} missing, ${report.counts.orphan} orphan`);
      out(lines.join('\n'), report);
      if (!report.ok) throw new Unsuccessful();
    },
  },
  gc: {
    usage: 'sfs gc [--dry-run] [--min-age SECONDS] [--json]',
    summary: 'delete leftover temp files and orphan ciphertext older than a safety age (default 1 hour)',
    options: { ...JSON_OPT, 'dry-run': { type: 'boolean', default: false }, 'min-age': { type: 'string' } },
    async run({ values, config, out }) {
      const { db, keyring } = await open(config, { checkKeys: false });
      const minAge = values['min-age'] === undefined ? 3600 : Number(values['min-age']);
      if (!Number.isInteger(minAge) || minAge < 0) throw new UsageError('--min-age: expected seconds (a whole number)');
      const keep = new Set(await new UploadsRepo(db.kysely).openIds());
      const result = await gc(new FilesRepo(db.kysely), await createBlobStore(config), { dryRun: values['dry-run'] === true, minAgeMs: minAge * 1000, keep });
      if (!result.dryRun && result.removed.length) await audit(db, keyring, config, 'store.gc', 'success', { removed: result.removed.length, bytesFreed: result.bytesFreed });
      await db.close();
      const verb = result.dryRun ? 'Would remove' : 'Removed';
      const lines = [
        ...result.removed.map((r) => `${verb} ${r.kind}: ${r.path}`),
        ...result.missingRows.map((id) => `MISSING ciphertext for file ${id} (row kept; see "sfs verify")`),
        `${verb} ${result.removed.length} file(s), ${result.bytesFreed} bytes; kept ${result.keptYoung} younger than ${minAge} s.`,
      ];
      out(lines.join('\n'), result);
      if (result.missingRows.length) throw new Unsuccessful();
    },
  },
  'audit verify': {
    usage: 'sfs audit verify [--json]',
    summary: 'walk the audit hash chain and print the first broken row',
    options: JSON_OPT,
    async run({ config, out }) {
      const { db, keyring } = await open(config, { checkKeys: false });
      const r = await verifyAuditChain(db.kysely, keyring, auditHeadsFor(config));
      await db.close();
      out(r.ok ? `Audit chain intact: ${r.count} event(s).` : `Audit chain BROKEN at row ${r.brokenAt}: ${r.reason} (${r.count} row(s) verified before it).`, r);
      if (!r.ok) throw new Unsuccessful();
    },
  },
  'audit export': {
    usage: 'sfs audit export [--since ISO-TIME] > events.jsonl',
    summary: 'write audit events as JSON lines to stdout',
    options: { since: { type: 'string' } },
    async run({ values, config }) {
      const { db } = await open(config, { checkKeys: false });
      const since = typeof values.since === 'string' ? Date.parse(values.since) : 0;
      if (Number.isNaN(since)) throw new UsageError('--since: expected an ISO 8601 time, e.g. 2026-01-31T00:00:00Z');
      for await (const r of auditRows(db.kysely, since)) {
        const line = {
          seq: r.seq,
          at: new Date(r.at).toISOString(),
          actor: r.actor,
          action: r.action,
          outcome: r.outcome,
          subjectUserId: r.subject_user_id,
          fileId: r.file_id,
          shareId: r.share_id,
          ip: r.ip,
          userAgent: r.user_agent,
          details: JSON.parse(r.details),
          mac: r.mac.toString('hex'),
        };
        process.stdout.write(JSON.stringify(line) + '\n');
      }
      await db.close();
    },
  },
  backup: {
    usage: 'sfs backup DIR [--json]',
    summary: 'consistent copy of the database and the matching ciphertext, with a manifest (never the master key)',
    options: JSON_OPT,
    positionals: [1, 1],
    async run({ positionals, config, json, out }) {
      const { db, keyring } = await open(config, { checkKeys: true });
      const dir = path.resolve(positionals[0]!);
      let m;
      try {
        const store = await createBlobStore(config);
        m = await withOpLock(db, 'backup', async () => {
          const bar = progress(!json, 'copying');
          const made = await backup(db, store, dir, (d, t) => bar.update(d, t));
          bar.stop();
          return made;
        });
        await audit(db, keyring, config, 'backup.create', 'success', { dir, files: m.files.count });
      } finally {
        await db.close();
      }
      out(
        [
          `Backed up ${m.files.count} file(s) (${m.files.bytes} bytes of plaintext) to ${dir}.`,
          m.droppedRows.length ? `${m.droppedRows.length} file(s) deleted during the backup were left out.` : '',
          'The master key is NOT in the backup: keep it (and any retired key this backup needs) safe, apart from it.',
        ]
          .filter(Boolean)
          .join('\n'),
        { dir, ...m, blobs: m.blobs.length, tables: m.tables.map((t) => ({ name: t.name, rows: t.rows })) },
      );
    },
  },
  restore: {
    usage: 'sfs restore DIR [--json]   (stop the server first)',
    summary: 'check a backup against the configured keys, then restore it: SQLite + disk moves the current state aside; PostgreSQL / S3 must be empty',
    options: JSON_OPT,
    positionals: [1, 1],
    async run({ positionals, config, json, out }) {
      // Held for the whole restore: no server can start on the directory meanwhile, and none
      // is running now (the OS lock cannot be left behind by a crash, unlike a pid file).
      let lock;
      try {
        lock = acquireDataDirLock(config.dataDir, 'restore');
      } catch (err) {
        if (err instanceof DataDirLockedError) throw new UsageError(err.message);
        throw err;
      }
      let r: { files: number; previousDatabase: string | null; previousUploads: string | null };
      const dir = path.resolve(positionals[0]!);
      try {
        const { keyring } = loadKeyring(config, { mayGenerate: false });
        // Everything is checked (checksums, keys) before anything is changed.
        const manifest = await checkBackupFor(dir, keyring);
        const single = config.database.kind === 'sqlite' && config.storage.kind === 'disk';
        if (manifest.version === 1 && !single) throw new UsageError('this is a version 1 backup (a SQLite file): restore it onto SQLite + disk, then "sfs migrate"');
        const bar = progress(!json, 'restoring');
        let aside: MovedAside = { previousDatabase: null, previousUploads: null };
        let files: number;
        if (manifest.version === 1) {
          aside = await moveAside({ dbFile: config.dbFile, uploadsDir: config.uploadsDir });
          files = await restoreV1(dir, manifest, { dbFile: config.dbFile, uploadsDir: config.uploadsDir }, (d, t) => bar.update(d, t));
        } else {
          // The single-node layout is moved aside (never deleted), which leaves it empty; a
          // shared database or bucket cannot be moved aside, so it must be empty already, and
          // is checked before the local state is moved, so a refusal changes nothing.
          if (config.database.kind === 'postgres' || config.storage.kind === 's3') {
            const db = await openConfiguredDatabase(config);
            try {
              const dbBusy = await databaseNotEmpty(db, manifest.tables.map((t) => t.name));
              // The backup's own blobs may be in the bucket only when the database is empty (an
              // interrupted restore, rerun); beside live rows the bucket must be empty.
              const why =
                (config.database.kind === 'postgres' ? dbBusy : null) ??
                (config.storage.kind === 's3' ? await storeNotEmpty(await createBlobStore(config), new Set(dbBusy ? [] : manifest.blobs.map((b) => b.id))) : null);
              if (why) throw new BackupError(why);
            } finally {
              await db.close();
            }
          }
          aside = await moveAside({
            dbFile: config.database.kind === 'sqlite' ? config.dbFile : undefined,
            uploadsDir: config.storage.kind === 'disk' ? config.uploadsDir : undefined,
          });
          const db = await openConfiguredDatabase(config);
          try {
            const store = await createBlobStore(config);
            files = await withOpLock(db, 'restore', () => restoreV2(dir, manifest, { db, store }, (d, t) => bar.update(d, t)));
          } finally {
            await db.close();
          }
        }
        bar.stop();
        // The chain head outside the database must match the restored chain, not the old one.
        // (data/audit-head, or the head objects in the bucket: whatever verifyAuditChain reads)
        await auditHeadsFor(config).replace(manifest.auditHead);
        const db = await openConfiguredDatabase(config);
        await audit(db, keyring, config, 'backup.restore', 'success', { dir, files });
        await db.close();
        r = { files, ...aside };
      } finally {
        lock.release();
      }
      out(
        [
          `Restored ${r.files} file(s) from ${dir}.`,
          r.previousDatabase ? `The previous database was kept as ${r.previousDatabase}` : '',
          r.previousUploads ? `The previous uploads were kept in ${r.previousUploads}` : '',
        ]
          .filter(Boolean)
          .join('\n'),
        { dir, ...r },
      );
    },
  },
  migrate: {
    usage: 'sfs migrate --to-database URL --to-bucket BUCKET [--to-prefix P] [--to-endpoint URL] [--to-region R] [--max-blobs N] [--json]   (stop the server first)',
    summary: 'copy the single-node layout (SQLite + disk) to PostgreSQL + S3, ciphertext as stored, each blob checked; resumable',
    options: {
      ...JSON_OPT,
      'to-database': { type: 'string' },
      'to-bucket': { type: 'string' },
      'to-prefix': { type: 'string' },
      'to-endpoint': { type: 'string' },
      'to-region': { type: 'string' },
      'max-blobs': { type: 'string' },
    },
    async run({ values, config, json, out }) {
      if (config.database.kind !== 'sqlite' || config.storage.kind !== 'disk') {
        throw new UsageError('migrate reads the single-node layout: run it with DATABASE_URL unset and STORAGE=disk (the target goes in --to-database / --to-bucket)');
      }
      const url = typeof values['to-database'] === 'string' ? values['to-database'] : '';
      const bucket = typeof values['to-bucket'] === 'string' ? values['to-bucket'] : '';
      if (!url || !bucket) throw new UsageError('--to-database URL and --to-bucket BUCKET are required');
      const maxBlobs = values['max-blobs'] === undefined ? undefined : Number(values['max-blobs']);
      if (maxBlobs !== undefined && (!Number.isInteger(maxBlobs) || maxBlobs < 1)) throw new UsageError('--max-blobs: expected a positive whole number');
      // The target's settings, validated as the server validates its own (S3_* from the
      // environment, the flags on top); credentials come from the standard AWS chain.
      const targetConfig = loadConfig({
        ...process.env,
        DATABASE_URL: url,
        STORAGE: 's3',
        S3_BUCKET: bucket,
        ...(typeof values['to-prefix'] === 'string' ? { S3_PREFIX: values['to-prefix'] } : {}),
        ...(typeof values['to-endpoint'] === 'string' ? { S3_ENDPOINT: values['to-endpoint'] } : {}),
        ...(typeof values['to-region'] === 'string' ? { S3_REGION: values['to-region'] } : {}),
      });
      if (targetConfig.storage.kind !== 's3') throw new UsageError('--to-bucket: expected an S3 bucket');
      if (!fs.existsSync(config.dbFile)) throw new UsageError(`no database at ${config.dbFile} (is DATA_DIR right?)`);
      // The source server must be stopped: it holds this lock while it runs.
      let dirLock;
      try {
        dirLock = acquireDataDirLock(config.dataDir, 'migrate');
      } catch (err) {
        if (err instanceof DataDirLockedError) throw new UsageError(err.message);
        throw err;
      }
      let stop = false;
      const onSignal = () => {
        stop = true;
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let r;
      try {
        // The source's keys must open its data: the target is opened with the same key.
        const source = await open(config, { checkKeys: true });
        await source.db.close();
        const target = await openConfiguredDatabase(targetConfig);
        try {
          const targetStore = await createBlobStore(targetConfig);
          const bar = progress(!json, 'migrating');
          r = await withOpLock(target, 'migrate', () =>
            migrateStore({ store: new DiskBlobStore(config.uploadsDir) }, { db: target, store: targetStore }, {
              sourceDbFile: config.dbFile,
              progressFile: path.join(config.dataDir, 'migrate-progress'),
              stagingDir: path.join(config.dataDir, 'migrate-staging'),
              targetLabel: targetLabel(url, targetConfig.storage.kind === 's3' ? targetConfig.storage.bucket : bucket, targetConfig.storage.kind === 's3' ? targetConfig.storage.prefix : ''),
              maxBlobs,
              shouldStop: () => stop,
              onProgress: (d, t) => bar.update(d, t),
            }),
          );
          bar.stop();
          if (!r.interrupted) {
            // The target's chain is the source's: so is its head (kept outside the database),
            // so that rows cut off the end are caught on the target as they were on the source.
            const heads = [...(await auditHeadsFor(config).readAll()), ...(r.lastAudit ? [r.lastAudit] : [])];
            const head = heads.sort((x, y) => y.seq - x.seq)[0] ?? null;
            await auditHeadsFor(targetConfig, targetStore).replace(head);
          }
        } finally {
          await target.close();
        }
      } finally {
        dirLock.release();
      }
      const human = r.interrupted
        ? `Interrupted after ${r.copied} blob(s) (${r.resumed} copied before): run "sfs migrate" again with the same target to continue. The target database is still empty.`
        : `Migrated ${r.files} file(s) (${r.copied} copied now, ${r.resumed} before) and ${r.rows} row(s). The source is unchanged; start the server with DATABASE_URL and STORAGE=s3.`;
      out(human, r);
      if (r.interrupted) throw new Unsuccessful();
    },
  },
  'user create': {
    usage: 'sfs user create NAME [--admin]',
    summary: 'create a user; the password is read from a prompt or stdin (this closes first-run setup)',
    options: { admin: { type: 'boolean', default: false } },
    positionals: [1, 1],
    async run({ positionals, values, config, out }) {
      const username = positionals[0]!;
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(username)) throw new UsageError('NAME: use 1-64 letters, digits, dot, underscore or hyphen');
      const password = await readPassword();
      fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
      const db = await openConfiguredDatabase(config);
      try {
        const accounts = await accountsOn(db, config);
        const user = await accounts.createUser(username, password, values.admin ? 'admin' : 'user');
        // Any user closes the first-run setup; its code is useless from now on.
        fs.rmSync(path.join(config.dataDir, 'setup-code'), { force: true });
        out(`Created ${user.role} "${user.username}" (${user.id}).`, { id: user.id, username: user.username, role: user.role });
      } finally {
        await db.close();
      }
    },
  },
  'user list': {
    usage: 'sfs user list [--json]',
    summary: 'list users',
    options: JSON_OPT,
    async run({ config, out }) {
      const db = await openConfiguredDatabase(config);
      const accounts = await accountsOn(db, config);
      const users = (await accounts.users.list()).map((u) => ({ id: u.id, username: u.username, role: u.role, disabled: u.disabled }));
      await db.close();
      out(users.map((u) => `${u.username.padEnd(24)} ${u.role.padEnd(6)} ${u.disabled ? 'disabled' : 'active'}  ${u.id}`).join('\n') || '(no users)', { users });
    },
  },
  'user disable': {
    usage: 'sfs user disable NAME',
    summary: 'disable a user (their tokens, sessions and links stop working for good)',
    positionals: [1, 1],
    async run({ positionals, config, out }) {
      const user = await changeUser(config, positionals[0]!, { disabled: true });
      out(`Disabled "${user.username}"; their tokens, browser sessions and share links stopped working for good.`, { id: user.id, disabled: true });
    },
  },
  'user delete': {
    usage: 'sfs user delete NAME (--transfer-to OTHER | --delete-files) [--json]',
    summary: "delete a user; their files go to another user or are deleted (one is required); links and tokens end",
    options: { ...JSON_OPT, 'transfer-to': { type: 'string' }, 'delete-files': { type: 'boolean', default: false } },
    positionals: [1, 1],
    async run({ positionals, values, config, out }) {
      const transferTo = typeof values['transfer-to'] === 'string' ? values['transfer-to'] : undefined;
      const deleteFiles = values['delete-files'] === true;
      if ((transferTo === undefined) === !deleteFiles) throw new UsageError('give exactly one of --transfer-to OTHER or --delete-files');
      const { db, keyring } = await open(config, { checkKeys: true });
      try {
        const accounts = await accountsOn(db, config);
        const user = await findUser(accounts, positionals[0]!);
        const receiver = transferTo === undefined ? undefined : await findUser(accounts, transferTo);
        const store = await createBlobStore(config);
        const vault = new VaultService({ db, store, keyring, defaultQuota: config.userQuotaBytes });
        const log = new AuditLog({ db, keyring, heads: auditHeadsFor(config) });
        const sessions = new WebSessions({ db, integrity: accounts.integrity, idleMs: config.sessionIdleMs, maxMs: config.sessionMaxMs });
        const r = await deleteUser(
          { db, accounts, vault, endSessions: (id) => sessions.endAllForUser(id), dropUploads: (id) => removeUploadsOf(db, store, id), record: (e) => log.record({ ...e, actor: 'cli', details: { ...e.details, via: 'cli' } }) },
          user.id,
          receiver ? { transferTo: receiver.id } : { deleteFiles: true },
        );
        const what = receiver ? `transferred ${r.files} file(s) (${r.bytes} bytes) to "${receiver.username}"` : `deleted ${r.files} file(s) (${r.bytes} bytes)`;
        const lines = [`Deleted user "${user.username}"; ${what}; revoked ${r.revokedShares} link(s) and ${r.revokedTokens} token(s).`];
        if (r.receiverOverQuota) lines.push(`Note: "${receiver!.username}" is now over their quota (allowed; recorded in the audit log).`);
        out(lines.join('\n'), r);
      } finally {
        await db.close();
      }
    },
  },
  'share list': {
    usage: 'sfs share list --user NAME [--json]',
    summary: "list a user's share links (no tokens)",
    options: { ...JSON_OPT, user: { type: 'string' } },
    async run({ values, config, out }) {
      const name = userOption(values);
      const { db } = await open(config, { checkKeys: false });
      try {
        const accounts = await accountsOn(db, config);
        const user = await findUser(accounts, name);
        const shares = await presentShares({ members: new ShareFilesRepo(db.kysely, accounts.integrity) }, await new SharesRepo(db.kysely, accounts.integrity).listForOwner(user.id));
        const lines = shares.map((s) => `${s.id}  ${s.status.padEnd(9)} file ${s.fileId}  expires ${s.expiresAt}  downloads ${s.downloads}/${s.maxDownloads ?? 'unlimited'}`);
        out(lines.join('\n') || `(no links for "${user.username}")`, { user: user.username, shares });
      } finally {
        await db.close();
      }
    },
  },
  purge: {
    usage: 'sfs purge [--dry-run] [--json]',
    summary: 'run one pass of the purge job now: crypto-shred every expired file (never a held one); --dry-run lists them',
    options: { ...JSON_OPT, 'dry-run': { type: 'boolean', default: false } },
    async run({ values, config, out }) {
      const { db, keyring } = await open(config, { checkKeys: false });
      try {
        const store = await createBlobStore(config);
        const lifecycle = new LifecycleService({ db, store, audit: new AuditLog({ db, keyring, heads: auditHeadsFor(config, store) }) });
        const dryRun = values['dry-run'] === true;
        const r = await lifecycle.runOnce({ dryRun });
        if (!r.ran) {
          out('Another instance is running the purge job now; nothing done.', r);
          throw new Unsuccessful();
        }
        const verb = dryRun ? 'Would purge' : 'Purged';
        const lines = r.purged.map((f) => `${verb} ${f.id}  ${f.name}  (${f.size} bytes, ${f.reason === 'expired' ? `expired ${new Date(f.expiresAt!).toISOString()}` : 'last download done'})`);
        if (dryRun && r.held) lines.push(`${r.held} due file(s) kept: under a legal hold.`);
        if (r.resumed) lines.push(`${dryRun ? 'Would finish' : 'Finished'} ${r.resumed} interrupted purge(s) (ciphertext of already shredded files).`);
        lines.push(`${verb} ${r.purged.length} file(s).`);
        out(lines.join('\n'), r);
      } finally {
        await db.close();
      }
    },
  },
  'share revoke': {
    usage: 'sfs share revoke --user NAME (ID | --all) [--json]',
    summary: "revoke one of a user's share links, or all of them",
    options: { ...JSON_OPT, user: { type: 'string' }, all: { type: 'boolean', default: false } },
    positionals: [0, 1],
    async run({ positionals, values, config, out }) {
      const name = userOption(values);
      const id = positionals[0];
      const all = values.all === true;
      if ((id === undefined) === !all) throw new UsageError('give exactly one of a share ID or --all');
      if (id !== undefined && !/^[0-9a-f]{32}$/.test(id)) throw new UsageError('ID: expected a share id (32 hex digits, see "sfs share list")');
      const { db, keyring } = await open(config, { checkKeys: false });
      try {
        const accounts = await accountsOn(db, config);
        const user = await findUser(accounts, name);
        const repo = new SharesRepo(db.kysely, accounts.integrity);
        const now = Date.now();
        const log = new AuditLog({ db, keyring, heads: auditHeadsFor(config) });
        if (all) {
          const revoked = await repo.revokeAllForOwner(user.id, now);
          await log.record({ actor: 'cli', action: 'share.revoke_all', outcome: 'success', subjectUserId: user.id, details: { revoked, by: 'admin', via: 'cli' } });
          out(`Revoked ${revoked} link(s) of "${user.username}".`, { user: user.username, revoked });
          return;
        }
        const share = await repo.byId(id!);
        if (!share || share.ownerId !== user.id || !(await repo.revoke(share.id, user.id, now))) throw new AppError('not_found', `"${user.username}" has no live link ${id}`);
        await log.record({ actor: 'cli', action: 'share.revoke', outcome: 'success', subjectUserId: user.id, fileId: share.fileId, shareId: share.id, details: { by: 'admin', via: 'cli' } });
        out(`Revoked link ${share.id} of "${user.username}".`, { user: user.username, revoked: 1, id: share.id });
      } finally {
        await db.close();
      }
    },
  },
  'user reset-password': {
    usage: 'sfs user reset-password NAME',
    summary: "set a user's password (read from a prompt or stdin); revokes their tokens",
    positionals: [1, 1],
    async run({ positionals, config, out }) {
      const password = await readPassword();
      const user = await changeUser(config, positionals[0]!, { password });
      out(`Password of "${user.username}" changed; their API tokens were revoked and browser sessions ended.`, { id: user.id });
    },
  },
  'user reset-2fa': {
    usage: 'sfs user reset-2fa NAME [--json]',
    summary: "remove a user's second factors (authenticator app, passkeys, recovery codes), e.g. the last admin's lost phone",
    options: { ...JSON_OPT },
    positionals: [1, 1],
    async run({ positionals, config, out }) {
      const { db, keyring } = await open(config, { checkKeys: false });
      try {
        const accounts = await accountsOn(db, config);
        const user = await findUser(accounts, positionals[0]!);
        // Host access is the proof here: this is the way back in when no admin can sign in.
        const mfa = new MfaService({ db, keyring, integrity: accounts.integrity, requireDefault: config.require2fa });
        const removed = await mfa.resetAll(user.id);
        await new AuditLog({ db, keyring, heads: auditHeadsFor(config) }).record({ actor: 'cli', action: 'mfa.reset', outcome: 'success', subjectUserId: user.id, details: { by: 'host', ...removed, via: 'cli' } });
        out(`Second factors of "${user.username}" removed (authenticator app: ${removed.totp ? 'yes' : 'none'}, passkeys: ${removed.passkeys}, recovery codes: ${removed.recoveryCodes}). They are told at their next sign-in.`, { user: user.username, ...removed });
      } finally {
        await db.close();
      }
    },
  },
};

function mainHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  return [
    'Usage: sfs <command> [options]',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    'Every command reads the same settings as the server (environment and .env).',
    'Run "sfs <command> --help" for details. Exit status: 0 success, 1 problem found, 2 usage error.',
  ].join('\n');
}

async function run(argv: string[]): Promise<number> {
  if (argv.length === 0 || ['--help', '-h', 'help'].includes(argv[0]!)) {
    process.stdout.write(mainHelp() + '\n');
    return argv.length === 0 ? 2 : 0;
  }
  const two = `${argv[0]} ${argv[1] ?? ''}`.trim();
  const [name, rest] = COMMANDS[two] ? [two, argv.slice(2)] : [argv[0]!, argv.slice(1)];
  const cmd = COMMANDS[name];
  if (!cmd) throw new UsageError(`unknown command "${argv.slice(0, 2).join(' ')}"\n\n${mainHelp()}`);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`Usage: ${cmd.usage}\n\n${cmd.summary}\n`);
    return 0;
  }
  const { values, positionals } = parseArgs({ args: rest, options: cmd.options ?? {}, allowPositionals: true, strict: true });
  const [min, max] = cmd.positionals ?? [0, 0];
  if (positionals.length < min || positionals.length > max) throw new UsageError(`usage: ${cmd.usage}`);
  const json = values.json === true;
  const config = loadConfig();
  await cmd.run({
    values: values as Ctx['values'],
    positionals,
    json,
    config,
    out: (human, data) => process.stdout.write((json ? JSON.stringify(data, null, 2) : human) + '\n'),
  });
  return 0;
}

run(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    if (err instanceof Unsuccessful) process.exit(1);
    // Exit 2 for anything the caller got wrong (usage, configuration, invalid input such as a
    // short password); 1 for operations that ran into a problem (not found, conflict, damage).
    const usage =
      err instanceof UsageError ||
      err instanceof ConfigError ||
      err instanceof KeyFileExistsError ||
      (err instanceof AppError && err.code === 'validation_error') ||
      (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    const known = err instanceof KeyMismatchError || err instanceof KeyInUseError || err instanceof BackupError;
    const message = err instanceof AppError ? err.detail : (err as Error).message;
    process.stderr.write(`sfs: ${message}\n`);
    process.exit(usage ? 2 : known || err instanceof AppError ? 1 : 1);
  },
);
