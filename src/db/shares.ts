/**
 * Repository for share links and the download reservations against them. Links are found by
 * the keyed hash of their token (services/integrity.ts), and each row carries a MAC over its
 * file, owner, password and limits.
 */
import { shareMacFields, type IntegrityKeys } from '../services/integrity.js';
import { sql } from './kysely.js';
import { inTransaction, isPostgres, type Executor } from './database.js';

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
  /** A link to several files (share_files); fileId is then only the anchor row. */
  bundle: boolean;
  /** Purge the file once this link's last allowed download completed (absent: false). */
  deleteFileAfter?: boolean;
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
  bundle: number;
  delete_file_after: number;
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
  bundle: r.bundle === 1,
  deleteFileAfter: r.delete_file_after === 1,
});

const SELECTED = [
  'id',
  'file_id',
  'owner_id',
  'password_hash',
  'note',
  'created_at',
  'expires_at',
  'max_downloads',
  'downloads',
  'bytes_served',
  'revoked_at',
  'expired_at',
  'bundle',
  'delete_file_after',
] as const;

export class SharesRepo {
  constructor(
    private readonly db: Executor,
    private readonly keys: IntegrityKeys,
  ) {}

  /** Inserts a link with its MAC; `tokenHash` is the keyed lookup value of the token. */
  async insert(s: ShareRow & { tokenHash: Buffer }): Promise<void> {
    await this.db
      .insertInto('shares')
      .values({
        id: s.id,
        file_id: s.fileId,
        owner_id: s.ownerId,
        token_hash: s.tokenHash,
        password_hash: s.passwordHash,
        note: s.note,
        created_at: s.createdAt,
        expires_at: s.expiresAt,
        max_downloads: s.maxDownloads,
        bundle: s.bundle ? 1 : 0,
        delete_file_after: s.deleteFileAfter ? 1 : 0,
        row_mac: this.keys.rowMac('shares', shareMacFields(s)),
      })
      .execute();
  }

  /**
   * The link with this lookup value, only while its owner is an enabled user (the owner's
   * disabled flag is read in the same query, so a disabled owner's links stop at once);
   * `intact` is false when its file, owner, password or limits were changed without the key.
   */
  async byTokenHash(hash: Buffer): Promise<{ share: ShareRow; intact: boolean } | undefined> {
    const r = await this.db
      .selectFrom('shares as s')
      .innerJoin('users as u', 'u.id', 's.owner_id')
      .select([...SELECTED.map((c) => `s.${c}` as const), 's.row_mac'])
      .where('s.token_hash', '=', hash)
      .where('u.disabled', '=', 0)
      .executeTakeFirst();
    if (!r) return undefined;
    const share = toRow(r);
    return { share, intact: this.keys.rowMacMatches('shares', shareMacFields({ ...share, tokenHash: hash }), r.row_mac) };
  }

  async byId(id: string): Promise<ShareRow | undefined> {
    const r = await this.db.selectFrom('shares').select(SELECTED).where('id', '=', id).executeTakeFirst();
    return r && toRow(r);
  }

  /** The file's links: its own single-file links and every bundle that holds it (not a bundle merely anchored on it). */
  async listForFile(fileId: string): Promise<ShareRow[]> {
    const rows = await this.db
      .selectFrom('shares')
      .select(SELECTED)
      .where((eb) =>
        eb.or([
          eb.and([eb('file_id', '=', fileId), eb('bundle', '=', 0)]),
          eb('id', 'in', eb.selectFrom('share_files').select('share_id').where('file_id', '=', fileId)),
        ]),
      )
      .orderBy('created_at', 'desc')
      .orderBy('id')
      .execute();
    return rows.map(toRow);
  }

  /** Every share link the user created, newest first (for admins). */
  async listForOwner(ownerId: string): Promise<ShareRow[]> {
    const rows = await this.db.selectFrom('shares').select(SELECTED).where('owner_id', '=', ownerId).orderBy('created_at', 'desc').orderBy('id').execute();
    return rows.map(toRow);
  }

  /**
   * Revokes every live share of the owner; returns how many were revoked. Each through
   * write(), so the revocation is sealed: a raw UPDATE would leave the old MAC, which matches
   * again once a database writer clears revoked_at.
   */
  revokeAllForOwner(ownerId: string, now: number): Promise<number> {
    return this.revokeWhere('owner_id', ownerId, now);
  }

  /** Revokes every live share of a file (sealed, as above); returns how many were revoked. */
  revokeAllForFile(fileId: string, now: number): Promise<number> {
    return this.revokeWhere('file_id', fileId, now);
  }

  private revokeWhere(column: 'owner_id' | 'file_id', value: string, now: number): Promise<number> {
    return inTransaction(this.db, async (trx) => {
      const repo = new SharesRepo(trx, this.keys);
      // A file's links include the bundles that hold it.
      const ids =
        column === 'file_id'
          ? (await repo.listForFile(value)).filter((s) => s.revokedAt === null)
          : await trx.selectFrom('shares').select('id').where(column, '=', value).where('revoked_at', 'is', null).execute();
      let n = 0;
      for (const { id } of ids) if (await repo.write(id, { revokedAt: now })) n++;
      return n;
    });
  }

  /** Removes every share row of the owner (their reservations go with them); for deleting the user. */
  async deleteAllForOwner(ownerId: string): Promise<number> {
    const r = await this.db.deleteFrom('shares').where('owner_id', '=', ownerId).executeTakeFirst();
    return Number(r.numDeletedRows);
  }

  /** Revokes the owner's share; false if there is no such live share. */
  revoke(id: string, ownerId: string, now: number): Promise<boolean> {
    return inTransaction(this.db, async (trx) => {
      const repo = new SharesRepo(trx, this.keys);
      const current = await repo.byId(id);
      if (!current || current.ownerId !== ownerId || current.revokedAt !== null) return false;
      return repo.write(id, { revokedAt: now });
    });
  }

  /**
   * Writes changed counters or the revocation and re-seals the row, so clearing revoked_at or
   * resetting a counter by SQL makes the link fail its MAC (undoing a change then needs a saved
   * copy of the row from before it). A row whose MAC already fails keeps failing: it is
   * changed, never blessed. Call it inside a transaction (the read and the write belong together).
   */
  private async write(id: string, change: Partial<Pick<ShareRow, 'downloads' | 'bytesServed' | 'revokedAt'>>): Promise<boolean> {
    const r = await this.db.selectFrom('shares').select([...SELECTED, 'token_hash', 'row_mac']).where('id', '=', id).executeTakeFirst();
    if (!r) return false;
    const before = toRow(r);
    const intact = this.keys.rowMacMatches('shares', shareMacFields({ ...before, tokenHash: r.token_hash }), r.row_mac);
    const after = { ...before, ...change };
    const mac = intact ? this.keys.rowMac('shares', shareMacFields({ ...after, tokenHash: r.token_hash })) : r.row_mac;
    const u = await this.db
      .updateTable('shares')
      .set({ downloads: after.downloads, bytes_served: after.bytesServed, revoked_at: after.revokedAt, row_mac: mac })
      .where('id', '=', id)
      .executeTakeFirst();
    return Number(u.numUpdatedRows) === 1;
  }

  /**
   * Bytes and completion slots held by unexpired reservations. Responses under one ticket
   * share one slot (they are one recipient's one download); `ticketHolds` says whether
   * `ticketId` already holds one.
   */
  async inFlight(shareId: string, now: number, ticketId: string | null = null): Promise<{ bytes: number; slots: number; ticketHolds: boolean }> {
    const { rows } = await sql<{ bytes: number; slots: number; mine: number }>`
      SELECT coalesce(sum(bytes), 0) AS bytes,
             count(DISTINCT CASE WHEN completion_slot = 1 THEN coalesce(ticket_id, id) END) AS slots,
             coalesce(max(CASE WHEN completion_slot = 1 AND ticket_id = ${ticketId} THEN 1 ELSE 0 END), 0) AS mine
        FROM share_reservations WHERE share_id = ${shareId} AND expires_at > ${now}`.execute(this.db);
    const r = rows[0]!;
    return { bytes: Number(r.bytes), slots: Number(r.slots), ticketHolds: Number(r.mine) === 1 };
  }

  async insertReservation(r: { id: string; shareId: string; bytes: number; completionSlot: boolean; expiresAt: number; ticketId: string | null }): Promise<void> {
    await this.db
      .insertInto('share_reservations')
      .values({ id: r.id, share_id: r.shareId, bytes: r.bytes, completion_slot: r.completionSlot ? 1 : 0, expires_at: r.expiresAt, ticket_id: r.ticketId })
      .execute();
  }

  /**
   * A response's heartbeat: extends the reservation and records its progress; `slow` starts
   * (or keeps) the slow_since clock, progress stops it. False when the reservation is gone
   * or has given way, and the response must stop.
   */
  async heartbeat(id: string, expiresAt: number, bytesSent: number, slow: boolean, now: number): Promise<boolean> {
    const u = await this.db
      .updateTable('share_reservations')
      .set((eb) => ({ expires_at: expiresAt, bytes_sent: bytesSent, slow_since: slow ? eb.fn.coalesce('slow_since', eb.val(now)) : null }))
      .where('id', '=', id)
      .where('yielded', '=', 0)
      .where('expires_at', '>', now)
      .executeTakeFirst();
    return Number(u.numUpdatedRows) === 1;
  }

  /**
   * Makes the share's reservations that have been slow since `slowBefore` or earlier give
   * way: they lose their completion slot and hold only the bytes they had sent. Their
   * responses see it at their next heartbeat and stop. Returns how many gave way.
   */
  async yieldSlow(shareId: string, slowBefore: number, now: number): Promise<number> {
    // Two-argument min() is SQLite's spelling of LEAST().
    const least = isPostgres(this.db) ? sql`least(bytes, bytes_sent)` : sql`min(bytes, bytes_sent)`;
    const r = await sql`UPDATE share_reservations SET yielded = 1, completion_slot = 0, bytes = ${least}
        WHERE share_id = ${shareId} AND yielded = 0 AND expires_at > ${now} AND slow_since IS NOT NULL AND slow_since <= ${slowBefore}`.execute(this.db);
    return Number(r.numAffectedRows ?? 0n);
  }

  /** True when this ticket's download of the share has been counted and the ticket has not expired. */
  async ticketCounted(shareId: string, ticketId: string, now: number): Promise<boolean> {
    const r = await this.db
      .selectFrom('share_ticket_downloads')
      .select('share_id')
      .where('share_id', '=', shareId)
      .where('ticket_id', '=', this.countedTicketKey(shareId, ticketId))
      .where('expires_at', '>', now)
      .executeTakeFirst();
    return r !== undefined;
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
  settle(
    id: string,
    shareId: string,
    bytesSent: number,
    completed: boolean,
    now: number,
    ticket: { id: string; expiresAt: number } | null,
    /** Called inside the transaction when a download was counted, with the share as it now is (notifications). */
    onCounted?: (trx: Executor, share: ShareRow) => Promise<void>,
  ): Promise<boolean> {
    return inTransaction(this.db, async (trx) => {
      const repo = new SharesRepo(trx, this.keys);
      const row = await trx.selectFrom('share_reservations').select(['completion_slot', 'yielded', 'expires_at']).where('id', '=', id).executeTakeFirst();
      await trx.deleteFrom('share_reservations').where('id', '=', id).execute();
      const holds = row !== undefined && row.completion_slot === 1 && row.yielded === 0 && row.expires_at > now;
      const count = completed && holds && !(ticket && (await repo.ticketCounted(shareId, ticket.id, now)));
      const current = await repo.byId(shareId);
      // Through write(): the counters are sealed, so resetting them by SQL is detected.
      if (current) await repo.write(shareId, { bytesServed: current.bytesServed + bytesSent, downloads: current.downloads + (count ? 1 : 0) });
      if (count && ticket) {
        await trx
          .insertInto('share_ticket_downloads')
          .values({ share_id: shareId, ticket_id: repo.countedTicketKey(shareId, ticket.id), expires_at: ticket.expiresAt })
          .onConflict((oc) => oc.columns(['share_id', 'ticket_id']).doUpdateSet({ expires_at: ticket.expiresAt }))
          .execute();
      }
      if (count && current && onCounted) await onCounted(trx, { ...current, bytesServed: current.bytesServed + bytesSent, downloads: current.downloads + 1 });
      return count;
    });
  }

  /** Marks shares past their expiry and drops stale reservations; returns how many shares expired. */
  sweep(now: number): Promise<number> {
    return inTransaction(this.db, async (trx) => {
      await trx.deleteFrom('share_reservations').where('expires_at', '<=', now).execute();
      await trx.deleteFrom('share_ticket_downloads').where('expires_at', '<=', now).execute();
      const r = await trx
        .updateTable('shares')
        .set({ expired_at: now })
        .where('expired_at', 'is', null)
        .where('revoked_at', 'is', null)
        .where('expires_at', '<=', now)
        .executeTakeFirst();
      return Number(r.numUpdatedRows);
    });
  }
}
