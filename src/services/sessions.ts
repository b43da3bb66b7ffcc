/**
 * Browser sessions as their owner and the admins see them: list, end one, end all. The rows
 * are written by the session store (express-session + connect-session-knex, see
 * http/pages/session.ts); this module only reads and deletes them. A row's key is the keyed
 * hash of the cookie's session id (HMAC(k_lookup, SHA-256(id)), services/integrity.ts), so
 * neither the database nor these pages ever hold a working session id, and nobody without the
 * master key can compute the row of an id they chose. Each row's `sess` carries a seal (a MAC
 * over the row key, the user and the sign-in time), so a row cannot be pointed at another user.
 */
import type { Db } from '../db/database.js';
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
  db: Db;
  integrity: IntegrityKeys;
  idleMs: number;
  maxMs: number;
  now?: () => number;
}

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
  listForUser(uid: string): SessionView[] {
    const now = this.now();
    const rows = this.deps.db
      .prepare(`SELECT sid, sess, expired FROM sessions WHERE json_extract(sess, '$.uid') = ? AND expired > ?`)
      .all(uid, new Date(now).toISOString()) as { sid: string; sess: string; expired: string }[];
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
  end(uid: string, key: string): boolean {
    return this.deps.db.prepare(`DELETE FROM sessions WHERE sid = ? AND json_extract(sess, '$.uid') = ?`).run(key, uid).changes === 1;
  }

  /** Ends every session of the user except `exceptKey`; returns how many ended. */
  endAllForUser(uid: string, exceptKey: string | null = null): number {
    return this.deps.db
      .prepare(`DELETE FROM sessions WHERE json_extract(sess, '$.uid') = ? AND sid IS NOT ?`)
      .run(uid, exceptKey).changes;
  }

  /** Deletes sessions past their idle or absolute timeout (the periodic sweep). */
  sweep(): number {
    const now = this.now();
    return this.deps.db
      .prepare(`DELETE FROM sessions WHERE expired <= ? OR coalesce(json_extract(sess, '$.createdAt'), 0) < ?`)
      .run(new Date(now).toISOString(), now - this.deps.maxMs).changes;
  }
}
