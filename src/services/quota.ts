/**
 * Storage quotas that count bytes in flight across every instance on the database: an upload
 * reserves as it streams, in a `quota_leases` row, so parallel uploads through different
 * instances cannot together overshoot.
 *
 * A user's usage is the database sum over their file rows plus the live leases of their uploads
 * still streaming. Nothing is kept as a running total or in one process's memory: the check
 * "usage + other leases + n <= limit" and the reservation are one transaction in the shared
 * database (SQLite: BEGIN IMMEDIATE; PostgreSQL: serialised by the transaction advisory lock),
 * and the commit (insert the file rows, delete the lease) is another, so no check of any
 * instance sees bytes counted twice or nowhere.
 *
 * Cost per chunk: a lease reserves ahead (at most RESERVE_AHEAD bytes, and at most a quarter of
 * the headroom left, so parallel uploads near the limit are not refused for another's unused
 * reserve) and touches the database again only when the upload outgrows its reservation. A
 * timer renews the lease's expiry while it is held; a lease of an instance that died (SIGKILL)
 * stops counting once its expiry passes, after at most the lease time.
 */
import type { Database, Trx } from '../db/database.js';
import { AppError } from '../errors.js';
import { newId } from './ids.js';

/** How far ahead of the bytes received a lease reserves (bounds database hits per upload). */
export const RESERVE_AHEAD = 4 * 1024 * 1024;
/** Default lifetime of a lease that is not renewed (QUOTA_LEASE_SECONDS). */
export const DEFAULT_LEASE_MS = 120_000;

export interface QuotaDeps {
  db: Database;
  /** Default quota when a user has no setting of their own; null for unlimited. */
  defaultQuota?: number | null;
  /** Lease lifetime without renewal (ms); renewed every third of it while held. */
  leaseMs?: number;
  now?: () => number;
}

function exceeded(limit: number): AppError {
  return new AppError('quota_exceeded', `this upload would exceed your storage quota of ${limit} bytes`, {}, true);
}

/** One request's hold on a user's quota: a row in quota_leases once it reserves anything. */
export class QuotaLease {
  readonly id = newId();
  /** Bytes received so far (what the upload really needs). */
  private used = 0;
  /** Bytes the lease row holds (>= used while the row exists). */
  private reserved = 0;
  private timer: NodeJS.Timeout | undefined;
  private done = false;

  constructor(
    private readonly quota: QuotaService,
    readonly userId: string,
    /** Read once per request, not per chunk. */
    private readonly limit: number | null,
  ) {}

  /** Adds streamed bytes; throws quota_exceeded (closing the connection) when over the limit. */
  async grow(bytes: number): Promise<void> {
    const need = this.used + bytes;
    if (this.limit !== null && need > this.reserved) await this.reserveOrRelease(need, true);
    this.used = need;
  }

  /**
   * Reserves `bytes` more up front when they fit (e.g. from Content-Length), so the upload's
   * chunks then need no database step; throws quota_exceeded when they would not fit.
   */
  async check(bytes: number): Promise<void> {
    if (this.limit === null) return;
    const need = this.used + bytes;
    if (need > this.reserved) await this.reserveOrRelease(need, false);
  }

  /** A refused upload ends: its lease goes before the refusal is answered, so a retry right after does not meet it. */
  private async reserveOrRelease(need: number, ahead: boolean): Promise<void> {
    try {
      await this.reserve(need, ahead);
    } catch (err) {
      await this.release();
      throw err;
    }
  }

  /** One transaction: check the headroom against files and other live leases, then hold `need` (plus some ahead). */
  private async reserve(need: number, ahead: boolean): Promise<void> {
    const limit = this.limit!;
    const q = this.quota;
    const now = q.now();
    await q.db.transaction(async (trx) => {
      const taken = (await q.usageIn(trx, this.userId)) + (await q.leasedIn(trx, this.userId, now, this.id));
      const free = limit - taken;
      if (need > free) throw exceeded(limit);
      const extra = ahead ? Math.min(RESERVE_AHEAD, Math.floor((free - need) / 4)) : 0;
      const bytes = need + Math.max(0, extra);
      const expires = now + q.leaseMs;
      await trx
        .insertInto('quota_leases')
        .values({ id: this.id, user_id: this.userId, bytes, expires_at: expires })
        .onConflict((oc) => oc.column('id').doUpdateSet({ bytes, expires_at: expires }))
        .execute();
      this.reserved = bytes;
    });
    this.done = false;
    this.timer ??= setInterval(() => void this.renew(), Math.max(1000, Math.floor(q.leaseMs / 3))).unref();
  }

  /** Moves the lease's expiry on (one statement), so a live upload's bytes keep counting. */
  private async renew(): Promise<void> {
    try {
      await this.quota.db.kysely.updateTable('quota_leases').set({ expires_at: this.quota.now() + this.quota.leaseMs }).where('id', '=', this.id).execute();
    } catch {
      /* the next renewal tries again; meanwhile the lease may lapse, and the commit re-checks */
    }
  }

  /**
   * Inside the transaction that inserted the upload's file rows, after the inserts: checks that
   * the files (the new rows among them) and the other live leases fit the limit (this lease may
   * have lapsed while its instance stalled, and others used the room) and deletes the lease, so
   * from this commit on the bytes count once, as rows. Throws quota_exceeded when they do not fit.
   */
  async commitIn(trx: Trx): Promise<void> {
    if (this.limit !== null) {
      const taken = (await this.quota.usageIn(trx, this.userId)) + (await this.quota.leasedIn(trx, this.userId, this.quota.now(), this.id));
      if (taken > this.limit) throw exceeded(this.limit);
    }
    await trx.deleteFrom('quota_leases').where('id', '=', this.id).execute();
  }

  /** Called once commitIn's transaction committed: nothing is held any more. */
  committed(): void {
    this.stop();
    this.used = 0;
    this.reserved = 0;
    this.done = true;
  }

  /** Gives back whatever is still held (call in a finally); never throws. */
  async release(): Promise<void> {
    this.stop();
    if (this.done || this.reserved === 0) return;
    this.done = true;
    this.used = 0;
    this.reserved = 0;
    try {
      await this.quota.db.kysely.deleteFrom('quota_leases').where('id', '=', this.id).execute();
    } catch {
      /* the row lapses at its expiry and the sweep removes it */
    }
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

export class QuotaService {
  readonly db: Database;
  readonly leaseMs: number;
  readonly now: () => number;

  constructor(private readonly deps: QuotaDeps) {
    this.db = deps.db;
    this.leaseMs = deps.leaseMs ?? DEFAULT_LEASE_MS;
    this.now = deps.now ?? Date.now;
  }

  /** A new hold on the user's quota for one request; the limit is read now. */
  async lease(userId: string): Promise<QuotaLease> {
    return new QuotaLease(this, userId, await this.limitOf(userId));
  }

  /** Bytes a user holds: the database sum over their files plus their open resumable uploads' declared lengths. */
  usageOf(userId: string): Promise<number> {
    return this.usageIn(this.db.kysely, userId);
  }

  /** @internal the sum over the user's file rows, read through `db` (a transaction or the database). */
  async usageIn(db: Trx | Database['kysely'], userId: string): Promise<number> {
    const r = await db.selectFrom('files').select((eb) => eb.fn.coalesce(eb.fn.sum<number>('size'), eb.lit(0)).as('n')).where('owner_id', '=', userId).executeTakeFirstOrThrow();
    // Open resumable uploads hold their whole declared length from creation until they become
    // a file row (one transaction swaps one for the other) or expire: bytes in progress count.
    const open = await db
      .selectFrom('uploads')
      .select((eb) => eb.fn.coalesce(eb.fn.sum<number>('length'), eb.lit(0)).as('n'))
      .where('owner_id', '=', userId)
      .where('file_id', 'is', null)
      .where('expires_at', '>', this.now())
      .executeTakeFirstOrThrow();
    return Number(r.n) + Number(open.n);
  }

  /** @internal bytes held by the user's live leases (other than `except`), on any instance. */
  async leasedIn(db: Trx | Database['kysely'], userId: string, now: number, except?: string): Promise<number> {
    let q = db
      .selectFrom('quota_leases')
      .select((eb) => eb.fn.coalesce(eb.fn.sum<number>('bytes'), eb.lit(0)).as('n'))
      .where('user_id', '=', userId)
      .where('expires_at', '>', now);
    if (except) q = q.where('id', '!=', except);
    return Number((await q.executeTakeFirstOrThrow()).n);
  }

  /** Bytes of a user's uploads still streaming, on every instance (their live leases). */
  inFlightOf(userId: string): Promise<number> {
    return this.leasedIn(this.db.kysely, userId, this.now());
  }

  /** The user's effective quota in bytes, or null for unlimited. */
  async limitOf(userId: string): Promise<number | null> {
    const row = await this.db.kysely.selectFrom('users').select('quota_bytes').where('id', '=', userId).executeTakeFirst();
    return row?.quota_bytes ?? this.deps.defaultQuota ?? null;
  }

  /** Deletes leases past their expiry (housekeeping: they no longer count anyway); returns how many. */
  async sweep(): Promise<number> {
    const r = await this.db.kysely.deleteFrom('quota_leases').where('expires_at', '<=', this.now()).executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}
