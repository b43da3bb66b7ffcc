/**
 * `sfs migrate`: moves the single-node layout (SQLite + disk) to the scale-out one (PostgreSQL +
 * S3), copying rows and ciphertext exactly as stored (never decrypting: the target opens them
 * with the same master key). The source server must be stopped (the caller holds the data-dir
 * lock), so the source is static and the copy is consistent without a snapshot.
 *
 * Order: every blob first, each checked (length and SHA-256 of the source, of the bytes sent,
 * and of the object read back from the target), each finished blob recorded (fsynced) in a
 * progress file; then every row in one transaction on the target. An interrupted run leaves
 * the target database empty (a server on it serves nothing) and a rerun skips the recorded
 * blobs and continues. Afterwards the progress file is removed; the source is left untouched.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Database } from '../db/database.js';
import { blobIdOf, type BlobStore } from '../storage/blob-store.js';
import { BackupError, putVerified, storedChecksum, targetNotEmpty } from './backup.js';
import { loadDump, nonEmptyTables, schemaVersionOf, sqliteFileSnapshot, writeDump, type TableDump } from './dump.js';

export interface MigrateResult {
  files: number;
  /** Blobs copied by this invocation. */
  copied: number;
  /** Blobs an earlier, interrupted invocation had already copied and checked. */
  resumed: number;
  rows: number;
  interrupted: boolean;
  /** The last audit row copied ({seq, mac}), for the target's head. */
  lastAudit: { seq: number; mac: string } | null;
}

export interface MigrateOptions {
  /** The source SQLite file (the caller holds its data-dir lock). */
  sourceDbFile: string;
  /** Progress of the current migration (one line per checked blob). */
  progressFile: string;
  /** Where the table dumps are staged (recreated on every run). */
  stagingDir: string;
  /** Names the target in the progress file (never a password: a hash of the URL). */
  targetLabel: string;
  /** Stop (as interrupted) after this many blobs in this invocation. */
  maxBlobs?: number;
  shouldStop?: () => boolean;
  onProgress?: (done: number, total: number) => void;
}

/**
 * A label for a target that names it without its credentials: the password is dropped from
 * the URL before hashing (an unsalted hash of a password is no place to keep one).
 */
export function targetLabel(databaseUrl: string, bucket: string, prefix: string): string {
  let where = databaseUrl;
  try {
    const u = new URL(databaseUrl);
    u.password = '';
    u.search = '';
    where = u.toString();
  } catch {
    where = '';
  }
  return `s3://${bucket}/${prefix} db:${createHash('sha256').update(where).digest('hex').slice(0, 16)}`;
}

interface Progress {
  done: Map<string, { size: number; sha256: string }>;
  record(id: string, c: { size: number; sha256: string }): void;
  close(): void;
}

function openProgress(file: string, label: string): Progress {
  const done = new Map<string, { size: number; sha256: string }>();
  if (fs.existsSync(file)) {
    const [head, ...lines] = fs.readFileSync(file, 'utf8').split('\n');
    let target: string | undefined;
    try {
      target = (JSON.parse(head ?? '') as { target?: string }).target;
    } catch {
      target = undefined;
    }
    if (target !== label) throw new BackupError(`${file} belongs to a migration to another target (${target ?? 'unreadable'}); remove it to start over`);
    for (const l of lines) {
      const m = /^([0-9a-f]{32}(?:\.g[1-9][0-9]*)?) (\d+) ([0-9a-f]{64})$/.exec(l);
      if (m) done.set(m[1]!, { size: Number(m[2]), sha256: m[3]! });
    }
  } else {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.writeFileSync(file, JSON.stringify({ target: label, started: new Date().toISOString() }) + '\n', { mode: 0o600, flag: 'wx' });
  }
  const fd = fs.openSync(file, 'a');
  return {
    done,
    record(id, c) {
      fs.writeSync(fd, `${id} ${c.size} ${c.sha256}\n`);
      fs.fsyncSync(fd);
      done.set(id, c);
    },
    close: () => fs.closeSync(fd),
  };
}

/** Migrates source (SQLite + disk, stopped) to target (empty database and store); resumable. */
export async function migrateStore(source: { store: BlobStore }, target: { db: Database; store: BlobStore }, opts: MigrateOptions): Promise<MigrateResult> {
  try {
    return await migrateSteps(source, target, opts);
  } finally {
    // Staged again on every run from the static source; never left behind.
    await fsp.rm(opts.stagingDir, { recursive: true, force: true });
  }
}

async function migrateSteps(source: { store: BlobStore }, target: { db: Database; store: BlobStore }, opts: MigrateOptions): Promise<MigrateResult> {
  // The dump is staged from the static source on every run (it is small next to the blobs).
  await fsp.rm(opts.stagingDir, { recursive: true, force: true });
  await fsp.mkdir(opts.stagingDir, { recursive: true, mode: 0o700 });
  const snap = sqliteFileSnapshot(opts.sourceDbFile);
  const ids: string[] = [];
  let lastAudit: MigrateResult['lastAudit'] = null;
  let tables: TableDump[];
  let sourceVersion: number;
  try {
    sourceVersion = snap.schemaVersion;
    tables = await writeDump(snap, opts.stagingDir, (t, r) => {
      if (t === 'files') ids.push(blobIdOf({ id: r.id as string, blobGen: Number(r.blob_gen ?? 0) }));
      else if (t === 'audit_events' && (!lastAudit || Number(r.seq) > lastAudit.seq)) lastAudit = { seq: Number(r.seq), mac: (r.mac as Buffer).toString('hex') };
    });
  } finally {
    await snap.close();
  }
  ids.sort();
  const targetVersion = await schemaVersionOf(target.db);
  if (sourceVersion > targetVersion) throw new BackupError(`the source is at schema version ${sourceVersion}, newer than the target's ${targetVersion}`);
  const names = tables.map((t) => t.name);
  if ((await nonEmptyTables(target.db, names)).length) {
    throw new BackupError('the target database is not empty: migrate copies into an empty database only (already migrated? then start the server on the target)');
  }
  const why = await targetNotEmpty(target.db, target.store, names, new Set(ids));
  if (why) throw new BackupError(why);

  const progress = openProgress(opts.progressFile, opts.targetLabel);
  const result: MigrateResult = { files: ids.length, copied: 0, resumed: 0, rows: 0, interrupted: false, lastAudit };
  let n = 0;
  try {
    for (const id of ids) {
      const prior = progress.done.get(id);
      const there = prior ? await target.store.stat(id) : null;
      if (prior && there && there.size === prior.size) {
        result.resumed++;
      } else {
        if (opts.shouldStop?.() || (opts.maxBlobs !== undefined && result.copied >= opts.maxBlobs)) {
          result.interrupted = true;
          break;
        }
        const expected = await storedChecksum(source.store, id);
        if (!expected) throw new BackupError(`file ${id} has no ciphertext in the source store; run "sfs verify" on the source first`);
        await putVerified(target.store, id, () => source.store.getRange(id, 0, expected.size - 1), expected);
        progress.record(id, expected);
        result.copied++;
      }
      opts.onProgress?.(++n, ids.length);
    }
  } finally {
    progress.close();
  }
  if (result.interrupted) return result;
  // Every blob is there and checked: now all rows at once.
  result.rows = await target.db.transaction((trx) => loadDump(trx, opts.stagingDir, tables));
  await fsp.rm(opts.progressFile, { force: true });
  return result;
}
