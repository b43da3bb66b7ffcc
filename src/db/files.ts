/** Repository for file rows: metadata plus the DEK wrapped under a master key. */
import type { WrapBinding, WrapVersion } from '../crypto/envelope.js';
import { sql } from './kysely.js';
import type { Selectable } from 'kysely';
import type { FilesTable } from './schema.js';
import { inTransaction, isPostgres, type Executor } from './database.js';
import { blobIdOf } from '../storage/blob-store.js';

export interface FileRow {
  id: string;
  ownerId: string;
  name: string;
  size: number;
  mimeType: string;
  /** Plaintext SHA-256, 32 raw bytes. */
  sha256: Buffer;
  keyId: string;
  wrappedDek: Buffer;
  /** Associated-data layout of the wrapped DEK (crypto/envelope.ts). */
  wrapVersion: WrapVersion;
  formatVersion: number;
  chunkSize: number;
  createdAt: number;
  /** Which object holds the ciphertext (0 when absent: new rows start there). */
  blobGen?: number;
  /** The upload request the file came through (services/requests.ts); null or absent for the owner's own uploads. */
  requestId?: string | null;
  /** What the uploader of a request gave as their name and email (never checked: their word). */
  uploaderName?: string | null;
  uploaderEmail?: string | null;
}

/** A files row as the database returns it (the schema is the one description of the table). */
type RawFile = Selectable<FilesTable>;

const toRow = (r: RawFile): FileRow => ({
  id: r.id,
  ownerId: r.owner_id,
  name: r.name,
  size: r.size,
  mimeType: r.mime_type,
  sha256: r.sha256,
  keyId: r.key_id,
  wrappedDek: r.wrapped_dek,
  wrapVersion: r.wrap_version as WrapVersion,
  formatVersion: r.format_version,
  chunkSize: r.chunk_size,
  createdAt: r.created_at,
  blobGen: r.blob_gen,
  requestId: r.request_id,
  uploaderName: r.uploader_name,
  uploaderEmail: r.uploader_email,
});

export interface PageCursor {
  createdAt: number;
  id: string;
}

export class FilesRepo {
  constructor(private readonly db: Executor) {}

  async insert(f: FileRow): Promise<void> {
    await this.db
      .insertInto('files')
      .values({
        id: f.id,
        owner_id: f.ownerId,
        name: f.name,
        size: f.size,
        mime_type: f.mimeType,
        sha256: f.sha256,
        key_id: f.keyId,
        wrapped_dek: f.wrappedDek,
        wrap_version: f.wrapVersion,
        format_version: f.formatVersion,
        chunk_size: f.chunkSize,
        created_at: f.createdAt,
        request_id: f.requestId ?? null,
        uploader_name: f.uploaderName ?? null,
        uploader_email: f.uploaderEmail ?? null,
      })
      .execute();
  }

  /** The file if it exists and belongs to `ownerId`; another user's file is indistinguishable from none. */
  async byIdForOwner(id: string, ownerId: string): Promise<FileRow | undefined> {
    const r = await this.db.selectFrom('files').selectAll().where('id', '=', id).where('owner_id', '=', ownerId).executeTakeFirst();
    return r && toRow(r);
  }

  async byId(id: string): Promise<FileRow | undefined> {
    const r = await this.db.selectFrom('files').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toRow(r);
  }

  /** One page of the owner's files, newest first, strictly after `cursor` (only those of `requestId` when given). */
  async listForOwner(ownerId: string, limit: number, cursor: PageCursor | null, requestId?: string): Promise<FileRow[]> {
    let q = this.db.selectFrom('files').selectAll().where('owner_id', '=', ownerId);
    if (requestId !== undefined) q = q.where('request_id', '=', requestId);
    if (cursor) {
      q = q.where((eb) => eb.or([eb('created_at', '<', cursor.createdAt), eb.and([eb('created_at', '=', cursor.createdAt), eb('id', '<', cursor.id)])]));
    }
    const rows = await q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute();
    return rows.map(toRow);
  }

  /** Bytes stored by a user (plaintext sizes). */
  async usageOf(ownerId: string): Promise<number> {
    const r = await this.db
      .selectFrom('files')
      .select((eb) => eb.fn.coalesce(eb.fn.sum<number>('size'), sql<number>`0`).as('n'))
      .where('owner_id', '=', ownerId)
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  /** Number of files a user owns. */
  async countForOwner(ownerId: string): Promise<number> {
    const r = await this.db.selectFrom('files').select((eb) => eb.fn.countAll<number>().as('n')).where('owner_id', '=', ownerId).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  /**
   * Crypto-shreds and removes the owner's file row in one transaction: the wrapped DEK is
   * overwritten before the row is deleted (and secure_delete zeroes the freed page).
   */
  shred(id: string, ownerId: string): Promise<boolean> {
    return inTransaction(this.db, async (trx) => {
      const zeros = isPostgres(trx) ? sql`decode(repeat('00', length(wrapped_dek)), 'hex')` : sql`zeroblob(length(wrapped_dek))`;
      const wiped = await sql`UPDATE files SET wrapped_dek = ${zeros} WHERE id = ${id} AND owner_id = ${ownerId}`.execute(trx);
      if (Number(wiped.numAffectedRows ?? 0n) !== 1) return false;
      await trx.deleteFrom('files').where('id', '=', id).where('owner_id', '=', ownerId).execute();
      return true;
    });
  }

  /** The store id of every file's current ciphertext (for orphan checks: an older generation is an orphan). */
  async allBlobIds(): Promise<string[]> {
    return (await this.db.selectFrom('files').select(['id', 'blob_gen']).execute()).map((r) => blobIdOf({ id: r.id, blobGen: r.blob_gen }));
  }

  /** All file ids (for scrubbing and garbage collection). */
  async allIds(): Promise<string[]> {
    return (await this.db.selectFrom('files').select('id').execute()).map((r) => r.id);
  }
}

/** What a row's wrapped DEK is bound to (the associated data of its wrap). */
export function bindingOf(f: Pick<FileRow, 'id' | 'ownerId' | 'size' | 'sha256' | 'wrapVersion' | 'formatVersion' | 'chunkSize'>): WrapBinding {
  return { wrapVersion: f.wrapVersion, fileId: f.id, ownerId: f.ownerId, size: f.size, sha256: f.sha256, formatVersion: f.formatVersion, chunkSize: f.chunkSize };
}
