/**
 * `sfs key rotate --reencrypt`: give every file a fresh DEK and entirely new ciphertext, so an
 * old master key plus an old copy of the database no longer opens the stored blobs.
 *
 * Per file: the verified plaintext stream of the vault (old DEK) is sealed under a new DEK into
 * `<id>.tmp` in the blob store (ciphertext only: no plaintext ever reaches the disk), fsynced
 * and read back verified; the old blob is kept as a hard link `<id>.prev`; then, in one
 * immediate transaction, the row is updated with a compare-and-swap on its old wrapped DEK and
 * the new blob is renamed over the old one before the commit; `<id>.prev` is removed after.
 * Each finished file id is appended (fsynced) to a progress file, so a rerun after an
 * interruption skips it; a rerun also repairs a file caught between the rename and the commit.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { CURRENT_WRAP_VERSION } from '../crypto/envelope.js';
import { FORMAT_VERSION, NONCE_PREFIX_LENGTH, SALT_LENGTH } from '../crypto/format.js';
import type { Keyring } from '../crypto/keyring.js';
import { ChunkSealer, decryptRange } from '../crypto/stream.js';
import type { Database } from '../db/database.js';
import type { FileRow } from '../db/files.js';
import type { VaultService } from '../services/vault.js';
import { syncDir, type DiskBlobStore } from '../storage/disk.js';

export interface ReencryptResult {
  reencrypted: number;
  /** Files deleted or changed by another writer meanwhile (compare-and-swap lost), or already done in this run. */
  skipped: number;
  /** Files left half-swapped by an earlier crash and repaired. */
  repaired: number;
  failed: { id: string; reason: string }[];
  interrupted: boolean;
}

export interface ReencryptOptions {
  /** Records finished ids of the current run; removed when a run completes. */
  progressFile: string;
  /** Stop (as interrupted) after this many files in this invocation: lets operators work in slices. */
  maxFiles?: number;
  shouldStop?: () => boolean;
  onProgress?: (done: number, total: number) => void;
}

/** Re-encrypts every file under a fresh DEK wrapped under the active key; resumable (see above). */
export async function reencrypt(db: Database, vault: VaultService, store: DiskBlobStore, keyring: Keyring, opts: ReencryptOptions): Promise<ReencryptResult> {
  const progress = openProgress(opts.progressFile);
  const result: ReencryptResult = { reencrypted: 0, skipped: 0, repaired: 0, failed: [], interrupted: false };
  // Files uploaded after the run started already have a fresh DEK and fresh ciphertext.
  const ids = (await db.kysely.selectFrom('files').select('id').where('created_at', '<=', progress.startedAt).orderBy('id').execute()).map((r) => r.id);
  let done = 0;
  let worked = 0;
  try {
    for (const id of ids) {
      if (opts.shouldStop?.() || (opts.maxFiles !== undefined && worked >= opts.maxFiles)) {
        result.interrupted = true;
        break;
      }
      try {
        if (await repair(vault, store, id)) result.repaired++;
        if (progress.done.has(id)) {
          result.skipped++;
        } else {
          worked++;
          const row = await vault.files.byId(id);
          if (row && (await reencryptOne(db, vault, store, keyring, row))) {
            result.reencrypted++;
            progress.record(id);
          } else result.skipped++;
        }
      } catch (err) {
        result.failed.push({ id, reason: (err as Error).message });
      }
      opts.onProgress?.(++done, ids.length);
    }
  } finally {
    progress.close();
  }
  if (!result.interrupted && result.failed.length === 0) fs.rmSync(opts.progressFile, { force: true });
  return result;
}

/** Returns true when the file was swapped; false when another writer changed or deleted it first. */
async function reencryptOne(db: Database, vault: VaultService, store: DiskBlobStore, keyring: Keyring, row: FileRow): Promise<boolean> {
  const finalPath = store.pathOf(row.id);
  const tmpPath = store.pathOf(row.id, '.tmp');
  const prevPath = store.pathOf(row.id, '.prev');
  await fsp.rm(tmpPath, { force: true });
  const dek = randomBytes(32);
  try {
    const fileId = Buffer.from(row.id, 'hex');
    const sealer = new ChunkSealer({ dek, fileId, salt: randomBytes(SALT_LENGTH), noncePrefix: randomBytes(NONCE_PREFIX_LENGTH), chunkSize: row.chunkSize });
    const hash = createHash('sha256');
    // The vault's verified read: every chunk tag under the old DEK, and the SHA-256 before the last chunk.
    const plaintext = await vault.open(row, { start: 0, end: row.size - 1 });
    const fh = await fsp.open(tmpPath, 'wx', 0o600);
    try {
      await writeAll(fh, [sealer.header]);
      for await (const piece of plaintext) {
        hash.update(piece);
        await writeAll(fh, sealer.update(piece));
      }
      await writeAll(fh, sealer.finish());
      await fh.sync();
    } catch (err) {
      sealer.destroy();
      throw err;
    } finally {
      await fh.close();
    }
    if (!timingSafeEqual(hash.digest(), row.sha256)) throw new Error('plaintext does not match the recorded SHA-256');
    // Read the new blob back under the new DEK before anything points at it.
    const check = decryptRange(fs.createReadStream(tmpPath), {
      dek,
      fileId,
      chunkSize: row.chunkSize,
      size: row.size,
      start: 0,
      end: row.size - 1,
      expectedSha256: row.sha256,
    });
    for await (const _ of check) void _;
    const next = { ...row, keyId: keyring.active.id, formatVersion: FORMAT_VERSION };
    const wrapped = vault.wrapFor(keyring.active, next, dek);
    await fsp.rm(prevPath, { force: true });
    try {
      // Keeps the old ciphertext reachable until the row surely points at the new one.
      await fsp.link(finalPath, prevPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return cleanup(false); // deleted meanwhile
      throw err;
    }
    let renamed = false;
    let swapped = false;
    try {
      swapped = await db.transaction(async (trx) => {
        const changed = await trx
          .updateTable('files')
          .set({ key_id: next.keyId, wrapped_dek: wrapped, format_version: next.formatVersion, wrap_version: CURRENT_WRAP_VERSION })
          .where('id', '=', row.id)
          .where('owner_id', '=', row.ownerId)
          .where('key_id', '=', row.keyId)
          .where('wrapped_dek', '=', row.wrappedDek)
          .executeTakeFirst();
        if (Number(changed.numUpdatedRows) !== 1) return false;
        // Inside the transaction, before the commit: a failed rename rolls the row back. A
        // synchronous local rename (this runs on the disk store only), never an awaited round trip.
        fs.renameSync(tmpPath, finalPath);
        renamed = true;
        return true;
      });
    } catch (err) {
      // The commit failed after the rename: put the old ciphertext back under the old row.
      if (renamed) fs.renameSync(prevPath, finalPath);
      throw err;
    }
    await syncDir(path.dirname(finalPath));
    return cleanup(swapped);
  } finally {
    dek.fill(0);
  }

  async function cleanup(swapped: boolean): Promise<boolean> {
    await fsp.rm(tmpPath, { force: true });
    await fsp.rm(prevPath, { force: true });
    return swapped;
  }
}

/**
 * Repairs a file an earlier run left with `<id>.prev` (killed between link and cleanup): if
 * the current blob opens under the current row, the old copy is dropped; otherwise the crash
 * hit between the rename and the commit, so the old blob goes back. True when it acted.
 */
async function repair(vault: VaultService, store: DiskBlobStore, id: string): Promise<boolean> {
  const prevPath = store.pathOf(id, '.prev');
  if (!fs.existsSync(prevPath)) return false;
  const row = await vault.files.byId(id);
  if (row && !(await opens(vault, row))) {
    fs.renameSync(store.pathOf(id), store.pathOf(id, '.tmp'));
    fs.renameSync(prevPath, store.pathOf(id));
    await syncDir(path.dirname(prevPath));
  }
  await fsp.rm(prevPath, { force: true });
  await fsp.rm(store.pathOf(id, '.tmp'), { force: true });
  return true;
}

async function opens(vault: VaultService, row: FileRow): Promise<boolean> {
  try {
    for await (const _ of await vault.open(row, { start: 0, end: row.size - 1 })) void _;
    return true;
  } catch {
    return false;
  }
}

interface Progress {
  startedAt: number;
  done: Set<string>;
  record(id: string): void;
  close(): void;
}

/** The progress file: a start time, then one finished file id per line (ids are not secret). */
function openProgress(file: string): Progress {
  let startedAt: number;
  const done = new Set<string>();
  if (fs.existsSync(file)) {
    const [head, ...lines] = fs.readFileSync(file, 'utf8').split('\n');
    const m = /^started (\d+)$/.exec(head ?? '');
    if (!m) throw new Error(`${file} is not a re-encryption progress file; remove it to start a new run`);
    startedAt = Number(m[1]);
    for (const l of lines) if (/^[0-9a-f]{32}$/.test(l)) done.add(l);
  } else {
    startedAt = Date.now();
    fs.writeFileSync(file, `started ${startedAt}\n`, { mode: 0o600, flag: 'wx' });
  }
  const fd = fs.openSync(file, 'a');
  return {
    startedAt,
    done,
    record(id) {
      fs.writeSync(fd, id + '\n');
      fs.fsyncSync(fd);
      done.add(id);
    },
    close: () => fs.closeSync(fd),
  };
}

async function writeAll(fh: fsp.FileHandle, pieces: Buffer[]): Promise<void> {
  for (const p of pieces) {
    let off = 0;
    while (off < p.length) off += (await fh.write(p, off, p.length - off)).bytesWritten;
  }
}
