/** Repository for share links and the download reservations against them. */
import { stmt, type Db } from './database.js';

export interface ShareRow {
  id: string;
  fileId: string;
  ownerId: string;
  passwordHash: string | null;
  note: string | null;
  createdAt: number;
  expiresAt: number;
  maxDownloads: number | null;
  downloads: number;
  bytesServed: number;
  revokedAt: number | null;
  expiredAt: number | null;
}

interface RawShare {
  id: string;
  file_id: string;
  owner_id: string;
  password_hash: string | null;
  note: string | null;
  created_at: number;
  expires_at: number;
  max_downloads: number | null;
  downloads: number;
  bytes_served: number;
  revoked_at: number | null;
  expired_at: number | null;
}

const toRow = (r: RawShare): ShareRow => ({
  id: r.id,
  fileId: r.file_id,
  ownerId: r.owner_id,
  passwordHash: r.password_hash,
  note: r.note,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
  maxDownloads: r.max_downloads,
  downloads: r.downloads,
  bytesServed: r.bytes_served,
  revokedAt: r.revoked_at,
  expiredAt: r.expired_at,
});

const COLUMNS =
  'id, file_id, owner_id, password_hash, note, created_at, expires_at, max_downloads, downloads, bytes_served, revoked_at, expired_at';

const PREFIXED = COLUMNS.split(', ').map((c) => `s.${c}`).join(', ');

export class SharesRepo {
  constructor(private readonly db: Db) {}

  insert(s: ShareRow & { tokenHash: Buffer }): void {
    stmt(this.db, 
        `INSERT INTO shares (id, file_id, owner_id, token_hash, password_hash, note, created_at, expires_at, max_downloads)
         VALUES (@id, @fileId, @ownerId, @tokenHash, @passwordHash, @note, @createdAt, @expiresAt, @maxDownloads)`,
      )
      .run(s);
  }

  /**
   * The share with this token hash, only while its owner is an enabled user: the owner's
   * disabled flag is read in the same query, so a disabled owner's links stop at once.
   */
  byTokenHash(hash: Buffer): ShareRow | undefined {
    const r = stmt(
      this.db,
      `SELECT ${PREFIXED} FROM shares s JOIN users u ON u.id = s.owner_id WHERE s.token_hash = ? AND u.disabled = 0`,
    ).get(hash) as RawShare | undefined;
    return r && toRow(r);
  }

  byId(id: string): ShareRow | undefined {
    const r = stmt(this.db, `SELECT ${COLUMNS} FROM shares WHERE id = ?`).get(id) as RawShare | undefined;
    return r && toRow(r);
  }

  listForFile(fileId: string): ShareRow[] {
    return (stmt(this.db, `SELECT ${COLUMNS} FROM shares WHERE file_id = ? ORDER BY created_at DESC, id`).all(fileId) as RawShare[]).map(toRow);
  }

  /** Every share link the user created, newest first (for admins). */
  listForOwner(ownerId: string): ShareRow[] {
    return (stmt(this.db, `SELECT ${COLUMNS} FROM shares WHERE owner_id = ? ORDER BY created_at DESC, id`).all(ownerId) as RawShare[]).map(toRow);
  }

  /** Revokes every live share of the owner; returns how many were revoked. */
  revokeAllForOwner(ownerId: string, now: number): number {
    return stmt(this.db, 'UPDATE shares SET revoked_at = ? WHERE owner_id = ? AND revoked_at IS NULL').run(now, ownerId).changes;
  }

  /** Revokes every live share of a file; returns how many were revoked. */
  revokeAllForFile(fileId: string, now: number): number {
    return stmt(this.db, 'UPDATE shares SET revoked_at = ? WHERE file_id = ? AND revoked_at IS NULL').run(now, fileId).changes;
  }

  /** Removes every share row of the owner (their reservations go with them); for deleting the user. */
  deleteAllForOwner(ownerId: string): number {
    return stmt(this.db, 'DELETE FROM shares WHERE owner_id = ?').run(ownerId).changes;
  }

  /** Revokes the owner's share; false if there is no such live share. */
  revoke(id: string, ownerId: string, now: number): boolean {
    return stmt(this.db, 'UPDATE shares SET revoked_at = ? WHERE id = ? AND owner_id = ? AND revoked_at IS NULL').run(now, id, ownerId).changes === 1;
  }

  /** Bytes and completion slots held by unexpired reservations. */
  inFlight(shareId: string, now: number): { bytes: number; slots: number } {
    return stmt(this.db, 'SELECT coalesce(sum(bytes), 0) AS bytes, coalesce(sum(completion_slot), 0) AS slots FROM share_reservations WHERE share_id = ? AND expires_at > ?')
      .get(shareId, now) as { bytes: number; slots: number };
  }

  insertReservation(r: { id: string; shareId: string; bytes: number; completionSlot: boolean; expiresAt: number }): void {
    stmt(this.db, 'INSERT INTO share_reservations (id, share_id, bytes, completion_slot, expires_at) VALUES (?, ?, ?, ?, ?)')
      .run(r.id, r.shareId, r.bytes, r.completionSlot ? 1 : 0, r.expiresAt);
  }

  extendReservation(id: string, expiresAt: number): void {
    stmt(this.db, 'UPDATE share_reservations SET expires_at = ? WHERE id = ?').run(expiresAt, id);
  }

  /** Ends a reservation: adds what was really sent, and a download if the response completed. */
  settle(id: string, shareId: string, bytesSent: number, countDownload: boolean): void {
    this.db
      .transaction(() => {
        stmt(this.db, 'DELETE FROM share_reservations WHERE id = ?').run(id);
        stmt(this.db, 'UPDATE shares SET bytes_served = bytes_served + ?, downloads = downloads + ? WHERE id = ?')
          .run(bytesSent, countDownload ? 1 : 0, shareId);
      })
      .immediate();
  }

  /** Marks shares past their expiry and drops stale reservations; returns how many shares expired. */
  sweep(now: number): number {
    return this.db
      .transaction(() => {
        stmt(this.db, 'DELETE FROM share_reservations WHERE expires_at <= ?').run(now);
        return stmt(this.db, 'UPDATE shares SET expired_at = ? WHERE expired_at IS NULL AND revoked_at IS NULL AND expires_at <= ?').run(now, now).changes;
      })
      .immediate();
  }
}
