/**
 * Browser sessions as their owner and the admins see them: list, end one, end all. The rows
 * are written by the session store (express-session + connect-session-knex, see
 * http/pages/session.ts); this module only reads and deletes them. A row's key is the
 * SHA-256 of the cookie's session id, so neither the database nor these pages ever hold a
 * working session id.
 */
import type { Db } from '../db/database.js';
import { secretHash } from './ids.js';

/** What the store keeps in `sess` besides express-session's own cookie data. */
export interface SessionFacts {
  uid?: string;
  /** Sign-in time (ms): the absolute timeout counts from here. */
  createdAt?: number;
  ip?: string | null;
  ua?: string | null;
}

export interface SessionView {
  /** Public handle of the session: the SHA-256 of its id (never the id itself). */
  key: string;
  createdAt: number;
  lastSeenAt: number;
  ip: string | null;
  userAgent: string | null;
}

export interface WebSessionsDeps {
  db: Db;
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

  /** The store key for a cookie's session id. */
  static keyOf(sid: string): string {
    return secretHash(sid).toString('hex');
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
