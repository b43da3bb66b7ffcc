/**
 * Repository for the `sessions` table (migration 4): the rows the browser-session store
 * (http/pages/session.ts) reads and writes. `sid` is the row key the store computes (the keyed
 * hash of the cookie's session id, never the id), `sess` the session data as JSON text with
 * its seal, `expired` the idle deadline as ISO 8601 text (UTC, always `toISOString()`'s
 * fixed-width form, so text order is time order on both dialects). Every method is one
 * statement on the shared database: no cache, so a row deleted through one instance (sign-out,
 * revocation) is gone for every instance at the next request.
 */
import type { Executor } from './database.js';

export interface StoredSession {
  sess: string;
  expired: string;
}

export class SessionsRepo {
  constructor(private readonly db: Executor) {}

  /** The live row under `key` (expiry after `now`), or undefined. */
  async live(key: string, now: Date): Promise<StoredSession | undefined> {
    return this.db.selectFrom('sessions').select(['sess', 'expired']).where('sid', '=', key).where('expired', '>', now.toISOString()).executeTakeFirst();
  }

  /** Writes the row under `key` (insert or replace data and expiry) in one statement. */
  async put(key: string, sess: string, expires: Date): Promise<void> {
    const expired = expires.toISOString();
    await this.db
      .insertInto('sessions')
      .values({ sid: key, sess, expired })
      .onConflict((oc) => oc.column('sid').doUpdateSet({ sess, expired }))
      .execute();
  }

  /** Moves a live row's expiry only (its data is never rewritten here); false when there is no live row. */
  async touch(key: string, expires: Date, now: Date): Promise<boolean> {
    const r = await this.db
      .updateTable('sessions')
      .set({ expired: expires.toISOString() })
      .where('sid', '=', key)
      .where('expired', '>', now.toISOString())
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Deletes the row under `key` (sign-out); true when there was one. */
  async delete(key: string): Promise<boolean> {
    const r = await this.db.deleteFrom('sessions').where('sid', '=', key).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }
}
