/**
 * Resumable uploads (tus 1.0) that never hold plaintext at rest. At creation a fresh DEK is
 * wrapped under the master key into the uploads row, with the ciphertext header. Each PATCH
 * seals its bytes into the normal 64 KiB chunks of docs/format.md as they arrive and appends
 * them to the upload's partial store (storage/partial.ts); only whole chunks are committed and
 * the row's `committed` offset is the last durable chunk boundary. A trailing partial chunk
 * lives in this request's memory only and is dropped with it (the client resends it).
 *
 * The whole-file SHA-256 runs in hash-wasm, whose state can be saved: at every checkpoint the
 * state is sealed (AES-256-GCM under a key derived from the DEK, bound to the upload id and the
 * offset) into the row, so a resume on another instance or after a restart loads it instead of
 * re-reading the prefix.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { createSHA256, type IHasher } from 'hash-wasm';
import type { Database, Trx } from '../db/database.js';
import { FilesRepo, type FileRow } from '../db/files.js';
import { MasterKeysRepo } from '../db/master-keys.js';
import { UploadsRepo, type UploadRow } from '../db/uploads.js';
import { CURRENT_WRAP_VERSION, unwrapUploadDek, wrapUploadDek } from '../crypto/envelope.js';
import {
  DEFAULT_CHUNK_SIZE,
  FORMAT_VERSION,
  HEADER_LENGTH,
  IntegrityError,
  NONCE_PREFIX_LENGTH,
  SALT_LENGTH,
  TAG_LENGTH,
  derivePayloadKey,
  encodeHeader,
  parseHeader,
  sealChunk,
} from '../crypto/format.js';
import type { Keyring } from '../crypto/keyring.js';
import type { BlobStore } from '../storage/blob-store.js';
import { PartialMissingError, type Checkpoint, type PartialWriter } from '../storage/partial.js';
import { AppError } from '../errors.js';
import { newId } from './ids.js';
import type { VaultService } from './vault.js';

const HASH_STATE_LABEL = 'sfs/v1 tus hash state';

export interface TusDeps {
  db: Database;
  store: BlobStore;
  keyring: Keyring;
  vault: VaultService;
  maxFileSize: number;
  expiryMs: number;
  maxOpenUploads: number;
  leaseMs: number;
  chunkSize?: number;
  /** The expiry a completed upload's file gets (the retention default, services/lifecycle.ts); none when absent. */
  fileExpiresAt?: (createdAt: number) => number | null;
  now?: () => number;
}

/**
 * Whose upload: a user's own (a bare owner id), or one to an upload request, which belongs to
 * the request's owner but is reachable only through that request (routes/request-tus.ts).
 */
export interface UploadScope {
  ownerId: string;
  requestId: string | null;
}

function scopeOf(o: string | UploadScope): UploadScope {
  return typeof o === 'string' ? { ownerId: o, requestId: null } : o;
}

/** What a caller plugs into a creation: an upload request's reservation and its uploader. */
export interface CreateHooks {
  /** Runs inside the creating transaction (e.g. the request's files/bytes reservation); throw to refuse. */
  within?: (trx: Trx, upload: { id: string; length: number; expiresAt: number }) => Promise<void>;
  /** Copied to the file on completion. */
  origin?: { uploaderName: string | null; uploaderEmail: string | null };
  /** For an empty upload, which completes at once. */
  patch?: Pick<PatchOptions, 'inspect' | 'within'>;
}

/** What HEAD reports about an upload. */
export interface UploadStatus {
  id: string;
  length: number;
  offset: number;
  expiresAt: number;
  name: string;
  mimeType: string;
  /** Set once the upload became a file. */
  fileId: string | null;
  sha256: Buffer | null;
}

export interface PatchOptions {
  /** Upload-Checksum (sha256 of this request's body): nothing is committed unless it matches. */
  checksum?: Buffer;
  /** The declared Content-Length, when sent (checked against Upload-Length before reading). */
  contentLength?: number;
  /** Sees the plaintext of the upload's first chunk before it is sealed or stored; throw to refuse it. */
  inspect?: (head: Buffer, upload: { name: string }) => void;
  /** Runs inside the transaction that inserts the finished file (e.g. the request's counters); throw to refuse. */
  within?: (trx: Trx, file: FileRow) => Promise<void>;
}

export interface PatchResult {
  offset: number;
  expiresAt: number;
  /** The finished file, when this request completed the upload. */
  file?: FileRow;
}

/** Ciphertext bytes of an upload whose first `committed` plaintext bytes (whole chunks) are stored. */
export function cipherBytesAt(committed: number, chunkSize: number): number {
  return HEADER_LENGTH + committed + (committed / chunkSize) * TAG_LENGTH;
}

/** Plaintext offset of `cipherBytes` durable ciphertext bytes made only of whole middle chunks. */
function committedAt(cipherBytes: number, chunkSize: number): number {
  const body = cipherBytes - HEADER_LENGTH;
  const chunks = body / (chunkSize + TAG_LENGTH);
  if (body < 0 || !Number.isInteger(chunks)) throw new Error(`checkpoint at ${cipherBytes} ciphertext bytes is not a chunk boundary`);
  return chunks * chunkSize;
}

function hashStateKey(dek: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', dek, Buffer.alloc(0), Buffer.from(HASH_STATE_LABEL, 'utf8'), 32));
}

function hashStateAad(id: string, committed: number): Buffer {
  // Bound to the offset: an old state cannot be replayed against a later offset (or the reverse).
  return Buffer.from(JSON.stringify([HASH_STATE_LABEL, id, committed]), 'utf8');
}

/** Seals hash-wasm state (it reveals the SHA-256 state of the prefix) under a DEK-derived key. */
export function sealHashState(dek: Buffer, id: string, committed: number, state: Uint8Array): Buffer {
  const key = hashStateKey(dek);
  const nonce = randomBytes(12);
  try {
    const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
    c.setAAD(hashStateAad(id, committed));
    const ct = Buffer.concat([c.update(state), c.final()]);
    return Buffer.concat([nonce, ct, c.getAuthTag()]);
  } finally {
    key.fill(0);
  }
}

/** Opens a sealed hash state; IntegrityError when it was altered or belongs to another offset. */
export function openHashState(dek: Buffer, id: string, committed: number, sealed: Buffer): Buffer {
  const key = hashStateKey(dek);
  try {
    if (sealed.length < 28) throw new IntegrityError('hash state too short');
    const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12), { authTagLength: 16 });
    d.setAAD(hashStateAad(id, committed));
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    const pt = d.update(sealed.subarray(12, sealed.length - 16));
    try {
      d.final();
    } catch {
      pt.fill(0);
      throw new IntegrityError('hash state of the upload failed authentication');
    }
    return pt;
  } finally {
    key.fill(0);
  }
}

export class TusService {
  readonly uploads: UploadsRepo;
  private readonly chunkSize: number;
  private readonly now: () => number;

  constructor(private readonly d: TusDeps) {
    this.uploads = new UploadsRepo(d.db.kysely);
    this.chunkSize = d.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.now = d.now ?? Date.now;
  }

  /**
   * Creates an upload: refuses a length over MAX_FILE_SIZE or the quota (413) and a user at the
   * open-upload bound (429) in the same transaction that inserts the row, so parallel creations
   * on any instance cannot overshoot. An empty upload is complete at once.
   */
  async create(owner: string | UploadScope, o: { length: number; name: string; mimeType: string }, hooks: CreateHooks = {}): Promise<{ row: UploadRow; file?: FileRow }> {
    const { ownerId, requestId } = scopeOf(owner);
    if (o.length > this.d.maxFileSize) throw new AppError('file_too_large', `Upload-Length exceeds the limit of ${this.d.maxFileSize} bytes`);
    const id = newId();
    const dek = randomBytes(32);
    try {
      const header = encodeHeader({ chunkSize: this.chunkSize, fileId: Buffer.from(id, 'hex'), salt: randomBytes(SALT_LENGTH), noncePrefix: randomBytes(NONCE_PREFIX_LENGTH) });
      const key = this.d.keyring.active;
      const wrapped = wrapUploadDek(key, dek, { uploadId: id, ownerId, length: o.length, chunkSize: this.chunkSize }, randomBytes(12));
      const limit = await this.d.vault.quota.limitOf(ownerId);
      const now = this.now();
      const quota = this.d.vault.quota;
      await this.d.db.transaction(async (trx) => {
        const repo = new UploadsRepo(trx);
        const open = await repo.openOf(ownerId, now);
        // A request's uploads are bounded by its maxFiles instead (hooks.within reserves them).
        if (requestId === null && open.count >= this.d.maxOpenUploads) throw new AppError('too_many_uploads', `you have ${open.count} resumable uploads open (at most ${this.d.maxOpenUploads}); finish or delete one`);
        if (limit !== null) {
          // usageIn counts files and open uploads; leases are ordinary uploads still streaming.
          const taken = (await quota.usageIn(trx, ownerId)) + (await quota.leasedIn(trx, ownerId, now));
          if (taken + o.length > limit) throw new AppError('quota_exceeded', `this upload would exceed your storage quota of ${limit} bytes`);
        }
        await new MasterKeysRepo(trx).insertIfMissing(key.id, key.checkValue, now);
        await repo.insert({
          id,
          owner_id: ownerId,
          name: o.name,
          mime_type: o.mimeType,
          length: o.length,
          chunk_size: this.chunkSize,
          header,
          key_id: key.id,
          wrapped_dek: wrapped,
          created_at: now,
          expires_at: now + this.d.expiryMs,
          request_id: requestId,
          uploader_name: hooks.origin?.uploaderName ?? null,
          uploader_email: hooks.origin?.uploaderEmail ?? null,
        });
        await hooks.within?.(trx, { id, length: o.length, expiresAt: now + this.d.expiryMs });
      });
      const scope = { ownerId, requestId };
      if (o.length === 0) {
        const r = await this.patch(scope, id, 0, emptySource(), hooks.patch ?? {});
        return { row: (await this.uploads.byIdForOwner(id, ownerId, requestId))!, file: r.file };
      }
      return { row: (await this.uploads.byIdForOwner(id, ownerId, requestId))! };
    } finally {
      dek.fill(0);
    }
  }

  /** The owner's upload, or not_found (also another user's); upload_expired past its expiry. */
  async status(owner: string | UploadScope, id: string): Promise<UploadStatus> {
    const row = await this.rowOf(owner, id);
    return {
      id: row.id,
      length: row.length,
      offset: row.committed,
      expiresAt: row.expires_at,
      name: row.name,
      mimeType: row.mime_type,
      fileId: row.file_id,
      sha256: row.sha256,
    };
  }

  private async rowOf(owner: string | UploadScope, id: string): Promise<UploadRow> {
    const { ownerId, requestId } = scopeOf(owner);
    const row = /^[0-9a-f]{32}$/.test(id) ? await this.uploads.byIdForOwner(id, ownerId, requestId) : undefined;
    if (!row) throw new AppError('not_found', 'no such upload');
    if (row.expires_at <= this.now() && row.file_id === null) throw new AppError('upload_expired', 'this upload expired; start it again');
    return row;
  }

  /**
   * Appends a request body at `offset`. Holds the upload's lease (one statement; a second
   * PATCH through any instance gets upload_locked) for the request, seals and appends whole
   * chunks, records checkpoints, and completes the upload into a file row when the last byte
   * arrives. A body cut off mid-way still commits its whole chunks (unless it carried a
   * checksum) and then rethrows.
   */
  async patch(owner: string | UploadScope, id: string, offset: number, body: AsyncIterable<Buffer>, opts: PatchOptions, onLost?: () => void): Promise<PatchResult> {
    const { ownerId, requestId } = scopeOf(owner);
    if (!/^[0-9a-f]{32}$/.test(id)) throw new AppError('not_found', 'no such upload');
    const leaseId = newId();
    const now = this.now();
    if (!(await this.uploads.acquire(id, ownerId, leaseId, now, now + this.d.leaseMs, requestId))) {
      const row = await this.rowOf(owner, id);
      if (row.file_id !== null) throw new AppError('upload_offset_mismatch', `the upload is complete (offset ${row.length})`);
      throw new AppError('upload_locked', 'another request is writing this upload; try again shortly', { 'Retry-After': '1' });
    }
    let lost = false;
    const timer = setInterval(() => {
      void this.uploads.renew(id, leaseId, this.now() + this.d.leaseMs).then(
        (ok) => {
          if (!ok && !lost) {
            lost = true;
            onLost?.();
          }
        },
        () => {},
      );
    }, Math.max(500, Math.floor(this.d.leaseMs / 3)));
    timer.unref();
    let dek: Buffer | undefined;
    let payloadKey: Buffer | undefined;
    let writer: PartialWriter | undefined;
    let storeState: string | null = null;
    let refused = false;
    try {
      const row = (await this.uploads.byIdForOwner(id, ownerId, requestId))!;
      if (offset !== row.committed) throw new AppError('upload_offset_mismatch', `Upload-Offset ${offset} is not the upload's offset ${row.committed}; ask with HEAD`);
      if (opts.contentLength !== undefined && offset + opts.contentLength > row.length) {
        throw new AppError('upload_length_exceeded', `the body would take the upload past its Upload-Length of ${row.length}`, {}, true);
      }
      const C = row.chunk_size;
      const key = await this.d.vault.keyFor({ keyId: row.key_id });
      dek = unwrapUploadDek(key, row.wrapped_dek, { uploadId: id, ownerId, length: row.length, chunkSize: C });
      payloadKey = derivePayloadKey(dek, row.header);
      const noncePrefix = parseHeader(row.header).noncePrefix;
      const hasher: IHasher = await createSHA256();
      if (row.committed > 0) {
        if (!row.hash_state) throw new IntegrityError('upload has no hash state');
        const state = openHashState(dek, id, row.committed, row.hash_state);
        hasher.load(state);
        state.fill(0);
      } else hasher.init();
      const partials = this.d.store.partials();
      try {
        writer = await partials.open(id, row.store_state, cipherBytesAt(row.committed, C), row.header);
      } catch (err) {
        if (!(err instanceof PartialMissingError)) throw err;
        // The stored bytes are gone (e.g. a restore from a backup, which holds no incomplete
        // uploads): the upload cannot go on, so it ends as if expired and the client starts again.
        await this.uploads.deleteForOwner(id, ownerId, requestId);
        await partials.remove(id, row.store_state).catch(() => {});
        throw new AppError('upload_expired', 'the stored part of this upload is gone; start it again');
      }
      const length = row.length;
      let done = row.committed; // plaintext sealed and appended
      storeState = row.store_state;
      const bodyHash = opts.checksum ? createHash('sha256') : null;
      const pending = Buffer.allocUnsafe(C);
      let pendingLen = 0;
      let received = 0;
      const w = writer;
      const k = payloadKey;
      const d = dek;

      const record = async (cp: Checkpoint, last = false): Promise<void> => {
        // The request's last checkpoint releases the lease: no renewal may run after it.
        if (last) clearInterval(timer);
        const committed = committedAt(cp.cipherBytes, C);
        if (committed !== done) throw new Error('checkpoint does not match the appended chunks');
        storeState = cp.state;
        const t = this.now();
        const ok = await this.uploads.checkpoint(id, leaseId, { committed, hashState: sealHashState(d, id, committed, hasher.save()), storeState, leaseUntil: t + this.d.leaseMs, expiresAt: t + this.d.expiryMs, release: last });
        if (!ok) {
          lost = true;
          throw new AppError('not_found', 'the upload was terminated or taken over while this request ran');
        }
      };
      const seal = async (plain: Buffer, last: boolean): Promise<void> => {
        // Before the first chunk exists anywhere: a refusal ends the upload (below).
        if (done === 0 && opts.inspect) {
          try {
            opts.inspect(plain, row);
          } catch (err) {
            refused = true;
            throw err;
          }
        }
        const [ct, tag] = sealChunk(k, noncePrefix, done / C, last, plain);
        hasher.update(plain);
        done += plain.length;
        const cp = await w.append([ct, tag]);
        // With a checksum nothing is committed before the whole body is verified.
        if (cp && !bodyHash && !last) await record(cp);
      };

      let completed = false;
      try {
        const it = body[Symbol.asyncIterator]();
        for (;;) {
          if (lost) throw new AppError('not_found', 'the upload was terminated while this request ran');
          const next = await it.next();
          if (next.done) break;
          const data = next.value;
          received += data.length;
          if (offset + received > length) throw new AppError('upload_length_exceeded', `the body takes the upload past its Upload-Length of ${length}`, {}, true);
          bodyHash?.update(data);
          let pos = 0;
          while (pos < data.length) {
            const n = Math.min(C - pendingLen, data.length - pos);
            data.copy(pending, pendingLen, pos, pos + n);
            pendingLen += n;
            pos += n;
            if (pendingLen === C) {
              await seal(pending, done + C === length);
              pendingLen = 0;
            }
          }
        }
        if (bodyHash) {
          const got = bodyHash.digest();
          if (!timingSafeEqual(got, opts.checksum!)) throw new AppError('tus_checksum_mismatch', 'the body does not match Upload-Checksum; nothing of it was stored');
        }
        // The final chunk (1..C bytes, or the one empty chunk of an empty file), unless a
        // full last chunk was sealed in the loop already.
        if (done + pendingLen === length && (pendingLen > 0 || length === 0)) {
          await seal(pending.subarray(0, pendingLen), true);
          pendingLen = 0;
        }
        completed = done === length;
      } catch (err) {
        pending.fill(0);
        // A cut-off body keeps what it brought in whole chunks: they are sealed and appended
        // already, one flush makes them durable. A checksum body keeps nothing.
        if (!lost && !bodyHash && done > row.committed && done < length && !isAppError(err, 'tus_checksum_mismatch')) {
          await record(await w.flush(), true).catch(() => {});
        }
        throw err;
      }
      pending.fill(0);
      if (!completed) {
        // The trailing partial chunk (if any) is dropped: the client resends it from `done`.
        if (done > row.committed || storeState === null) await record(await w.flush(), true);
        const t = this.now();
        return { offset: done, expiresAt: t + this.d.expiryMs };
      }
      const file = await this.complete(row, leaseId, d, Buffer.from(hasher.digest('binary')), w, opts.within);
      writer = undefined;
      return { offset: length, expiresAt: row.expires_at, file };
    } catch (err) {
      if (refused && writer) {
        // The caller refused the content: the upload ends here, with whatever the store began
        // for it (S3: the multipart upload opened for the first chunk, found through a flush).
        await this.uploads.deleteForOwner(id, ownerId, requestId).catch(() => {});
        const cp = await writer.flush().catch(() => null);
        await this.d.store.partials().remove(id, cp?.state ?? storeState).catch(() => {});
      }
      if (lost && !(await this.uploads.exists(id).catch(() => true))) {
        // Terminated while we wrote: whatever this request re-created goes too.
        await this.d.store.partials().remove(id, storeState).catch(() => {});
      }
      throw err;
    } finally {
      clearInterval(timer);
      await writer?.close();
      dek?.fill(0);
      payloadKey?.fill(0);
      await this.uploads.release(id, leaseId).catch(() => {});
    }
  }

  /** Makes the ciphertext the file's blob and swaps the upload for a file row in one transaction. */
  private async complete(row: UploadRow, leaseId: string, dek: Buffer, sha256: Buffer, writer: PartialWriter, within?: PatchOptions['within']): Promise<FileRow> {
    await writer.finish();
    const key = this.d.keyring.active;
    const now = this.now();
    const file: FileRow = {
      id: row.id,
      ownerId: row.owner_id,
      name: row.name,
      size: row.length,
      mimeType: row.mime_type,
      sha256,
      keyId: key.id,
      wrappedDek: this.d.vault.wrapFor(key, { id: row.id, ownerId: row.owner_id, size: row.length, sha256, formatVersion: FORMAT_VERSION, chunkSize: row.chunk_size }, dek),
      wrapVersion: CURRENT_WRAP_VERSION,
      formatVersion: FORMAT_VERSION,
      chunkSize: row.chunk_size,
      createdAt: now,
      expiresAt: this.d.fileExpiresAt?.(now) ?? null,
      requestId: row.request_id,
      uploaderName: row.uploader_name,
      uploaderEmail: row.uploader_email,
    };
    try {
      // The upload's bytes stop counting as an open upload and start counting as the file in
      // the same transaction, so the quota sees them exactly once.
      await this.d.db.transaction(async (trx) => {
        await new MasterKeysRepo(trx).insertIfMissing(key.id, key.checkValue, now);
        await new FilesRepo(trx).insert(file);
        if (!(await new UploadsRepo(trx).complete(row.id, leaseId, row.id, sha256, row.length))) {
          throw new AppError('not_found', 'the upload was terminated while it completed');
        }
        await within?.(trx, file);
      });
    } catch (err) {
      await this.d.store.delete(row.id).catch(() => {});
      throw err;
    }
    return file;
  }

  /**
   * Termination: the row goes (one statement), then its stored ciphertext. A PATCH running on
   * any instance notices at its next checkpoint or lease renewal and stops.
   */
  async terminate(owner: string | UploadScope, id: string): Promise<void> {
    const { ownerId, requestId } = scopeOf(owner);
    const row = /^[0-9a-f]{32}$/.test(id) ? await this.uploads.deleteForOwner(id, ownerId, requestId) : undefined;
    if (!row) throw new AppError('not_found', 'no such upload');
    if (row.file_id === null) await this.d.store.partials().remove(id, row.store_state);
  }

  /** Terminates every upload of a user (account deletion); returns how many. */
  terminateAllFor(userId: string): Promise<number> {
    return removeUploadsOf(this.d.db, this.d.store, userId);
  }

  /** Removes expired uploads (rows and their stored ciphertext); returns how many. */
  async sweep(): Promise<number> {
    const now = this.now();
    let n = 0;
    for (const row of await this.uploads.expired(now)) {
      if (!(await this.uploads.deleteExpired(row.id, now))) continue;
      if (row.file_id === null) await this.d.store.partials().remove(row.id, row.store_state).catch(() => {});
      n++;
    }
    return n;
  }
}

/**
 * Removes every upload of a user, rows and stored ciphertext (before the user row goes: its
 * ON DELETE CASCADE would drop the rows but leave part files and staging objects behind).
 */
export async function removeUploadsOf(db: Database, store: BlobStore, userId: string): Promise<number> {
  const repo = new UploadsRepo(db.kysely);
  const rows = await db.kysely.selectFrom('uploads').select('id').where('owner_id', '=', userId).execute();
  let n = 0;
  for (const { id } of rows) {
    const row = await repo.deleteForOwner(id, userId, 'any');
    if (!row) continue;
    if (row.file_id === null) await store.partials().remove(id, row.store_state);
    n++;
  }
  return n;
}

function isAppError(err: unknown, code: string): boolean {
  return err instanceof AppError && err.code === code;
}

async function* emptySource(): AsyncGenerator<Buffer> {}
