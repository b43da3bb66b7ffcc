/**
 * Browser sessions as their owner and the admins see them: list, end one, end all. The rows
 * are written by the session store (express-session with our store over db/sessions.ts, see
 * http/pages/session.ts); this module only reads and deletes them. A row's key is the keyed
 * hash of the cookie's session id (HMAC(k_lookup, SHA-256(id)), services/integrity.ts), so
 * neither the database nor these pages ever hold a working session id, and nobody without the
 * master key can compute the row of an id they chose. Each row's `sess` carries a seal (a MAC
 * over the row key, the user and the sign-in time), so a row cannot be pointed at another user.
 */
import { sql } from '../db/kysely.js';
import { isPostgres, type Database, type Executor } from '../db/database.js';
import { sealSession, sessionSealMatches, type IntegrityKeys } from './integrity.js';

/** What the store keeps in `sess` besides express-session's own cookie data. */
export interface SessionFacts {
  uid?: string;
  /** Sign-in time (ms): the absolute timeout counts from here. */
  createdAt?: number;
  ip?: string | null;
  ua?: string | null;
  /** MAC over the store key, uid and createdAt (hex), written by the store wrapper. */
  seal?: string;
}

export interface SessionView {
  /** Public handle of the session: the keyed hash of its id (never the id itself). */
  key: string;
  createdAt: number;
  lastSeenAt: number;
  ip: string | null;
  userAgent: string | null;
}

export interface WebSessionsDeps {
  db: Database;
  integrity: IntegrityKeys;
  idleMs: number;
  maxMs: number;
  now?: () => number;
}

// The user and sign-in time inside `sess` (JSON text), as each dialect reads JSON; both forms are indexed.
const uidOf = (db: Executor) => (isPostgres(db) ? sql<string>`((sess::json)->>'uid')` : sql<string>`json_extract(sess, '$.uid')`);
const createdAtOf = (db: Executor) =>
  isPostgres(db) ? sql<number>`coalesce(((sess::json)->>'createdAt')::bigint, 0)` : sql<number>`coalesce(json_extract(sess, '$.createdAt'), 0)`;

/** Reads and ends browser sessions in the `sessions` table, by user. */
export class WebSessions {
  private readonly now: () => number;

  constructor(private readonly deps: WebSessionsDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** The store key for a cookie's session id (keyed: needs the master key to compute). */
  keyOf(sid: string): string {
    return this.deps.integrity.lookup(sid).toString('hex');
  }

  /** The cookie signing secret (from the integrity root: the same before and after a key rotation). */
  cookieSecret(): Buffer {
    return this.deps.integrity.sessionCookieKey;
  }

  /** The seal to store with a session's data under `key`. */
  seal(key: string, sess: SessionFacts): string {
    return sealSession(this.deps.integrity, key, sess);
  }

  /** True when stored session data carries the seal for `key`. */
  sealMatches(key: string, sess: SessionFacts): boolean {
    return sessionSealMatches(this.deps.integrity, key, sess);
  }

  /** The user's live sessions, most recently used first. */
  async listForUser(uid: string): Promise<SessionView[]> {
    const now = this.now();
    const rows = await this.deps.db.kysely
      .selectFrom('sessions')
      .select(['sid', 'sess', 'expired'])
      .where(uidOf(this.deps.db.kysely), '=', uid)
      .where('expired', '>', new Date(now).toISOString())
      .execute();
    const out: SessionView[] = [];
    for (const r of rows) {
      const s = JSON.parse(r.sess) as SessionFacts;
      // A row without a valid seal was written without the key: it cannot sign anyone in.
      if (!this.sealMatches(r.sid, s)) continue;
      const createdAt = s.createdAt ?? 0;
      if (now - createdAt > this.deps.maxMs) continue;
      // The store pushes `expired` to (last request + idle timeout) on every request.
      out.push({ key: r.sid, createdAt, lastSeenAt: Date.parse(r.expired) - this.deps.idleMs, ip: s.ip ?? null, userAgent: s.ua ?? null });
    }
    return out.sort((a, b) => b.lastSeenAt - a.lastSeenAt);
  }

  /** Ends one of the user's sessions; false when there is no such session of theirs. */
  async end(uid: string, key: string): Promise<boolean> {
    const r = await this.deps.db.kysely.deleteFrom('sessions').where('sid', '=', key).where(uidOf(this.deps.db.kysely), '=', uid).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }

  /** Ends every session of the user except `exceptKey`; returns how many ended. */
  async endAllForUser(uid: string, exceptKey: string | null = null): Promise<number> {
    let q = this.deps.db.kysely.deleteFrom('sessions').where(uidOf(this.deps.db.kysely), '=', uid);
    if (exceptKey !== null) q = q.where('sid', '!=', exceptKey);
    return Number((await q.executeTakeFirst()).numDeletedRows);
  }

  /** Deletes sessions past their idle or absolute timeout (the periodic sweep). */
  async sweep(): Promise<number> {
    const now = this.now();
    const r = await this.deps.db.kysely
      .deleteFrom('sessions')
      .where((eb) => eb.or([eb('expired', '<=', new Date(now).toISOString()), eb(createdAtOf(this.deps.db.kysely), '<', now - this.deps.maxMs)]))
      .executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}
