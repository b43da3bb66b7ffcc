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
import { ChunkSealer, decryptRange, type DecryptParams } from '../crypto/stream.js';
import type { Database, Trx } from '../db/database.js';
import type { FileRow } from '../db/files.js';
import type { VaultService } from '../services/vault.js';
import { blobIdOf, type BlobStore } from '../storage/blob-store.js';
import { DiskBlobStore } from '../storage/disk.js';
import { syncDir, writeAll } from '../storage/fs-io.js';

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

/** Re-encrypts every file under a fresh DEK wrapped under the active key, on either store; resumable (see above). */
export async function reencrypt(db: Database, vault: VaultService, store: BlobStore, keyring: Keyring, opts: ReencryptOptions): Promise<ReencryptResult> {
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
        if (store instanceof DiskBlobStore && (await repair(vault, store, id))) result.repaired++;
        if (progress.done.has(id)) {
          result.skipped++;
        } else {
          worked++;
          const row = await vault.files.byId(id);
          const swapped = row && (store instanceof DiskBlobStore ? await reencryptOne(db, vault, store, keyring, row) : await reencryptObject(db, vault, store, keyring, row));
          if (swapped) {
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
  // The row's current object (a generation suffix if it came from an object store).
  const finalPath = store.pathOf(blobIdOf(row));
  const tmpPath = store.pathOf(blobIdOf(row), '.tmp');
  const prevPath = store.pathOf(blobIdOf(row), '.prev');
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
    await readBackWhole(fs.createReadStream(tmpPath), dek, fileId, row);
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
        if (!(await swapRow(trx, row, next.keyId, wrapped, row.blobGen ?? 0))) return false;
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
  const row = await vault.files.byId(id);
  const bid = row ? blobIdOf(row) : id;
  const prevPath = store.pathOf(bid, '.prev');
  if (!fs.existsSync(prevPath)) return false;
  if (row && !(await opens(vault, row))) {
    fs.renameSync(store.pathOf(bid), store.pathOf(bid, '.tmp'));
    fs.renameSync(prevPath, store.pathOf(bid));
    await syncDir(path.dirname(prevPath));
  }
  await fsp.rm(prevPath, { force: true });
  await fsp.rm(store.pathOf(bid, '.tmp'), { force: true });
  return true;
}

/**
 * Re-encrypts one file on a store without rename (S3): the new ciphertext is written as the
 * next generation's object (`<id>.g<n+1>`, visible only once complete), read back and verified
 * under the new DEK, and only then is the row moved to it and its new wrapped DEK, in one
 * short compare-and-swap transaction (no store round trip inside it). The old object is
 * deleted after the commit; a lost swap deletes the new one instead. A crash in between leaves
 * one unreferenced object, which gc and the start-up sweep remove (it is no row's blob id).
 */
async function reencryptObject(db: Database, vault: VaultService, store: BlobStore, keyring: Keyring, row: FileRow): Promise<boolean> {
  const gen = (row.blobGen ?? 0) + 1;
  const newId = blobIdOf({ id: row.id, blobGen: gen });
  const dek = randomBytes(32);
  let written = false;
  try {
    const fileId = Buffer.from(row.id, 'hex');
    const sealer = new ChunkSealer({ dek, fileId, salt: randomBytes(SALT_LENGTH), noncePrefix: randomBytes(NONCE_PREFIX_LENGTH), chunkSize: row.chunkSize });
    const hash = createHash('sha256');
    // The vault's verified read: every chunk tag under the old DEK, and the SHA-256 before the last chunk.
    const plaintext = await vault.open(row, { start: 0, end: row.size - 1 });
    async function* sealed(): AsyncGenerator<Buffer[]> {
      yield [sealer.header];
      for await (const piece of plaintext) {
        hash.update(piece);
        yield sealer.update(piece);
      }
      yield sealer.finish();
    }
    try {
      await store.put(newId, sealed());
    } catch (err) {
      sealer.destroy();
      throw err;
    }
    written = true;
    if (!timingSafeEqual(hash.digest(), row.sha256)) throw new Error('plaintext does not match the recorded SHA-256');
    const st = await store.stat(newId);
    if (!st) throw new Error('the new object is not in the store after its upload');
    await readBackWhole(store.getRange(newId, 0, st.size - 1), dek, fileId, row);
    const next = { ...row, keyId: keyring.active.id, formatVersion: FORMAT_VERSION, blobGen: gen };
    const wrapped = vault.wrapFor(keyring.active, next, dek);
    const swapped = await db.transaction(async (trx) => {
      return swapRow(trx, row, next.keyId, wrapped, gen);
    });
    written = false;
    // After the commit: the row names the new object; the old one is garbage (or, when the
    // swap was lost, the new one is).
    await store.delete(swapped ? blobIdOf(row) : newId);
    return swapped;
  } catch (err) {
    // Remove the new object unless the row points at it after all (a commit whose reply was lost).
    if (written) {
      let keep: boolean;
      try {
        keep = ((await vault.files.byId(row.id))?.blobGen ?? 0) === gen;
      } catch {
        keep = true; // unknown: leaving it is safe (gc removes it once no row names it)
      }
      if (!keep) await store.delete(newId).catch(() => {});
    }
    throw err;
  } finally {
    dek.fill(0);
  }
}

/**
 * The compare-and-swap of a re-encryption: points the row at the new wrapped key (and blob
 * generation) only if nobody changed it since it was read; true when it did.
 */
async function swapRow(trx: Trx, row: FileRow, keyId: string, wrapped: Buffer, gen: number): Promise<boolean> {
  const changed = await trx
    .updateTable('files')
    .set({ key_id: keyId, wrapped_dek: wrapped, format_version: FORMAT_VERSION, wrap_version: CURRENT_WRAP_VERSION, blob_gen: gen })
    .where('id', '=', row.id)
    .where('owner_id', '=', row.ownerId)
    .where('key_id', '=', row.keyId)
    .where('wrapped_dek', '=', row.wrappedDek)
    .where('blob_gen', '=', row.blobGen ?? 0)
    .executeTakeFirst();
  return Number(changed.numUpdatedRows) === 1;
}

/** Decrypts a whole new ciphertext under its DEK to the end (every tag and the SHA-256), or throws. */
async function readBackWhole(ciphertext: AsyncIterable<Buffer>, dek: Buffer, fileId: DecryptParams['fileId'], row: FileRow): Promise<void> {
  const check = decryptRange(ciphertext, {
    dek,
    fileId,
    chunkSize: row.chunkSize,
    size: row.size,
    start: 0,
    end: row.size - 1,
    expectedSha256: row.sha256,
  });
  for await (const _ of check) void _;
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
