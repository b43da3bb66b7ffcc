/**
 * Repository for share links and the download reservations against them. Links are found by
 * the keyed hash of their token (services/integrity.ts), and each row carries a MAC over its
 * file, owner, password and limits.
 */
import { shareMacFields, type IntegrityKeys } from '../services/integrity.js';
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

export class SharesRepo {
  constructor(
    private readonly db: Db,
    private readonly keys: IntegrityKeys,
  ) {}

  /** Inserts a link with its MAC; `tokenHash` is the keyed lookup value of the token. */
  insert(s: ShareRow & { tokenHash: Buffer }): void {
    stmt(this.db, 
        `INSERT INTO shares (id, file_id, owner_id, token_hash, password_hash, note, created_at, expires_at, max_downloads, row_mac)
         VALUES (@id, @fileId, @ownerId, @tokenHash, @passwordHash, @note, @createdAt, @expiresAt, @maxDownloads, @rowMac)`,
      )
      .run({ ...s, rowMac: this.keys.rowMac('shares', shareMacFields(s)) });
  }

  /** The link with this lookup value; `intact` is false when its file, owner, password or limits were changed without the key. */
  byTokenHash(hash: Buffer): { share: ShareRow; intact: boolean } | undefined {
    const r = stmt(this.db, `SELECT ${COLUMNS}, row_mac FROM shares WHERE token_hash = ?`).get(hash) as (RawShare & { row_mac: Buffer | null }) | undefined;
    if (!r) return undefined;
    const share = toRow(r);
    return { share, intact: this.keys.rowMacMatches('shares', shareMacFields({ ...share, tokenHash: hash }), r.row_mac) };
  }

  byId(id: string): ShareRow | undefined {
    const r = stmt(this.db, `SELECT ${COLUMNS} FROM shares WHERE id = ?`).get(id) as RawShare | undefined;
    return r && toRow(r);
  }

  listForFile(fileId: string): ShareRow[] {
    return (stmt(this.db, `SELECT ${COLUMNS} FROM shares WHERE file_id = ? ORDER BY created_at DESC, id`).all(fileId) as RawShare[]).map(toRow);
  }

  /** Revokes the owner's share; false if there is no such live share. */
  revoke(id: string, ownerId: string, now: number): boolean {
    return this.db.transaction(() => {
      const current = this.byId(id);
      if (!current || current.ownerId !== ownerId || current.revokedAt !== null) return false;
      return this.write(id, { revokedAt: now });
    })();
  }

  /**
   * Writes changed counters or the revocation and re-seals the row, so clearing revoked_at or
   * resetting a counter by SQL makes the link fail its MAC (undoing a change then needs a saved
   * copy of the row from before it). A row whose MAC already fails keeps failing: it is
   * changed, never blessed.
   */
  private write(id: string, change: Partial<Pick<ShareRow, 'downloads' | 'bytesServed' | 'revokedAt'>>): boolean {
    const r = stmt(this.db, `SELECT ${COLUMNS}, token_hash, row_mac FROM shares WHERE id = ?`).get(id) as
      | (RawShare & { token_hash: Buffer; row_mac: Buffer | null })
      | undefined;
    if (!r) return false;
    const before = toRow(r);
    const intact = this.keys.rowMacMatches('shares', shareMacFields({ ...before, tokenHash: r.token_hash }), r.row_mac);
    const after = { ...before, ...change };
    const mac = intact ? this.keys.rowMac('shares', shareMacFields({ ...after, tokenHash: r.token_hash })) : r.row_mac;
    return (
      stmt(this.db, 'UPDATE shares SET downloads = ?, bytes_served = ?, revoked_at = ?, row_mac = ? WHERE id = ?').run(
        after.downloads,
        after.bytesServed,
        after.revokedAt,
        mac,
        id,
      ).changes === 1
    );
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
        const current = this.byId(shareId);
        if (current) this.write(shareId, { bytesServed: current.bytesServed + bytesSent, downloads: current.downloads + (countDownload ? 1 : 0) });
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
