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

const PREFIXED = COLUMNS.split(', ').map((c) => `s.${c}`).join(', ');

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

  /**
   * The link with this lookup value, only while its owner is an enabled user (the owner's
   * disabled flag is read in the same query, so a disabled owner's links stop at once);
   * `intact` is false when its file, owner, password or limits were changed without the key.
   */
  byTokenHash(hash: Buffer): { share: ShareRow; intact: boolean } | undefined {
    const r = stmt(
      this.db,
      `SELECT ${PREFIXED}, s.row_mac FROM shares s JOIN users u ON u.id = s.owner_id WHERE s.token_hash = ? AND u.disabled = 0`,
    ).get(hash) as (RawShare & { row_mac: Buffer | null }) | undefined;
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

  /** Every share link the user created, newest first (for admins). */
  listForOwner(ownerId: string): ShareRow[] {
    return (stmt(this.db, `SELECT ${COLUMNS} FROM shares WHERE owner_id = ? ORDER BY created_at DESC, id`).all(ownerId) as RawShare[]).map(toRow);
  }

  /**
   * Revokes every live share of the owner; returns how many were revoked. Each through
   * write(), so the revocation is sealed: a raw UPDATE would leave the old MAC, which matches
   * again once a database writer clears revoked_at.
   */
  revokeAllForOwner(ownerId: string, now: number): number {
    return this.revokeWhere('owner_id', ownerId, now);
  }

  /** Revokes every live share of a file (sealed, as above); returns how many were revoked. */
  revokeAllForFile(fileId: string, now: number): number {
    return this.revokeWhere('file_id', fileId, now);
  }

  private revokeWhere(column: 'owner_id' | 'file_id', value: string, now: number): number {
    return this.db.transaction(() => {
      const ids = stmt(this.db, `SELECT id FROM shares WHERE ${column} = ? AND revoked_at IS NULL`).all(value) as { id: string }[];
      let n = 0;
      for (const { id } of ids) if (this.write(id, { revokedAt: now })) n++;
      return n;
    })();
  }

  /** Removes every share row of the owner (their reservations go with them); for deleting the user. */
  deleteAllForOwner(ownerId: string): number {
    return stmt(this.db, 'DELETE FROM shares WHERE owner_id = ?').run(ownerId).changes;
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

  /**
   * Bytes and completion slots held by unexpired reservations. Responses under one ticket
   * share one slot (they are one recipient's one download); `ticketHolds` says whether
   * `ticketId` already holds one.
   */
  inFlight(shareId: string, now: number, ticketId: string | null = null): { bytes: number; slots: number; ticketHolds: boolean } {
    const r = stmt(this.db,
      `SELECT coalesce(sum(bytes), 0) AS bytes,
              count(DISTINCT CASE WHEN completion_slot = 1 THEN coalesce(ticket_id, id) END) AS slots,
              coalesce(max(completion_slot = 1 AND ticket_id = ?), 0) AS mine
         FROM share_reservations WHERE share_id = ? AND expires_at > ?`,
    ).get(ticketId, shareId, now) as { bytes: number; slots: number; mine: number };
    return { bytes: r.bytes, slots: r.slots, ticketHolds: r.mine === 1 };
  }

  insertReservation(r: { id: string; shareId: string; bytes: number; completionSlot: boolean; expiresAt: number; ticketId: string | null }): void {
    stmt(this.db, 'INSERT INTO share_reservations (id, share_id, bytes, completion_slot, expires_at, ticket_id) VALUES (?, ?, ?, ?, ?, ?)')
      .run(r.id, r.shareId, r.bytes, r.completionSlot ? 1 : 0, r.expiresAt, r.ticketId);
  }

  /**
   * A response's heartbeat: extends the reservation and records its progress; `slow` starts
   * (or keeps) the slow_since clock, progress stops it. False when the reservation is gone
   * or has given way, and the response must stop.
   */
  heartbeat(id: string, expiresAt: number, bytesSent: number, slow: boolean, now: number): boolean {
    return stmt(this.db,
      `UPDATE share_reservations SET expires_at = ?, bytes_sent = ?, slow_since = CASE WHEN ? THEN coalesce(slow_since, ?) ELSE NULL END
        WHERE id = ? AND yielded = 0 AND expires_at > ?`,
    ).run(expiresAt, bytesSent, slow ? 1 : 0, now, id, now).changes === 1;
  }

  /**
   * Makes the share's reservations that have been slow since `slowBefore` or earlier give
   * way: they lose their completion slot and hold only the bytes they had sent. Their
   * responses see it at their next heartbeat and stop. Returns how many gave way.
   */
  yieldSlow(shareId: string, slowBefore: number, now: number): number {
    return stmt(this.db,
      `UPDATE share_reservations SET yielded = 1, completion_slot = 0, bytes = min(bytes, bytes_sent)
        WHERE share_id = ? AND yielded = 0 AND expires_at > ? AND slow_since IS NOT NULL AND slow_since <= ?`,
    ).run(shareId, now, slowBefore).changes;
  }

  /** True when this ticket's download of the share has been counted and the ticket has not expired. */
  ticketCounted(shareId: string, ticketId: string, now: number): boolean {
    return stmt(this.db, 'SELECT 1 FROM share_ticket_downloads WHERE share_id = ? AND ticket_id = ? AND expires_at > ?').get(shareId, this.countedTicketKey(shareId, ticketId), now) !== undefined;
  }

  /**
   * How a counted ticket is recorded: a keyed hash of the link and the ticket id, so a database
   * writer cannot record a ticket as counted (which would let an uncounted ticket of a used-up
   * link download again). The ticket's own signed expiry still bounds its repeats.
   */
  private countedTicketKey(shareId: string, ticketId: string): string {
    return this.keys.lookup(`counted ticket|${shareId}|${ticketId}`).toString('hex');
  }

  /**
   * Ends a reservation in one transaction: adds what was really sent, and one download when
   * the response completed while still holding its slot (not expired, not given way) and its
   * ticket's download was not counted already; that ticket is then recorded. Returns whether
   * a download was counted.
   */
  settle(id: string, shareId: string, bytesSent: number, completed: boolean, now: number, ticket: { id: string; expiresAt: number } | null): boolean {
    return this.db
      .transaction(() => {
        const row = stmt(this.db, 'SELECT completion_slot, yielded, expires_at FROM share_reservations WHERE id = ?').get(id) as
          | { completion_slot: number; yielded: number; expires_at: number }
          | undefined;
        stmt(this.db, 'DELETE FROM share_reservations WHERE id = ?').run(id);
        const holds = row !== undefined && row.completion_slot === 1 && row.yielded === 0 && row.expires_at > now;
        const count = completed && holds && !(ticket && this.ticketCounted(shareId, ticket.id, now));
        const current = this.byId(shareId);
        // Through write(): the counters are sealed, so resetting them by SQL is detected.
        if (current) this.write(shareId, { bytesServed: current.bytesServed + bytesSent, downloads: current.downloads + (count ? 1 : 0) });
        if (count && ticket) {
          stmt(this.db, 'INSERT OR REPLACE INTO share_ticket_downloads (share_id, ticket_id, expires_at) VALUES (?, ?, ?)').run(shareId, this.countedTicketKey(shareId, ticket.id), ticket.expiresAt);
        }
        return count;
      })
      .immediate();
  }

  /** Marks shares past their expiry and drops stale reservations; returns how many shares expired. */
  sweep(now: number): number {
    return this.db
      .transaction(() => {
        stmt(this.db, 'DELETE FROM share_reservations WHERE expires_at <= ?').run(now);
        stmt(this.db, 'DELETE FROM share_ticket_downloads WHERE expires_at <= ?').run(now);
        return stmt(this.db, 'UPDATE shares SET expired_at = ? WHERE expired_at IS NULL AND revoked_at IS NULL AND expires_at <= ?').run(now, now).changes;
      })
      .immediate();
  }
}
