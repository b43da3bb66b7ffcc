/**
 * Storage quotas that count bytes in flight: concurrent uploads reserve as they stream, so
 * parallel uploads cannot together overshoot. Committed usage is kept in memory (loaded
 * from the database on first use) and updated on commit and delete, in the same tick as
 * the in-flight bytes are released, so there is no window where bytes are counted nowhere.
 */
import { AppError } from '../errors.js';

export interface QuotaDeps {
  /** Committed bytes of a user, from the database. */
  loadUsage(userId: string): number;
  /** The user's quota in bytes, or null for unlimited. */
  limitOf(userId: string): number | null;
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
  grow(bytes: number): void {
    this.quota.take(this.userId, bytes, this.limit);
    this.held += bytes;
  }

  /** Refuses up front when `bytes` more would not fit (e.g. from Content-Length); holds nothing. */
  check(bytes: number): void {
    if (this.limit !== null && this.quota.usageOf(this.userId) + this.quota.inFlightOf(this.userId) + bytes > this.limit) {
      throw new AppError('quota_exceeded', `this upload would exceed your storage quota of ${this.limit} bytes`, {}, true);
    }
  }

  /** Moves `bytes` from in flight to committed (call right after the rows are inserted). */
  commit(bytes: number): void {
    const n = Math.min(bytes, this.held);
    this.quota.settle(this.userId, n, bytes);
    this.held -= n;
  }

  /** Gives back whatever is still held (call in a finally). */
  release(): void {
    if (this.held) this.quota.settle(this.userId, this.held, 0);
    this.held = 0;
  }
}

export class QuotaService {
  private readonly usage = new Map<string, number>();
  private readonly inFlight = new Map<string, number>();

  constructor(private readonly deps: QuotaDeps) {}

  lease(userId: string): QuotaLease {
    return new QuotaLease(this, userId, this.deps.limitOf(userId));
  }

  /** Committed bytes of a user. */
  usageOf(userId: string): number {
    let u = this.usage.get(userId);
    if (u === undefined) {
      u = this.deps.loadUsage(userId);
      this.usage.set(userId, u);
    }
    return u;
  }

  /** Bytes of a user's uploads still streaming. */
  inFlightOf(userId: string): number {
    return this.inFlight.get(userId) ?? 0;
  }

  limitOf(userId: string): number | null {
    return this.deps.limitOf(userId);
  }

  /** @internal used by QuotaLease */
  take(userId: string, bytes: number, limit: number | null): void {
    const flying = (this.inFlight.get(userId) ?? 0) + bytes;
    if (limit !== null && this.usageOf(userId) + flying > limit) {
      throw new AppError('quota_exceeded', `this upload would exceed your storage quota of ${limit} bytes`, {}, true);
    }
    this.inFlight.set(userId, flying);
  }

  /** @internal moves bytes from in flight to committed */
  settle(userId: string, releasedInFlight: number, committed: number): void {
    const flying = (this.inFlight.get(userId) ?? 0) - releasedInFlight;
    if (flying > 0) this.inFlight.set(userId, flying);
    else this.inFlight.delete(userId);
    if (committed) this.usage.set(userId, this.usageOf(userId) + committed);
  }

  /** Records bytes that became a user's outside an upload (a transfer); a user not cached yet loads them from the database later. */
  added(userId: string, bytes: number): void {
    if (this.usage.has(userId)) this.usage.set(userId, this.usage.get(userId)! + bytes);
  }

  /** Records a deletion. */
  removed(userId: string, bytes: number): void {
    if (this.usage.has(userId)) this.usage.set(userId, Math.max(0, this.usage.get(userId)! - bytes));
  }
}
