/**
 * The data path. Upload: plaintext stream → SHA-256 + size limit → chunked AES-256-GCM
 * under a fresh DEK → temp blob → fsync → rename; the row (with the DEK wrapped under the
 * active master key) is inserted only afterwards. Download: unwrap → verify each chunk →
 * release → (full reads) verify SHA-256 before the last chunk is released.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { sql } from '../db/kysely.js';
import type { Database, Trx } from '../db/database.js';
import { FilesRepo, bindingOf, type FileRow, type PageCursor } from '../db/files.js';
import { MasterKeysRepo } from '../db/master-keys.js';
import { CURRENT_WRAP_VERSION, unwrapDek, wrapDek } from '../crypto/envelope.js';
import {
  DEFAULT_CHUNK_SIZE,
  FORMAT_VERSION,
  HEADER_LENGTH,
  IntegrityError,
  NONCE_PREFIX_LENGTH,
  SALT_LENGTH,
  ciphertextSize,
} from '../crypto/format.js';
import { Keyring, type MasterKey } from '../crypto/keyring.js';
import { ChunkSealer, ciphertextSpan, decryptRange } from '../crypto/stream.js';
import { blobIdOf, type BlobStore } from '../storage/blob-store.js';
import { AppError } from '../errors.js';
import { newId } from './ids.js';
import { QuotaService, type QuotaLease } from './quota.js';

/** Blobs up to this size are read whole in one go. */
const SMALL_BLOB = 256 * 1024;

export interface VaultDeps {
  db: Database;
  store: BlobStore;
  keyring: Keyring;
  /** Per-user quota in bytes (a user's own setting wins); null for unlimited. */
  defaultQuota?: number | null;
  chunkSize?: number;
  /** How long a quota lease counts without renewal (ms). */
  quotaLeaseMs?: number;
  now?: () => number;
}

/** An encrypted blob that is stored but has no row yet. Holds the DEK until commit or discard. */
export interface StagedFile {
  id: string;
  name: string;
  mimeType: string;
  size: number;
  sha256: Buffer;
  /** Unsigned CRC-32 of the plaintext (zip entries of bundles need it before streaming). */
  crc32: number;
  chunkSize: number;
  dek: Buffer;
}

export interface IngestOptions {
  name: string;
  mimeType: string;
  /** Plaintext byte limit, enforced while streaming. */
  maxBytes: number;
  /** Client-supplied SHA-256 (32 bytes); a mismatch stores nothing. */
  expectedSha256?: Buffer;
  /** The uploader's quota hold; grows with every piece and throws to stop the upload. */
  lease?: QuotaLease;
}

/** Where files of an upload request came from (services/requests.ts). */
export interface FileOrigin {
  requestId: string;
  uploaderName: string | null;
  uploaderEmail: string | null;
}

/** What a commit adds to the plain case: the files' origin, and a step inside the inserting transaction. */
export interface CommitExtra {
  origin?: FileOrigin;
  /** The files' expiry (ms; services/lifecycle.ts RetentionPolicy); null or absent: none. */
  expiresAt?: number | null;
  /** Runs in the transaction that inserts the rows, after them; throwing rolls everything back (and discards the blobs). */
  within?: (trx: Trx, rows: FileRow[]) => Promise<void>;
}

/** The plaintext range to serve; end is inclusive (an empty file is 0..-1). */
export interface ByteRange {
  start: number;
  end: number;
}

export class VaultService {
  readonly files: FilesRepo;
  readonly quota: QuotaService;
  private readonly keys: MasterKeysRepo;
  private readonly chunkSize: number;
  private readonly now: () => number;

  constructor(private readonly deps: VaultDeps) {
    this.files = new FilesRepo(deps.db.kysely);
    this.keys = new MasterKeysRepo(deps.db.kysely);
    this.chunkSize = deps.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.now = deps.now ?? Date.now;
    // In-flight bytes live in the shared database (quota_leases), never in this process.
    this.quota = new QuotaService({ db: deps.db, defaultQuota: deps.defaultQuota, leaseMs: deps.quotaLeaseMs, now: deps.now });
  }

  /**
   * Encrypts a plaintext stream into a new blob. Nothing is left on disk if the stream
   * fails, exceeds `maxBytes`, or does not match `expectedSha256`.
   */
  async ingest(input: AsyncIterable<Buffer>, opts: IngestOptions): Promise<StagedFile> {
    const id = newId();
    const dek = randomBytes(32);
    const sealer = new ChunkSealer({
      dek,
      fileId: Buffer.from(id, 'hex'),
      salt: randomBytes(SALT_LENGTH),
      noncePrefix: randomBytes(NONCE_PREFIX_LENGTH),
      chunkSize: this.chunkSize,
    });
    const hash = createHash('sha256');
    let crc = 0;
    let size = 0;
    async function* ciphertext(): AsyncGenerator<Buffer[]> {
      yield [sealer.header];
      // Iterate by hand: leaving a for-await early would destroy the input, and with it the
      // socket, before the caller could answer (e.g. 413 with Connection: close).
      const it = input[Symbol.asyncIterator]();
      for (;;) {
        const next = await it.next();
        if (next.done) break;
        const data = next.value;
        size += data.length;
        if (size > opts.maxBytes) {
          // Stop at once: the caller answers 413 and closes the connection unread.
          throw new AppError('file_too_large', `file exceeds the limit of ${opts.maxBytes} bytes`, {}, true);
        }
        await opts.lease?.grow(data.length);
        hash.update(data);
        crc = crc32(data, crc);
        yield sealer.update(data);
      }
      const digest = hash.digest();
      if (opts.expectedSha256 && !timingSafeEqual(digest, opts.expectedSha256)) {
        throw new AppError('checksum_mismatch', 'the SHA-256 of the received bytes does not match the one supplied');
      }
      sha256 = digest;
      yield sealer.finish();
    }
    let sha256: Buffer | undefined;
    try {
      const { bytes } = await this.deps.store.put(id, ciphertext());
      if (bytes !== ciphertextSize(size, this.chunkSize)) throw new Error('blob store wrote an unexpected length');
      return { id, name: opts.name, mimeType: opts.mimeType, size, sha256: sha256!, crc32: crc, chunkSize: this.chunkSize, dek };
    } catch (err) {
      sealer.destroy();
      dek.fill(0);
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC' || (err as NodeJS.ErrnoException).code === 'EDQUOT') {
        throw new AppError('insufficient_storage', 'the server has no space left for this upload');
      }
      throw err;
    }
  }

  /**
   * Wraps each staged DEK under the active key and inserts all rows in one transaction.
   * On failure the blobs are removed, so a failed request leaves nothing behind.
   */
  async commit(ownerId: string, staged: StagedFile[], lease?: QuotaLease, extra: CommitExtra = {}): Promise<FileRow[]> {
    const key = this.deps.keyring.active;
    const now = this.now();
    try {
      const rows: FileRow[] = staged.map((s, i) => ({
        id: s.id,
        ownerId,
        name: s.name,
        size: s.size,
        mimeType: s.mimeType,
        sha256: s.sha256,
        keyId: key.id,
        // The owner is bound too (wrapFor): a file moved to another user by SQL no longer unwraps.
        wrappedDek: this.wrapFor(key, { id: s.id, ownerId, size: s.size, sha256: s.sha256, formatVersion: FORMAT_VERSION, chunkSize: s.chunkSize }, s.dek),
        wrapVersion: CURRENT_WRAP_VERSION,
        formatVersion: FORMAT_VERSION,
        chunkSize: s.chunkSize,
        crc32: s.crc32,
        // Files of one request keep their order when listed newest first.
        createdAt: now + i,
        expiresAt: extra.expiresAt ?? null,
        requestId: extra.origin?.requestId ?? null,
        uploaderName: extra.origin?.uploaderName ?? null,
        uploaderEmail: extra.origin?.uploaderEmail ?? null,
      }));
      // One transaction: the rows go in and the lease goes away together, so the bytes count
      // once (as rows) for every instance's next check; the lease re-checks the quota first.
      await this.deps.db.transaction(async (trx) => {
        await new MasterKeysRepo(trx).insertIfMissing(key.id, key.checkValue, now);
        const files = new FilesRepo(trx);
        for (const r of rows) await files.insert(r);
        await lease?.commitIn(trx);
        // E.g. an upload request's counters and lease: the same transaction as the rows.
        await extra.within?.(trx, rows);
      });
      lease?.committed();
      return rows;
    } catch (err) {
      await this.discard(staged);
      throw err;
    } finally {
      for (const s of staged) s.dek.fill(0);
    }
  }

  /**
   * Wraps a file's DEK under `key`, bound to the row it will be stored in. The one wrap for
   * every writer of files.wrapped_dek (uploads and `sfs key rotate --reencrypt`), so a change
   * to the binding reaches all of them.
   */
  wrapFor(key: MasterKey, file: Pick<FileRow, 'id' | 'ownerId' | 'size' | 'sha256' | 'formatVersion' | 'chunkSize'>, dek: Buffer): Buffer {
    // Always the current wrap version: the owner is bound, so a file moved by SQL no longer unwraps.
    return wrapDek(
      key,
      dek,
      {
        wrapVersion: CURRENT_WRAP_VERSION,
        fileId: file.id,
        ownerId: file.ownerId,
        size: file.size,
        sha256: file.sha256,
        formatVersion: file.formatVersion,
        chunkSize: file.chunkSize,
      },
      randomBytes(12),
    );
  }

  /** Removes staged blobs that will not be committed and wipes their DEKs. */
  async discard(staged: StagedFile[]): Promise<void> {
    for (const s of staged) {
      s.dek.fill(0);
      await this.deps.store.delete(s.id).catch(() => {});
    }
  }

  /** The owner's file, or not_found (also for another user's file: no existence oracle). */
  async get(ownerId: string, id: string): Promise<FileRow> {
    const row = /^[0-9a-f]{32}$/.test(id) ? await this.files.byIdForOwner(id, ownerId) : undefined;
    if (!row) throw new AppError('not_found', 'no such file');
    return row;
  }

  /** One page of the owner's files, newest first; only those that came through `requestId` when given. */
  async list(ownerId: string, limit: number, cursor: PageCursor | null, requestId?: string): Promise<{ files: FileRow[]; next: PageCursor | null }> {
    const rows = await this.files.listForOwner(ownerId, limit + 1, cursor, requestId);
    const files = rows.slice(0, limit);
    const last = files.at(-1);
    return { files, next: rows.length > limit && last ? { createdAt: last.createdAt, id: last.id } : null };
  }

  /**
   * Crypto-shreds the row (wrapped DEK gone in the same transaction), then removes the blob.
   * A file under a legal hold is refused with legal_hold (checked in the shred's statement).
   */
  async delete(ownerId: string, id: string): Promise<FileRow> {
    const row = await this.get(ownerId, id);
    if (!(await this.files.shred(id, ownerId))) {
      if (await this.files.byIdForOwner(id, ownerId)) throw new AppError('legal_hold', 'this file is under a legal hold and cannot be deleted; an administrator must release the hold first');
      throw new AppError('not_found', 'no such file');
    }
    if (this.deps.db.dialect === 'sqlite') {
      try {
        // sqlite-only: push the freed pages out of the WAL so the old wrapped key does not linger there.
        await sql`PRAGMA wal_checkpoint(TRUNCATE)`.execute(this.deps.db.kysely);
      } catch {
        /* a busy checkpoint is retried by SQLite's own auto-checkpoint later */
      }
    }
    await this.deps.store.delete(blobIdOf(row));
    return row;
  }

  /**
   * The master key a row is wrapped under. A key this process lacks is not corruption (e.g.
   * "sfs key rotate" ran with a key the server was not given): the key file is tried again,
   * else AppError key_unavailable (503), never integrity_error.
   */
  async keyFor(row: Pick<FileRow, 'keyId'>): Promise<MasterKey> {
    const key = await this.deps.keyring.resolve(row.keyId);
    if (!key) {
      throw new AppError(
        'key_unavailable',
        'this file is wrapped under a master key the server does not hold; an operator must configure that key (see key rotation)',
        { 'Retry-After': '60' },
      );
    }
    return key;
  }

  /**
   * Gives a file to another user (admin transfers): unwraps the DEK under the binding to the
   * old owner, rewraps it under the active key bound to the new owner, and swaps owner,
   * wrapped DEK, key id and wrap version in one compare-and-swap statement. False when the
   * file is not `fromUserId`'s (any more) or another writer changed the row first. Throws
   * IntegrityError when the stored wrap does not open (the row was altered).
   */
  async transferOwnership(fileId: string, fromUserId: string, toUserId: string): Promise<boolean> {
    const row = /^[0-9a-f]{32}$/.test(fileId) ? await this.files.byIdForOwner(fileId, fromUserId) : undefined;
    if (!row) return false;
    const old = await this.keyFor(row);
    const dek = unwrapDek(old, row.wrappedDek, bindingOf(row));
    const active = this.deps.keyring.active;
    let wrapped: Buffer;
    try {
      wrapped = wrapDek(active, dek, { ...bindingOf(row), wrapVersion: CURRENT_WRAP_VERSION, ownerId: toUserId }, randomBytes(12));
    } finally {
      dek.fill(0);
    }
    const moved = await this.deps.db.transaction(async (trx) => {
      await new MasterKeysRepo(trx).insertIfMissing(active.id, active.checkValue, this.now());
      const r = await trx
        .updateTable('files')
        .set({ owner_id: toUserId, wrapped_dek: wrapped, key_id: active.id, wrap_version: CURRENT_WRAP_VERSION })
        .where('id', '=', row.id)
        .where('owner_id', '=', fromUserId)
        .where('wrapped_dek', '=', row.wrappedDek)
        .executeTakeFirst();
      return Number(r.numUpdatedRows) === 1;
    });
    // Usage is read from the database, so the moved bytes count for the receiver at once; the
    // receiver may end up over their quota (an admin's decision, audited by the caller).
    return moved;
  }

  /**
   * Opens a verified plaintext stream of `range`. The first chunk is decrypted and verified
   * before this resolves, so header, key or first-chunk damage surfaces as an error the
   * caller can still answer cleanly; later damage makes the iterator throw mid-stream.
   */
  async open(row: FileRow, range: ByteRange): Promise<AsyncGenerator<Buffer>> {
    try {
      return await this.openRow(row, range);
    } catch (err) {
      // `sfs key rotate --reencrypt` swaps a file's blob and row while this server runs; a
      // request that read the row just before the swap meets the new blob. That is not damage:
      // if the row changed meanwhile (same owner), open it again once with the current row.
      if (!(err instanceof IntegrityError)) throw err;
      const fresh = await this.files.byId(row.id);
      if (!fresh || fresh.ownerId !== row.ownerId || fresh.wrappedDek.equals(row.wrappedDek)) throw err;
      return this.openRow(fresh, range);
    }
  }

  private async openRow(row: FileRow, range: ByteRange): Promise<AsyncGenerator<Buffer>> {
    // A key this process lacks is not corruption (e.g. "sfs key rotate" ran with a key the server
    // was not given): try the key file again, else say so truthfully, never integrity_error.
    const key = await this.keyFor(row);
    const dek = unwrapDek(key, row.wrappedDek, bindingOf(row));
    try {
      const expected = ciphertextSize(row.size, row.chunkSize);
      const span = ciphertextSpan(row.size, row.chunkSize, range.start, range.end);
      let header: Buffer | undefined;
      let source: AsyncIterable<Buffer>;
      if (expected <= SMALL_BLOB) {
        // Small files (most of them): one open + read + close instead of stat and streams.
        const all = await this.deps.store.readSmall(blobIdOf(row), expected);
        if (!all) throw new IntegrityError('ciphertext is missing');
        if (all.length !== expected) throw new IntegrityError(`ciphertext length ${all.length} does not match the recorded size`);
        if (span.firstChunk !== 0) header = all.subarray(0, HEADER_LENGTH);
        const slice = all.subarray(span.from, span.to + 1);
        source = (async function* () {
          yield slice;
        })();
      } else {
        const stat = await this.deps.store.stat(blobIdOf(row));
        if (!stat) throw new IntegrityError('ciphertext is missing');
        if (stat.size !== expected) throw new IntegrityError(`ciphertext length ${stat.size} does not match the recorded size`);
        header = span.firstChunk === 0 ? undefined : await readAll(this.deps.store.getRange(blobIdOf(row), 0, HEADER_LENGTH - 1));
        source = this.deps.store.getRange(blobIdOf(row), span.from, span.to);
      }
      const full = range.start === 0 && range.end === row.size - 1;
      const gen = decryptRange(source, {
        dek,
        fileId: Buffer.from(row.id, 'hex'),
        chunkSize: row.chunkSize,
        size: row.size,
        start: range.start,
        end: range.end,
        header,
        expectedSha256: full ? row.sha256 : undefined,
      });
      let first: IteratorResult<Buffer> | undefined = await gen.next();
      // A plain iterator rather than a wrapping generator: if the consumer gives up before its
      // first read (client gone), return()/throw() must still reach `gen` so its finally closes
      // the ciphertext file and wipes the payload key. A wrapper generator that never started
      // would swallow those calls and leak the file descriptor.
      const it = {
        next: () => {
          const f = first;
          first = undefined;
          return f ? Promise.resolve(f) : gen.next();
        },
        return: (value) => {
          first = undefined;
          return gen.return(value);
        },
        throw: async (err) => {
          first = undefined;
          await gen.return(undefined);
          throw err;
        },
        [Symbol.asyncIterator]() {
          return this;
        },
      } as AsyncGenerator<Buffer>;
      return it;
    } finally {
      // decryptRange derived its own payload key; the DEK is not needed past this point.
      dek.fill(0);
    }
  }
}

async function readAll(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of stream) parts.push(p);
  return Buffer.concat(parts);
}
