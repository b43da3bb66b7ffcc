/** Repository for file rows: metadata plus the DEK wrapped under a master key. */
import type { WrapBinding, WrapVersion } from '../crypto/envelope.js';
import { sql } from './kysely.js';
import type { Selectable } from 'kysely';
import type { FilesTable } from './schema.js';
import { inTransaction, isPostgres, type Executor } from './database.js';
import { blobIdOf } from '../storage/blob-store.js';
import { notHeld } from './holds.js';

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
  /** Unsigned CRC-32 of the plaintext, for zip entries; null for files uploaded before it was recorded. */
  crc32?: number | null;
  /** When the purge job crypto-shreds the file (ms); null or absent: kept until deleted. */
  expiresAt?: number | null;
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
  crc32: r.crc32 === null || r.crc32 === undefined ? null : Number(r.crc32),
  expiresAt: r.expires_at === null ? null : Number(r.expires_at),
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
        crc32: f.crc32 ?? null,
        expires_at: f.expiresAt ?? null,
        request_id: f.requestId ?? null,
        uploader_name: f.uploaderName ?? null,
        uploader_email: f.uploaderEmail ?? null,
      })
      .execute();
  }

  /**
   * Records a CRC-32 computed later from the verified plaintext (files uploaded before it was
   * kept); only where none is recorded, so a concurrent writer of the same value is harmless.
   */
  async recordCrc32(id: string, crc32: number): Promise<void> {
    await this.db.updateTable('files').set({ crc32 }).where('id', '=', id).where('crc32', 'is', null).execute();
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
   * overwritten before the row is deleted (and secure_delete zeroes the freed page). A file
   * under a legal hold is left alone (the hold is checked in the same statement): false.
   */
  shred(id: string, ownerId: string): Promise<boolean> {
    return inTransaction(this.db, (trx) => shredIn(trx, sql`id = ${id} AND owner_id = ${ownerId}`, id));
  }

  /** Sets (or clears, with null) the owner's file's expiry; false when there is no such file. */
  async setExpiry(id: string, ownerId: string, expiresAt: number | null): Promise<boolean> {
    const r = await this.db.updateTable('files').set({ expires_at: expiresAt }).where('id', '=', id).where('owner_id', '=', ownerId).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /**
   * Files due for the purge job at `now`, oldest due first: expired, or with a "delete after
   * the last download" link whose last allowed download completed; held files are never due.
   */
  async dueForPurge(now: number, limit: number): Promise<FileRow[]> {
    const rows = await this.db.selectFrom('files').selectAll().where(purgeDue(now)).where(notHeld()).orderBy('expires_at').orderBy('id').limit(limit).execute();
    return rows.map(toRow);
  }

  /**
   * For reminders (the notifications worker): files that expire within (now, now + withinMs]
   * and still have at least one active link (not revoked, not expired, budget not used up),
   * soonest first. Held files are left out: they will not expire while held.
   */
  async expiringWithActiveLinks(now: number, withinMs: number, limit = 500): Promise<FileRow[]> {
    const rows = await this.db
      .selectFrom('files')
      .selectAll()
      .where('expires_at', '>', now)
      .where('expires_at', '<=', now + withinMs)
      .where(notHeld())
      .where(
        sql<boolean>`EXISTS (SELECT 1 FROM shares s WHERE s.file_id = files.id AND s.revoked_at IS NULL AND s.expires_at > ${now} AND (s.max_downloads IS NULL OR s.downloads < s.max_downloads))`,
      )
      .orderBy('expires_at')
      .orderBy('id')
      .limit(limit)
      .execute();
    return rows.map(toRow);
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

/**
 * Why a files row is due for purging at `now` (SQL over the row aliased `files`): its expiry
 * passed, or one of its links was to delete it after its last allowed download and that
 * download was counted (the budget rules decide what completed means: db/shares.ts settle).
 */
export function purgeDue(now: number) {
  return sql<boolean>`((files.expires_at IS NOT NULL AND files.expires_at <= ${now}) OR EXISTS (SELECT 1 FROM shares s WHERE s.file_id = files.id AND s.delete_file_after = 1 AND s.max_downloads IS NOT NULL AND s.downloads >= s.max_downloads))`;
}

/**
 * The shred in an open transaction: zero the wrapped DEK of the row matching `where` (and no
 * hold), then delete the row. One conditional UPDATE decides, so two callers racing for the
 * same file (two instances purging, an owner deleting) shred it exactly once.
 */
export async function shredIn(trx: Executor, where: ReturnType<typeof sql>, id: string): Promise<boolean> {
  const zeros = isPostgres(trx) ? sql`decode(repeat('00', length(wrapped_dek)), 'hex')` : sql`zeroblob(length(wrapped_dek))`;
  const wiped = await sql`UPDATE files SET wrapped_dek = ${zeros} WHERE ${where} AND ${notHeld()}`.execute(trx);
  if (Number(wiped.numAffectedRows ?? 0n) !== 1) return false;
  await trx.deleteFrom('files').where('id', '=', id).execute();
  return true;
}

/** What a row's wrapped DEK is bound to (the associated data of its wrap). */
export function bindingOf(f: Pick<FileRow, 'id' | 'ownerId' | 'size' | 'sha256' | 'wrapVersion' | 'formatVersion' | 'chunkSize'>): WrapBinding {
  return { wrapVersion: f.wrapVersion, fileId: f.id, ownerId: f.ownerId, size: f.size, sha256: f.sha256, formatVersion: f.formatVersion, chunkSize: f.chunkSize };
}
