/**
 * An express-rate-limit Store on the shared database (table rate_limits), so every instance
 * counts into the same budget: guesses spread over N instances behind a load balancer still
 * hit the limit once. Each hit is one atomic upsert (INSERT ... ON CONFLICT DO UPDATE ...
 * RETURNING, the same SQL on SQLite and PostgreSQL); no transaction, so no lock is held.
 *
 * Keys hold client IP addresses and usernames: the row key is HMAC-SHA256 under a key derived
 * from the master key over the limiter's name and the key, so the database holds neither, and
 * nobody without the master key can tell which address or name a row counts.
 */
import { createHmac } from 'node:crypto';
import type { ClientRateLimitInfo, Options, Store } from 'express-rate-limit';
import type { Database } from '../db/database.js';
import { sql } from '../db/kysely.js';

/** Label of the HKDF sub-key of the master key that hashes rate-limit keys. */
export const RATE_LIMIT_KEY_LABEL = 'sfs/v1 rate limit keys';

export interface DbRateLimitStoreDeps {
  db: Database;
  /** HMAC key for row keys (derived from the master key). */
  hashKey: Buffer;
  now?: () => number;
}

/** Makes one store per limiter (express-rate-limit refuses a store shared by two limiters). */
export class DbRateLimitStores {
  private readonly now: () => number;

  constructor(private readonly deps: DbRateLimitStoreDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** The store for the limiter called `name` (its counters are apart from every other limiter's). */
  for(name: string): DbRateLimitStore {
    return new DbRateLimitStore(this.deps.db, this.deps.hashKey, name, this.now);
  }

  /** Deletes counters whose window has passed (housekeeping; an expired row counts nothing anyway). */
  async sweep(): Promise<number> {
    const r = await this.deps.db.kysely.deleteFrom('rate_limits').where('reset_at', '<=', this.now()).executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}

/** express-rate-limit's Store over the rate_limits table; counters are shared by every instance. */
export class DbRateLimitStore implements Store {
  /** Keys counted here count on every instance (not in this process only). */
  readonly localKeys = false;
  private windowMs = 60_000;

  constructor(
    private readonly db: Database,
    private readonly hashKey: Buffer,
    readonly prefix: string,
    private readonly now: () => number,
  ) {}

  /** Takes the window from the limiter's options. */
  init(options: Options): void {
    this.windowMs = options.windowMs;
  }

  private rowKey(key: string): Buffer {
    return createHmac('sha256', this.hashKey).update(`${this.prefix}\0${key}`, 'utf8').digest();
  }

  /** The client's hits in the current window, or undefined when none. */
  async get(key: string): Promise<ClientRateLimitInfo | undefined> {
    const row = await this.db.kysely.selectFrom('rate_limits').select(['hits', 'reset_at']).where('key', '=', this.rowKey(key)).where('reset_at', '>', this.now()).executeTakeFirst();
    return row ? { totalHits: Number(row.hits), resetTime: new Date(Number(row.reset_at)) } : undefined;
  }

  /** Counts one hit in one statement: a new window starts when the old one has passed. */
  async increment(key: string): Promise<ClientRateLimitInfo> {
    const now = this.now();
    const reset = now + this.windowMs;
    const row = await this.db.kysely
      .insertInto('rate_limits')
      .values({ key: this.rowKey(key), hits: 1, reset_at: reset })
      .onConflict((oc) =>
        oc.column('key').doUpdateSet({
          hits: sql<number>`CASE WHEN rate_limits.reset_at <= ${now} THEN 1 ELSE rate_limits.hits + 1 END`,
          reset_at: sql<number>`CASE WHEN rate_limits.reset_at <= ${now} THEN ${reset} ELSE rate_limits.reset_at END`,
        }),
      )
      .returning(['hits', 'reset_at'])
      .executeTakeFirstOrThrow();
    return { totalHits: Number(row.hits), resetTime: new Date(Number(row.reset_at)) };
  }

  /** Takes back one hit (a request that turned out not to count). */
  async decrement(key: string): Promise<void> {
    await this.db.kysely
      .updateTable('rate_limits')
      .set({ hits: sql<number>`hits - 1` })
      .where('key', '=', this.rowKey(key))
      .where('hits', '>', 0)
      .where('reset_at', '>', this.now())
      .execute();
  }

  /** Forgets the client's hits. */
  async resetKey(key: string): Promise<void> {
    await this.db.kysely.deleteFrom('rate_limits').where('key', '=', this.rowKey(key)).execute();
  }
}
