/** Repository for file rows: metadata plus the DEK wrapped under a master key. */
import type { WrapBinding, WrapVersion } from '../crypto/envelope.js';
import { stmt, type Db } from './database.js';

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
}

interface RawFile {
  id: string;
  owner_id: string;
  name: string;
  size: number;
  mime_type: string;
  sha256: Buffer;
  key_id: string;
  wrapped_dek: Buffer;
  wrap_version: number;
  format_version: number;
  chunk_size: number;
  created_at: number;
}

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
});

export interface PageCursor {
  createdAt: number;
  id: string;
}

export class FilesRepo {
  constructor(private readonly db: Db) {}

  insert(f: FileRow): void {
    stmt(this.db, 
        `INSERT INTO files (id, owner_id, name, size, mime_type, sha256, key_id, wrapped_dek, wrap_version, format_version, chunk_size, created_at)
         VALUES (@id, @ownerId, @name, @size, @mimeType, @sha256, @keyId, @wrappedDek, @wrapVersion, @formatVersion, @chunkSize, @createdAt)`,
      )
      .run(f);
  }

  /** The file if it exists and belongs to `ownerId`; another user's file is indistinguishable from none. */
  byIdForOwner(id: string, ownerId: string): FileRow | undefined {
    const r = stmt(this.db, 'SELECT * FROM files WHERE id = ? AND owner_id = ?').get(id, ownerId) as RawFile | undefined;
    return r && toRow(r);
  }

  byId(id: string): FileRow | undefined {
    const r = stmt(this.db, 'SELECT * FROM files WHERE id = ?').get(id) as RawFile | undefined;
    return r && toRow(r);
  }

  /** One page of the owner's files, newest first, strictly after `cursor`. */
  listForOwner(ownerId: string, limit: number, cursor: PageCursor | null): FileRow[] {
    const rows = cursor
      ? stmt(this.db, 
            `SELECT * FROM files WHERE owner_id = ? AND (created_at < ? OR (created_at = ? AND id < ?))
             ORDER BY created_at DESC, id DESC LIMIT ?`,
          )
          .all(ownerId, cursor.createdAt, cursor.createdAt, cursor.id, limit)
      : stmt(this.db, 'SELECT * FROM files WHERE owner_id = ? ORDER BY created_at DESC, id DESC LIMIT ?').all(ownerId, limit);
    return (rows as RawFile[]).map(toRow);
  }

  /** Bytes stored by a user (plaintext sizes). */
  usageOf(ownerId: string): number {
    return (stmt(this.db, 'SELECT coalesce(sum(size), 0) AS n FROM files WHERE owner_id = ?').get(ownerId) as { n: number }).n;
  }

  /**
   * Crypto-shreds and removes the owner's file row in one transaction: the wrapped DEK is
   * overwritten before the row is deleted (and secure_delete zeroes the freed page).
   */
  shred(id: string, ownerId: string): boolean {
    return this.db.transaction(() => {
      const wiped = stmt(this.db, 'UPDATE files SET wrapped_dek = zeroblob(length(wrapped_dek)) WHERE id = ? AND owner_id = ?')
        .run(id, ownerId).changes;
      if (wiped !== 1) return false;
      stmt(this.db, 'DELETE FROM files WHERE id = ? AND owner_id = ?').run(id, ownerId);
      return true;
    }).immediate();
  }

  /** All file ids (for scrubbing and garbage collection). */
  allIds(): string[] {
    return (stmt(this.db, 'SELECT id FROM files').all() as { id: string }[]).map((r) => r.id);
  }
}

/** What a row's wrapped DEK is bound to (the associated data of its wrap). */
export function bindingOf(f: Pick<FileRow, 'id' | 'ownerId' | 'size' | 'sha256' | 'wrapVersion' | 'formatVersion' | 'chunkSize'>): WrapBinding {
  return { wrapVersion: f.wrapVersion, fileId: f.id, ownerId: f.ownerId, size: f.size, sha256: f.sha256, formatVersion: f.formatVersion, chunkSize: f.chunkSize };
}
