/**
 * Backup and restore, on either database (SQLite, PostgreSQL) and either blob store (disk, S3).
 *
 * A backup (format version 2) is a directory: `manifest.json` (counts, key ids and check values,
 * the audit head, and a SHA-256 per table dump and per blob), `tables/<table>.jsonl` (every row,
 * dialect-neutral: see dump.ts), and `uploads/<2 hex>/<id>.enc` (the ciphertext of exactly the
 * files in those rows, copied as stored: never decrypted). The rows come from one consistent
 * snapshot: SQLite's online backup API, or one REPEATABLE READ transaction on PostgreSQL; the
 * blobs are copied after that snapshot ends (no transaction is held across the store's round
 * trips), which is safe because a blob is never changed in place, only removed: a blob gone by
 * then belongs to a file deleted meanwhile, and that row is left out (`droppedRows`).
 *
 * It never contains the master key: without the key a backup is unreadable, and with the key
 * next to it a backup protects nothing. Version 1 backups (a SQLite file instead of the table
 * dumps) still restore onto SQLite + disk.
 */
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { Keyring } from '../crypto/keyring.js';
import type { Database as AppDatabase } from '../db/database.js';
import { BLOB_ID_PATTERN, blobIdOf, type BlobStore } from '../storage/blob-store.js';
import { loadDump, nonEmptyTables, postgresSnapshot, readDump, schemaVersionOf, sha256Of, sqliteFileSnapshot, writeDump, type Snapshot, type TableDump } from './dump.js';

export const MANIFEST = 'manifest.json';
const DB_NAME = 'sfs.db';
const SNAPSHOT_NAME = '.snapshot.db';

interface ManifestCommon {
  format: 'sfs-backup';
  createdAt: string;
  masterKeyIncluded: false;
  files: { count: number; bytes: number };
  blobs: { id: string; size: number; sha256: string }[];
  keys: { keyId: string; checkValue: string; files: number }[];
  auditHead: { seq: number; mac: string } | null;
  /** Files (ids) left out because they were deleted while the backup ran. */
  droppedRows: string[];
}

/** A version 1 backup: a SQLite file (restorable onto SQLite + disk only). */
export interface BackupManifestV1 extends ManifestCommon {
  version: 1;
  database: { file: string; size: number; sha256: string };
}

/** A version 2 backup: dialect-neutral table dumps. */
export interface BackupManifestV2 extends ManifestCommon {
  version: 2;
  source: { dialect: 'sqlite' | 'postgres'; schemaVersion: number };
  tables: TableDump[];
}

export type BackupManifest = BackupManifestV1 | BackupManifestV2;

export class BackupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackupError';
  }
}

const blobRel = (id: string) => path.join('uploads', id.slice(0, 2), `${id}.enc`);

const sha256File = sha256Of;

/** Counts bytes and hashes them as they pass. */
function hashing(): { tap: (c: Buffer) => void; result: () => { size: number; sha256: string } } {
  const h = createHash('sha256');
  let size = 0;
  return {
    tap(c) {
      h.update(c);
      size += c.length;
    },
    result: () => ({ size, sha256: h.digest('hex') }),
  };
}

/** Writes a stream to `to` via a temp name, fsyncs, renames; returns size and SHA-256 of what was written. */
async function streamToFile(from: Readable, to: string): Promise<{ size: number; sha256: string }> {
  await fsp.mkdir(path.dirname(to), { recursive: true, mode: 0o700 });
  const tmp = `${to}.tmp`;
  const h = hashing();
  const fh = await fsp.open(tmp, 'w', 0o600);
  try {
    for await (const chunk of from) {
      const b = chunk as Buffer;
      h.tap(b);
      let off = 0;
      while (off < b.length) off += (await fh.write(b, off, b.length - off)).bytesWritten;
    }
    await fh.sync();
  } catch (err) {
    await fh.close();
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await fsp.rename(tmp, to);
  return h.result();
}

/** Copies a local file (fsynced, via a temp name); returns size and SHA-256. */
async function copyWithHash(from: string, to: string): Promise<{ size: number; sha256: string }> {
  return streamToFile(fs.createReadStream(from, { highWaterMark: 1024 * 1024 }), to);
}

/**
 * Copies one blob out of a store into a local file; null when the blob does not exist (its
 * file was deleted after the snapshot). Ciphertext only: the bytes are copied as stored.
 */
export async function copyBlobToFile(store: BlobStore, id: string, to: string): Promise<{ size: number; sha256: string } | null> {
  const st = await store.stat(id);
  if (!st) return null;
  try {
    return await streamToFile(store.getRange(id, 0, st.size - 1), to);
  } catch (err) {
    if ((await store.stat(id)) === null) return null; // deleted mid-copy
    throw err;
  }
}

async function* asBatches(r: Readable): AsyncGenerator<Buffer[]> {
  for await (const c of r) yield [c as Buffer];
}

/** The SHA-256 and length of a blob as the store serves it back. */
export async function storedChecksum(store: BlobStore, id: string): Promise<{ size: number; sha256: string } | null> {
  const st = await store.stat(id);
  if (!st) return null;
  const h = hashing();
  for await (const c of store.getRange(id, 0, st.size - 1)) h.tap(c as Buffer);
  return h.result();
}

/**
 * Puts ciphertext into `store` under `id` and checks it: the bytes sent must have the expected
 * length and SHA-256, and so must the blob read back from the store. On a mismatch the blob is
 * removed and BackupError thrown.
 */
export async function putVerified(store: BlobStore, id: string, source: () => Readable, expected: { size: number; sha256: string }): Promise<void> {
  const h = hashing();
  const tapped = (async function* () {
    for await (const batch of asBatches(source())) {
      for (const b of batch) h.tap(b);
      yield batch;
    }
  })();
  await store.put(id, tapped);
  const sent = h.result();
  const back = sent.size === expected.size && sent.sha256 === expected.sha256 ? await storedChecksum(store, id) : sent;
  if (!back || back.size !== expected.size || back.sha256 !== expected.sha256) {
    await store.delete(id);
    throw new BackupError(`ciphertext of file ${id} did not arrive intact (length or SHA-256 differs); nothing is kept of it`);
  }
}

/** Opens the consistent snapshot a backup reads: an online-backup copy (SQLite) or a REPEATABLE READ transaction. */
async function openSnapshot(db: AppDatabase, dir: string): Promise<{ snap: Snapshot; cleanup: () => Promise<void> }> {
  if (db.dialect === 'sqlite') {
    const file = path.join(dir, SNAPSHOT_NAME);
    // Online backup: a consistent copy even while the server writes. (This process holds no
    // transaction meanwhile: the CLI runs nothing else on its connection.)
    await db.raw!.backup(file);
    const snap = sqliteFileSnapshot(file);
    return {
      snap,
      cleanup: async () => {
        await snap.close();
        for (const f of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`]) await fsp.rm(f, { force: true });
      },
    };
  }
  const snap = await postgresSnapshot(db);
  return { snap, cleanup: () => snap.close() };
}

/**
 * Writes a backup of `db` and `store` into `dir` (which must be empty or absent) while servers
 * may be running. `onProgress` is called after each copied blob.
 */
export async function backup(db: AppDatabase, store: BlobStore, dir: string, onProgress?: (done: number, total: number) => void): Promise<BackupManifestV2> {
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) throw new BackupError(`${dir} is not empty; choose a new directory`);
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  // Keyed by blob id (the file id, plus a generation once re-encrypted on an object store).
  const files = new Map<string, { id: string; size: number; keyId: string }>();
  const keyRows: { keyId: string; checkValue: string }[] = [];
  let head: { seq: number; mac: string } | null = null;
  const { snap, cleanup } = await openSnapshot(db, dir);
  let tables: TableDump[];
  let schemaVersion: number;
  try {
    schemaVersion = snap.schemaVersion;
    tables = await writeDump(snap, dir, (table, r) => {
      if (table === 'files') files.set(blobIdOf({ id: r.id as string, blobGen: Number(r.blob_gen ?? 0) }), { id: r.id as string, size: Number(r.size), keyId: r.key_id as string });
      else if (table === 'master_keys') keyRows.push({ keyId: r.key_id as string, checkValue: (r.check_value as Buffer).toString('hex') });
      else if (table === 'audit_events' && (!head || Number(r.seq) > head.seq)) head = { seq: Number(r.seq), mac: (r.mac as Buffer).toString('hex') };
    });
  } finally {
    // The snapshot ends here, before any round trip to the blob store.
    await cleanup();
  }
  const blobs: BackupManifest['blobs'] = [];
  const dropped: string[] = [];
  let bytes = 0;
  let done = 0;
  const ids = [...files.keys()].sort();
  for (const id of ids) {
    const copied = await copyBlobToFile(store, id, path.join(dir, blobRel(id)));
    if (!copied) dropped.push(files.get(id)!.id);
    else {
      blobs.push({ id, ...copied });
      bytes += files.get(id)!.size;
    }
    onProgress?.(++done, ids.length);
  }
  const perKey = new Map<string, number>();
  for (const f of files.values()) if (!dropped.includes(f.id)) perKey.set(f.keyId, (perKey.get(f.keyId) ?? 0) + 1);
  const manifest: BackupManifestV2 = {
    format: 'sfs-backup',
    version: 2,
    createdAt: new Date().toISOString(),
    masterKeyIncluded: false,
    source: { dialect: db.dialect, schemaVersion },
    tables,
    files: { count: blobs.length, bytes },
    blobs,
    keys: keyRows.map((k) => ({ ...k, files: perKey.get(k.keyId) ?? 0 })),
    auditHead: head,
    droppedRows: dropped,
  };
  const tmp = path.join(dir, `${MANIFEST}.tmp`);
  fs.writeFileSync(tmp, JSON.stringify(manifest, null, 2) + '\n', { mode: 0o600 });
  fs.renameSync(tmp, path.join(dir, MANIFEST));
  return manifest;
}

/** Reads a manifest and checks every checksum in it; throws BackupError on the first problem. */
export async function checkBackup(dir: string): Promise<BackupManifest> {
  let manifest: BackupManifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST), 'utf8')) as BackupManifest;
  } catch {
    throw new BackupError(`${path.join(dir, MANIFEST)} is missing or not valid JSON`);
  }
  if (manifest.format !== 'sfs-backup' || (manifest.version !== 1 && manifest.version !== 2)) throw new BackupError('not an sfs backup (unknown manifest format)');
  if (manifest.version === 1) {
    const dbFile = path.join(dir, manifest.database.file);
    if (!fs.existsSync(dbFile) || (await sha256File(dbFile)) !== manifest.database.sha256) throw new BackupError('the database copy is missing or does not match its checksum');
  } else {
    for (const t of manifest.tables) {
      const f = path.join(dir, t.file);
      if (!/^tables\/[a-z_][a-z0-9_]*\.jsonl$/.test(t.file) || !fs.existsSync(f) || (await sha256File(f)) !== t.sha256) {
        throw new BackupError(`the dump of table ${t.name} is missing or does not match its checksum`);
      }
    }
  }
  for (const b of manifest.blobs) {
    if (!BLOB_ID_PATTERN.test(b.id)) throw new BackupError(`the manifest names a file id that is not one: ${JSON.stringify(b.id).slice(0, 40)}`);
    const f = path.join(dir, blobRel(b.id));
    if (!fs.existsSync(f) || fs.statSync(f).size !== b.size || (await sha256File(f)) !== b.sha256) {
      throw new BackupError(`ciphertext of file ${b.id} is missing or does not match its checksum`);
    }
  }
  return manifest;
}

/** The key rows and the key ids the backup's files and secrets need. */
async function backupKeyNeeds(dir: string, manifest: BackupManifest): Promise<{ rows: { key_id: string; check_value: Buffer }[]; needed: Set<string> }> {
  if (manifest.version === 1) {
    const copy = new Database(path.join(dir, DB_NAME), { readonly: true });
    try {
      const rows = copy.prepare('SELECT key_id, check_value FROM master_keys').all() as { key_id: string; check_value: Buffer }[];
      const needed = copy.prepare('SELECT key_id FROM files UNION SELECT key_id FROM secrets').all() as { key_id: string }[];
      return { rows, needed: new Set(needed.map((r) => r.key_id)) };
    } finally {
      copy.close();
    }
  }
  const rows: { key_id: string; check_value: Buffer }[] = [];
  const needed = new Set<string>();
  for (const t of manifest.tables) {
    if (t.name !== 'master_keys' && t.name !== 'files' && t.name !== 'secrets') continue;
    for await (const r of readDump(dir, t)) {
      if (t.name === 'master_keys') rows.push({ key_id: r.key_id as string, check_value: r.check_value as Buffer });
      else needed.add(r.key_id as string);
    }
  }
  return { rows, needed };
}

/** Checks that every key the backup's files and secrets need is configured, with a matching check value. */
export async function checkBackupKeys(dir: string, manifest: BackupManifest, keyring: Keyring): Promise<void> {
  const { rows, needed } = await backupKeyNeeds(dir, manifest);
  for (const key_id of needed) {
    const key = keyring.get(key_id);
    if (!key) {
      throw new BackupError(`the backup needs master key ${key_id}, which is not configured (add it to MASTER_KEYS_PREVIOUS or the key file)`);
    }
    const row = rows.find((r) => r.key_id === key_id);
    if (!row || !Keyring.checkMatches(key, row.check_value)) throw new BackupError(`master key ${key_id} does not match the backup's key check value`);
  }
}

/** Checks a backup completely (checksums, then keys) before anything is changed. */
export async function checkBackupFor(dir: string, keyring: Keyring): Promise<BackupManifest> {
  const manifest = await checkBackup(dir);
  await checkBackupKeys(dir, manifest, keyring);
  return manifest;
}

export interface MovedAside {
  previousDatabase: string | null;
  previousUploads: string | null;
}

/**
 * Moves the single-node state (SQLite file, uploads directory) aside, never deleting it, so the
 * restore writes into an empty database and store. The caller holds the data-dir lock.
 */
export async function moveAside(target: { dbFile?: string; uploadsDir?: string }): Promise<MovedAside> {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  let previousDatabase: string | null = null;
  if (target.dbFile && fs.existsSync(target.dbFile)) {
    previousDatabase = `${target.dbFile}.before-restore-${stamp}`;
    // A clean checkpoint first, so the moved-aside database is complete on its own.
    const live = new Database(target.dbFile);
    live.pragma('wal_checkpoint(TRUNCATE)');
    live.close();
    await fsp.rename(target.dbFile, previousDatabase);
    for (const ext of ['-wal', '-shm']) await fsp.rm(target.dbFile + ext, { force: true });
  }
  let previousUploads: string | null = null;
  if (target.uploadsDir) {
    if (fs.existsSync(target.uploadsDir)) {
      previousUploads = `${target.uploadsDir.replace(/\/+$/, '')}.before-restore-${stamp}`;
      await fsp.rename(target.uploadsDir, previousUploads);
    }
    await fsp.mkdir(target.uploadsDir, { recursive: true, mode: 0o700 });
  }
  return { previousDatabase, previousUploads };
}

/**
 * Restores a version 1 backup (a SQLite file) onto `dbFile` and `uploadsDir`, already moved
 * aside (see moveAside); `manifest` was checked by checkBackupFor.
 */
export async function restoreV1(dir: string, manifest: BackupManifestV1, target: { dbFile: string; uploadsDir: string }, onProgress?: (done: number, total: number) => void): Promise<number> {
  let done = 0;
  for (const b of manifest.blobs) {
    await copyWithHash(path.join(dir, blobRel(b.id)), path.join(target.uploadsDir, b.id.slice(0, 2), `${b.id}.enc`));
    onProgress?.(++done, manifest.blobs.length);
  }
  await fsp.mkdir(path.dirname(target.dbFile), { recursive: true, mode: 0o700 });
  await copyWithHash(path.join(dir, manifest.database.file), target.dbFile);
  await fsp.chmod(target.dbFile, 0o600);
  return manifest.blobs.length;
}

/** Why a target database is not empty (rows in any of `tables`), or null. */
export async function databaseNotEmpty(db: AppDatabase, tables: string[]): Promise<string | null> {
  const busy = await nonEmptyTables(db, tables);
  return busy.length ? `the target database is not empty (rows in ${busy.join(', ')}); restore into an empty database` : null;
}

/**
 * Why a target store is not empty, or null. It may hold blobs named in `allowedBlobs` (left by
 * an interrupted earlier run, which rewrites them), and nothing else.
 */
export async function storeNotEmpty(store: BlobStore, allowedBlobs: Set<string>): Promise<string | null> {
  for await (const e of store.entries()) {
    if (e.kind === 'temp') continue; // an unfinished write: the sweep's business
    if (e.kind === 'blob' && e.id && allowedBlobs.has(e.id)) continue;
    return `the target blob store is not empty (it holds ${e.path}); restore into an empty bucket or directory`;
  }
  return null;
}

/** Why a target (database and store) is not empty, or null: a restore or migrate never merges into live data. */
export async function targetNotEmpty(db: AppDatabase, store: BlobStore, tables: string[], allowedBlobs: Set<string>): Promise<string | null> {
  return (await databaseNotEmpty(db, tables)) ?? (await storeNotEmpty(store, allowedBlobs));
}

/**
 * Restores a version 2 backup into an empty database and blob store (any dialect, any store):
 * refuses a non-empty target, puts every blob (length and SHA-256 checked on the way in and
 * read back), then inserts every row in one transaction, so a server on the target sees all of
 * the backup or nothing. Returns the number of files.
 */
export async function restoreV2(
  dir: string,
  manifest: BackupManifestV2,
  target: { db: AppDatabase; store: BlobStore },
  onProgress?: (done: number, total: number) => void,
): Promise<number> {
  const version = await schemaVersionOf(target.db);
  if (manifest.source.schemaVersion > version) {
    throw new BackupError(`the backup is of schema version ${manifest.source.schemaVersion}, newer than this server's ${version}; upgrade the server first`);
  }
  const why = await targetNotEmpty(target.db, target.store, manifest.tables.map((t) => t.name), new Set(manifest.blobs.map((b) => b.id)));
  if (why) throw new BackupError(why);
  let done = 0;
  for (const b of manifest.blobs) {
    await putVerified(target.store, b.id, () => fs.createReadStream(path.join(dir, blobRel(b.id)), { highWaterMark: 1024 * 1024 }), b);
    onProgress?.(++done, manifest.blobs.length);
  }
  await target.db.transaction((trx) => loadDump(trx, dir, manifest.tables, manifest.droppedRows));
  return manifest.blobs.length;
}
