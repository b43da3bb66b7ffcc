/**
 * Backup and restore. A backup is a consistent SQLite copy (better-sqlite3's online backup
 * API, safe while the server runs), the ciphertext of exactly the files in that copy, and a
 * manifest with counts and checksums. It never contains the master key: without the key a
 * backup is unreadable, and with the key next to it a backup protects nothing.
 */
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { Keyring } from '../crypto/keyring.js';
import type { Database as AppDatabase } from '../db/database.js';

export const MANIFEST = 'manifest.json';
const DB_NAME = 'sfs.db';

export interface BackupManifest {
  format: 'sfs-backup';
  version: 1;
  createdAt: string;
  masterKeyIncluded: false;
  database: { file: string; size: number; sha256: string };
  files: { count: number; bytes: number };
  blobs: { id: string; size: number; sha256: string }[];
  keys: { keyId: string; checkValue: string; files: number }[];
  auditHead: { seq: number; mac: string } | null;
  /** Rows dropped from the copy because their file was deleted while the backup ran. */
  droppedRows: string[];
}

export class BackupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackupError';
  }
}

const blobRel = (id: string) => path.join('uploads', id.slice(0, 2), `${id}.enc`);

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Copies a file via a temp name, fsyncs, renames; returns size and SHA-256 of what was written. */
async function copyWithHash(from: string, to: string): Promise<{ size: number; sha256: string }> {
  await fsp.mkdir(path.dirname(to), { recursive: true, mode: 0o700 });
  const tmp = `${to}.tmp`;
  const h = createHash('sha256');
  let size = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _e, cb) {
      h.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  await pipeline(fs.createReadStream(from, { highWaterMark: 1024 * 1024 }), tap, fs.createWriteStream(tmp, { mode: 0o600 }));
  const fh = await fsp.open(tmp, 'r');
  await fh.sync();
  await fh.close();
  await fsp.rename(tmp, to);
  return { size, sha256: h.digest('hex') };
}

/**
 * Writes a backup into `dir` (which must be empty or absent) while the server may be running.
 * `uploadsDir` is the live store; `onProgress` is called after each copied blob.
 */
export async function backup(db: AppDatabase, uploadsDir: string, dir: string, onProgress?: (done: number, total: number) => void): Promise<BackupManifest> {
  // sqlite-only: the online backup API of the raw handle.
  if (db.dialect !== 'sqlite' || !db.raw) throw new BackupError('backup supports the SQLite database only');
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) throw new BackupError(`${dir} is not empty; choose a new directory`);
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const dbCopy = path.join(dir, DB_NAME);
  // Online backup: a consistent snapshot even while the server writes. (This process holds
  // no transaction meanwhile: the CLI runs nothing else on its connection.)
  await db.raw.backup(dbCopy);
  const copy = new Database(dbCopy);
  try {
    copy.pragma('journal_mode = DELETE'); // one self-contained file
    const rows = copy.prepare('SELECT id, size FROM files ORDER BY id').all() as { id: string; size: number }[];
    const blobs: BackupManifest['blobs'] = [];
    const dropped: string[] = [];
    let bytes = 0;
    let done = 0;
    for (const r of rows) {
      const src = path.join(uploadsDir, r.id.slice(0, 2), `${r.id}.enc`);
      if (!fs.existsSync(src)) {
        // Deleted after the snapshot (blobs are never changed in place, only removed).
        dropped.push(r.id);
      } else {
        const { size, sha256 } = await copyWithHash(src, path.join(dir, blobRel(r.id)));
        blobs.push({ id: r.id, size, sha256 });
        bytes += r.size;
      }
      onProgress?.(++done, rows.length);
    }
    if (dropped.length) {
      const del = copy.prepare('DELETE FROM files WHERE id = ?');
      copy.transaction(() => dropped.forEach((id) => del.run(id)))();
    }
    const keys = (
      copy.prepare('SELECT k.key_id, k.check_value, (SELECT count(*) FROM files f WHERE f.key_id = k.key_id) AS n FROM master_keys k').all() as {
        key_id: string;
        check_value: Buffer;
        n: number;
      }[]
    ).map((k) => ({ keyId: k.key_id, checkValue: k.check_value.toString('hex'), files: k.n }));
    const head = copy.prepare('SELECT seq, mac FROM audit_events ORDER BY seq DESC LIMIT 1').get() as { seq: number; mac: Buffer } | undefined;
    copy.close();
    const manifest: BackupManifest = {
      format: 'sfs-backup',
      version: 1,
      createdAt: new Date().toISOString(),
      masterKeyIncluded: false,
      database: { file: DB_NAME, size: fs.statSync(dbCopy).size, sha256: await sha256File(dbCopy) },
      files: { count: blobs.length, bytes },
      blobs,
      keys,
      auditHead: head ? { seq: head.seq, mac: head.mac.toString('hex') } : null,
      droppedRows: dropped,
    };
    fs.writeFileSync(path.join(dir, MANIFEST), JSON.stringify(manifest, null, 2) + '\n', { mode: 0o600 });
    return manifest;
  } catch (err) {
    if (copy.open) copy.close();
    throw err;
  }
}

/** Reads a manifest and checks every checksum in it; throws BackupError on the first problem. */
export async function checkBackup(dir: string): Promise<BackupManifest> {
  let manifest: BackupManifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST), 'utf8')) as BackupManifest;
  } catch {
    throw new BackupError(`${path.join(dir, MANIFEST)} is missing or not valid JSON`);
  }
  if (manifest.format !== 'sfs-backup' || manifest.version !== 1) throw new BackupError('not an sfs backup (unknown manifest format)');
  const dbFile = path.join(dir, manifest.database.file);
  if (!fs.existsSync(dbFile) || (await sha256File(dbFile)) !== manifest.database.sha256) throw new BackupError('the database copy is missing or does not match its checksum');
  for (const b of manifest.blobs) {
    const f = path.join(dir, blobRel(b.id));
    if (!fs.existsSync(f) || fs.statSync(f).size !== b.size || (await sha256File(f)) !== b.sha256) {
      throw new BackupError(`ciphertext of file ${b.id} is missing or does not match its checksum`);
    }
  }
  return manifest;
}

/** Checks that every key the backup's files and secrets need is configured, with a matching check value. */
export function checkBackupKeys(dir: string, keyring: Keyring): void {
  const copy = new Database(path.join(dir, DB_NAME), { readonly: true });
  try {
    const rows = copy.prepare('SELECT key_id, check_value FROM master_keys').all() as { key_id: string; check_value: Buffer }[];
    const needed = copy
      .prepare('SELECT key_id FROM files UNION SELECT key_id FROM secrets')
      .all() as { key_id: string }[];
    for (const { key_id } of needed) {
      const key = keyring.get(key_id);
      if (!key) {
        throw new BackupError(`the backup needs master key ${key_id}, which is not configured (add it to MASTER_KEYS_PREVIOUS or the key file)`);
      }
      const row = rows.find((r) => r.key_id === key_id);
      if (!row || !Keyring.checkMatches(key, row.check_value)) throw new BackupError(`master key ${key_id} does not match the backup's key check value`);
    }
  } finally {
    copy.close();
  }
}

export interface RestoreResult {
  files: number;
  previousDatabase: string | null;
  previousUploads: string | null;
}

/**
 * Restores a backup over `dbFile` and `uploadsDir` (server stopped). Everything is checked
 * first (checksums, keys); only then is the current state moved aside (never deleted) and
 * the backup copied in.
 */
export async function restore(
  dir: string,
  target: { dbFile: string; uploadsDir: string; auditHeadFile: string },
  keyring: Keyring,
  onProgress?: (done: number, total: number) => void,
): Promise<RestoreResult> {
  const manifest = await checkBackup(dir);
  checkBackupKeys(dir, keyring);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  let previousDatabase: string | null = null;
  if (fs.existsSync(target.dbFile)) {
    previousDatabase = `${target.dbFile}.before-restore-${stamp}`;
    // A clean checkpoint first, so the moved-aside database is complete on its own.
    const live = new Database(target.dbFile);
    live.pragma('wal_checkpoint(TRUNCATE)');
    live.close();
    await fsp.rename(target.dbFile, previousDatabase);
    for (const ext of ['-wal', '-shm']) await fsp.rm(target.dbFile + ext, { force: true });
  }
  let previousUploads: string | null = null;
  if (fs.existsSync(target.uploadsDir)) {
    previousUploads = `${target.uploadsDir.replace(/\/+$/, '')}.before-restore-${stamp}`;
    await fsp.rename(target.uploadsDir, previousUploads);
  }
  await fsp.mkdir(target.uploadsDir, { recursive: true, mode: 0o700 });
  let done = 0;
  for (const b of manifest.blobs) {
    await copyWithHash(path.join(dir, blobRel(b.id)), path.join(target.uploadsDir, b.id.slice(0, 2), `${b.id}.enc`));
    onProgress?.(++done, manifest.blobs.length);
  }
  await fsp.mkdir(path.dirname(target.dbFile), { recursive: true, mode: 0o700 });
  await copyWithHash(path.join(dir, manifest.database.file), target.dbFile);
  await fsp.chmod(target.dbFile, 0o600);
  // The chain head outside the database must match the restored chain, not the old one.
  if (manifest.auditHead) fs.writeFileSync(target.auditHeadFile, JSON.stringify(manifest.auditHead) + '\n', { mode: 0o600 });
  else fs.rmSync(target.auditHeadFile, { force: true });
  return { files: manifest.blobs.length, previousDatabase, previousUploads };
}
