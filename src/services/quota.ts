/**
 * Storage quotas that count bytes in flight: concurrent uploads reserve as they stream, so
 * parallel uploads cannot together overshoot.
 *
 * A user's usage is always the database sum over their file rows plus the bytes of their
 * uploads still streaming. Committed usage is never kept as a running total: such a total
 * drifted (it was lazily loaded from the database after an upload's row was already
 * inserted, then had that upload added again, so the first upload after every restart
 * counted twice). The sum is only memoised while the database provably has not changed
 * (see QuotaDeps.dbVersion), which keeps the per-chunk check cheap without a second truth.
 *
 * Atomicity (within this process): a check (database sum + in flight) and the commit (row
 * insert, then release of the in-flight bytes) each run under one per-process lock
 * (QuotaService.exclusive), so no other upload's check can run between the parts of either
 * and see bytes counted twice or nowhere. The database queries are asynchronous, so the event
 * loop alone no longer gives this.
 */
import { AppError } from '../errors.js';

export interface QuotaDeps {
  /** Committed bytes of a user: the sum over their file rows in the database. */
  loadUsage(userId: string): Promise<number>;
  /** The user's quota in bytes, or null for unlimited. */
  limitOf(userId: string): Promise<number | null>;
  /**
   * A value that changes whenever the database may have changed, through this connection or
   * any other; while it is unchanged a memoised sum is still the database's sum. Without it
   * every check runs the sum.
   */
  dbVersion?(): Promise<string | undefined>;
}

/** One request's hold on a user's quota. */
export class QuotaLease {
  private held = 0;

  constructor(
    private readonly quota: QuotaService,
    readonly userId: string,
    /** Read once per request, not per chunk. */
    private readonly limit: number | null,
  ) {}

  /** Adds streamed bytes; throws quota_exceeded (closing the connection) when over the limit. */
  async grow(bytes: number): Promise<void> {
    await this.quota.take(this.userId, bytes, this.limit);
    this.held += bytes;
  }

  /** Refuses up front when `bytes` more would not fit (e.g. from Content-Length); holds nothing. */
  async check(bytes: number): Promise<void> {
    if (this.limit === null) return;
    const limit = this.limit;
    await this.quota.exclusive(async () => {
      if ((await this.quota.usageOf(this.userId)) + this.quota.inFlightOf(this.userId) + bytes > limit) {
        throw new AppError('quota_exceeded', `this upload would exceed your storage quota of ${limit} bytes`, {}, true);
      }
    });
  }

  /**
   * Stops counting `bytes` as in flight because their row is now in the database. Call it
   * inside the same QuotaService.exclusive() run as the insert, so the bytes are never
   * counted twice or nowhere.
   */
  commit(bytes: number): void {
    const n = Math.min(bytes, this.held);
    this.quota.release(this.userId, n);
    this.held -= n;
  }

  /** Gives back whatever is still held (call in a finally). */
  release(): void {
    if (this.held) this.quota.release(this.userId, this.held);
    this.held = 0;
  }
}

export class QuotaService {
  private readonly inFlight = new Map<string, number>();
  /** Database sums, valid only for the database version they were read at. */
  private memo = new Map<string, number>();
  private memoVersion: string | undefined;
  /** Tail of the per-process queue of quota checks and commits (see exclusive()). */
  private lock: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: QuotaDeps) {}

  /**
   * Runs `fn` after every check or commit queued before it and before any queued after it:
   * a check's sum and in-flight read, and a commit's insert and release, each stay one step.
   * Only database work runs inside (never the upload's own stream).
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => {});
    return run;
  }

  /** A new hold on the user's quota for one request; the limit is read now. */
  async lease(userId: string): Promise<QuotaLease> {
    return new QuotaLease(this, userId, await this.deps.limitOf(userId));
  }

  /** Committed bytes of a user: exactly the database sum over their files. */
  async usageOf(userId: string): Promise<number> {
    const version = await this.deps.dbVersion?.();
    if (version === undefined) return this.deps.loadUsage(userId);
    if (version !== this.memoVersion) {
      this.memo = new Map();
      this.memoVersion = version;
    }
    let u = this.memo.get(userId);
    if (u === undefined) {
      u = await this.deps.loadUsage(userId);
      // Only if no other read replaced the memo meanwhile (it would hold a newer version).
      if (this.memoVersion === version) this.memo.set(userId, u);
    }
    return u;
  }

  /** Bytes of a user's uploads still streaming. */
  inFlightOf(userId: string): number {
    return this.inFlight.get(userId) ?? 0;
  }

  /** The user's effective quota in bytes, or null for unlimited. */
  limitOf(userId: string): Promise<number | null> {
    return this.deps.limitOf(userId);
  }

  /** @internal used by QuotaLease: reserves `bytes` more in flight, or throws quota_exceeded. */
  async take(userId: string, bytes: number, limit: number | null): Promise<void> {
    if (limit === null) {
      this.inFlight.set(userId, (this.inFlight.get(userId) ?? 0) + bytes);
      return;
    }
    await this.exclusive(async () => {
      const usage = await this.usageOf(userId);
      // Read after the sum, in the same step: nothing can commit in between (exclusive).
      const flying = (this.inFlight.get(userId) ?? 0) + bytes;
      if (usage + flying > limit) {
        throw new AppError('quota_exceeded', `this upload would exceed your storage quota of ${limit} bytes`, {}, true);
      }
      this.inFlight.set(userId, flying);
    });
  }

  /** @internal used by QuotaLease: stops counting `bytes` as in flight. */
  release(userId: string, bytes: number): void {
    const flying = (this.inFlight.get(userId) ?? 0) - bytes;
    if (flying > 0) this.inFlight.set(userId, flying);
    else this.inFlight.delete(userId);
  }
}
