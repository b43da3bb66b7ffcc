/**
 * Repository for the notification outbox: one row per delivery of an event over one channel.
 * Rows are inserted inside the transaction of the change they describe; workers claim them
 * with a lease in ONE statement, so two instances never hold the same row at once, and a
 * crashed claimer's lease simply runs out.
 */
import { sql } from './kysely.js';
import { isPostgres, type Executor } from './database.js';
import type { NotificationOutboxTable } from './schema.js';

export interface OutboxRow {
  id: string;
  eventId: string;
  type: string;
  userId: string | null;
  channel: 'email' | 'webhook';
  target: string;
  payload: string;
  sealed: Buffer | null;
  status: 'pending' | 'sent' | 'failed';
  attempts: number;
  nextAttemptAt: number;
  leaseOwner: string | null;
  leaseUntil: number | null;
  lastError: string | null;
  lastAttemptAt: number | null;
  createdAt: number;
  deliveredAt: number | null;
}

type Raw = { [K in keyof NotificationOutboxTable]: NotificationOutboxTable[K] extends import('kysely').Generated<infer T> ? T : NotificationOutboxTable[K] };

const toRow = (r: Raw): OutboxRow => ({
  id: r.id,
  eventId: r.event_id,
  type: r.type,
  userId: r.user_id,
  channel: r.channel,
  target: r.target,
  payload: r.payload,
  sealed: r.sealed === null ? null : Buffer.from(r.sealed),
  status: r.status,
  attempts: Number(r.attempts),
  nextAttemptAt: Number(r.next_attempt_at),
  leaseOwner: r.lease_owner,
  leaseUntil: r.lease_until === null ? null : Number(r.lease_until),
  lastError: r.last_error,
  lastAttemptAt: r.last_attempt_at === null ? null : Number(r.last_attempt_at),
  createdAt: Number(r.created_at),
  deliveredAt: r.delivered_at === null ? null : Number(r.delivered_at),
});

/** A new delivery, as emitters hand it in. */
export interface NewDelivery {
  id: string;
  eventId: string;
  type: string;
  userId: string | null;
  channel: 'email' | 'webhook';
  target: string;
  payload: string;
  sealed: Buffer | null;
  createdAt: number;
}

export class OutboxRepo {
  constructor(private readonly db: Executor) {}

  /** Inserts deliveries; one already present for the same event, channel and target is kept (emitting twice sends once). */
  async insert(rows: NewDelivery[]): Promise<void> {
    for (const d of rows) {
      await this.db
        .insertInto('notification_outbox')
        .values({
          id: d.id,
          event_id: d.eventId,
          type: d.type,
          user_id: d.userId,
          channel: d.channel,
          target: d.target,
          payload: d.payload,
          sealed: d.sealed,
          next_attempt_at: d.createdAt,
          created_at: d.createdAt,
        })
        .onConflict((oc) => oc.columns(['event_id', 'channel', 'target']).doNothing())
        .execute();
    }
  }

  /**
   * Claims up to `limit` due rows for `owner` until now + leaseMs, in one statement. The
   * conditions are repeated on the outer UPDATE: on PostgreSQL a row another claimer updated
   * meanwhile is re-checked against them (and skipped, its lease being live), and SKIP LOCKED
   * keeps claimers from queueing behind each other; on SQLite the statement is serialised.
   */
  async claim(owner: string, now: number, leaseMs: number, limit: number): Promise<OutboxRow[]> {
    const lockClause = isPostgres(this.db) ? sql`FOR UPDATE SKIP LOCKED` : sql``;
    const r = await sql<Raw>`
      UPDATE notification_outbox
         SET lease_owner = ${owner}, lease_until = ${now + leaseMs}, attempts = attempts + 1, last_attempt_at = ${now}
       WHERE id IN (SELECT id FROM notification_outbox
                     WHERE status = 'pending' AND next_attempt_at <= ${now} AND (lease_until IS NULL OR lease_until <= ${now})
                     ORDER BY next_attempt_at LIMIT ${limit} ${lockClause})
         AND status = 'pending' AND (lease_until IS NULL OR lease_until <= ${now})
      RETURNING *`.execute(this.db);
    return r.rows.map(toRow);
  }

  /** Records a delivery; only the lease holder can (a row re-claimed after a lapse belongs to the new holder). */
  async markSent(id: string, owner: string, now: number): Promise<boolean> {
    const r = await this.db
      .updateTable('notification_outbox')
      .set({ status: 'sent', delivered_at: now, lease_owner: null, lease_until: null, sealed: null, last_error: null })
      .where('id', '=', id)
      .where('lease_owner', '=', owner)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Records a failed attempt: tried again at `nextAt`, or given up for good when `nextAt` is null. */
  async markFailed(id: string, owner: string, error: string, nextAt: number | null): Promise<boolean> {
    const r = await this.db
      .updateTable('notification_outbox')
      .set(
        nextAt === null
          ? { status: 'failed', lease_owner: null, lease_until: null, sealed: null, last_error: error }
          : { next_attempt_at: nextAt, lease_owner: null, lease_until: null, last_error: error },
      )
      .where('id', '=', id)
      .where('lease_owner', '=', owner)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** The newest deliveries of a user (or of the admin stream: userId null) over one channel. */
  async recent(userId: string | null, channel: 'email' | 'webhook', target: string | null, limit = 20): Promise<OutboxRow[]> {
    let q = this.db.selectFrom('notification_outbox').selectAll().where('channel', '=', channel);
    q = userId === null ? q.where('user_id', 'is', null) : q.where('user_id', '=', userId);
    if (target !== null) q = q.where('target', '=', target);
    const rows = await q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute();
    return rows.map((r) => toRow(r as Raw));
  }

  /** Deliveries of the given events (the link list shows how each email went). */
  async byEvents(eventIds: string[]): Promise<OutboxRow[]> {
    if (eventIds.length === 0) return [];
    const rows = await this.db.selectFrom('notification_outbox').selectAll().where('event_id', 'in', eventIds).execute();
    return rows.map((r) => toRow(r as Raw));
  }
}
