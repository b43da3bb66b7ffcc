/**
 * Cookie sessions for the pages: express-session with a store of our own over the shared
 * database (db/sessions.ts, through the same Kysely layer as everything else), so the pages
 * work on SQLite and PostgreSQL alike and every instance on one database sees one set of
 * sessions.
 *
 * - Rows live in the `sessions` table of migration 4; the store never creates or sweeps
 *   anything itself (main.ts sweeps with the other housekeeping).
 * - The store is keyed by the keyed hash of the session id (WebSessions.keyOf), so the
 *   database holds no working session id and a row for a chosen id cannot be forged; each
 *   row's data is sealed (a MAC over key, user and sign-in time) and a row whose seal fails
 *   (or that is not even JSON) is treated as no session at all, and reported (onTampered).
 * - No cache in the process: each request reads its row, so a sign-out or a revocation (a row
 *   delete) through any instance ends the session on every instance at once.
 * - touch() moves the row's expiry only and never rewrites its data.
 * - Every store call reports to its callback exactly once, errors included.
 * - Cookies are HttpOnly, SameSite=Lax, and Secure (with a __Host- name) whenever the request
 *   is HTTPS, directly or through a trusted proxy; idle timeout through a rolling cookie and
 *   store expiry, absolute timeout checked on every request (see pages/auth.ts).
 */
import session, { Store, type SessionData } from 'express-session';
import type { RequestHandler } from 'express';
import type { Database } from '../../db/database.js';
import { SessionsRepo } from '../../db/sessions.js';
import type { WebSessions, SessionFacts } from '../../services/sessions.js';

declare module 'express-session' {
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type
  interface SessionData extends SessionFacts {}
}

type Callback = (err?: unknown) => void;

/**
 * Settles `p` into a Node-style callback, once: the two-handler then() calls exactly one of
 * them, so a failing query never also reports success (nor the reverse).
 */
function settle<T>(p: Promise<T>, cb: (err: unknown, value?: T) => void): void {
  p.then(
    (v) => cb(null, v),
    (err: unknown) => cb(err),
  );
}

/** express-session's store over the `sessions` table: rows keyed by the keyed hash of the id, data sealed. */
export class SealedSessionStore extends Store {
  private readonly repo: SessionsRepo;

  constructor(
    db: Database,
    private readonly sessions: WebSessions,
    private readonly onTampered: (key: string, uid: string | null) => void,
    private readonly idleMs: number,
    private readonly now: () => number = Date.now,
  ) {
    super();
    this.repo = new SessionsRepo(db.kysely);
  }

  override get(sid: string, cb: (err: unknown, s?: SessionData | null) => void): void {
    const key = this.sessions.keyOf(sid);
    settle(
      (async () => {
        const row = await this.repo.live(key, new Date(this.now()));
        if (!row) return null;
        let s: SessionData | null = null;
        try {
          const parsed: unknown = JSON.parse(row.sess);
          if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) s = parsed as SessionData;
        } catch {
          /* not JSON: not written by this store */
        }
        // A row whose seal fails was written or edited without the key: no session at all.
        if (!s || !this.sessions.sealMatches(key, s)) {
          this.onTampered(key, s && typeof s.uid === 'string' ? s.uid : null);
          return null;
        }
        return s;
      })(),
      cb,
    );
  }

  override set(sid: string, s: SessionData, cb?: Callback): void {
    const key = this.sessions.keyOf(sid);
    // A copy: the seal belongs to the stored row, not to req.session.
    const sealed = JSON.stringify({ ...s, seal: this.sessions.seal(key, s) });
    settle(this.repo.put(key, sealed, this.expiryOf(s)), (err) => cb?.(err));
  }

  override destroy(sid: string, cb?: Callback): void {
    settle(this.repo.delete(this.sessions.keyOf(sid)), (err) => cb?.(err));
  }

  // Only the row's expiry moves: its data (and seal) stay as set() wrote them.
  override touch(sid: string, s: SessionData, cb?: Callback): void {
    settle(this.repo.touch(this.sessions.keyOf(sid), this.expiryOf(s), new Date(this.now())), (err) => cb?.(err));
  }

  /** The row's idle deadline: the cookie's expiry (rolling: pushed out by every request). */
  private expiryOf(s: SessionData): Date {
    const e = s.cookie?.expires;
    const at = e ? new Date(e).getTime() : NaN;
    return new Date(Number.isFinite(at) ? at : this.now() + this.idleMs);
  }
}

export interface SessionOptions {
  /**
   * The application's database (SQLite or PostgreSQL). On SQLite the store's statements
   * queue behind a transaction in progress on the one connection (Kysely's connection
   * mutex) instead of landing inside it.
   */
  db: Database;
  /** Computes row keys and seals. */
  sessions: WebSessions;
  /** Called for a stored session whose seal fails (ids only). */
  onTampered?: (key: string, uid: string | null) => void;
  /** Cookie signing secrets: the first signs, any verifies (derived from keys the master key protects). */
  secret: Buffer[];
  idleMs: number;
}

/** Session middleware; picks the Secure/__Host- cookie for HTTPS requests and the plain one otherwise. */
export function sessionMiddleware(o: SessionOptions): RequestHandler {
  const onTampered = o.onTampered ?? (() => {});
  const make = (secure: boolean) =>
    session({
      name: secure ? '__Host-sfs-session' : 'sfs-session',
      secret: o.secret.map((k) => k.toString('base64')),
      // One store per middleware: express-session installs its generate() (which carries the
      // cookie options, Secure included) on the store object it is given.
      store: new SealedSessionStore(o.db, o.sessions, onTampered, o.idleMs),
      resave: false,
      // No row and no cookie until someone signs in.
      saveUninitialized: false,
      // Every request pushes the idle deadline out (cookie and store expiry).
      rolling: true,
      unset: 'destroy',
      cookie: { httpOnly: true, sameSite: 'lax', secure, path: '/', maxAge: o.idleMs },
    });
  const secure = make(true);
  const plain = make(false);
  return (req, res, next) => (req.secure ? secure : plain)(req, res, next);
}
