/**
 * Cookie sessions for the pages: express-session with the connect-session-knex store.
 *
 * - The store runs through knex over the app's own better-sqlite3 handle (a knex client
 *   whose "connection" is that handle), so there is no second connection to open, tune or
 *   close; the table comes from migration 3 and the store never creates or sweeps anything
 *   itself (main.ts sweeps with the other housekeeping).
 * - The store is keyed by the keyed hash of the session id (WebSessions.keyOf), so the
 *   database holds no working session id and a row for a chosen id cannot be forged; each
 *   row's data is sealed (a MAC over key, user and sign-in time) and a row whose seal fails
 *   is treated as no session at all.
 * - Cookies are HttpOnly, SameSite=Lax, and Secure (with a __Host- name) whenever the request
 *   is HTTPS, directly or through a trusted proxy; idle timeout through a rolling cookie and
 *   store expiry, absolute timeout checked on every request (see pages/auth.ts).
 */
import type { ConnectSessionKnexStore } from 'connect-session-knex';
import session, { Store, type SessionData } from 'express-session';
import type { RequestHandler } from 'express';
import type { Knex } from 'knex';
import { createRequire } from 'node:module';
import type { RawSqlite } from '../../db/database.js';
import type { WebSessions, SessionFacts } from '../../services/sessions.js';

declare module 'express-session' {
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type
  interface SessionData extends SessionFacts {}
}

type Callback = (err?: unknown, value?: unknown) => void;

/** knex's better-sqlite3 dialect, handed our open database instead of opening its own. */
function sharedHandleClient(db: RawSqlite): unknown {
  const require = createRequire(import.meta.url);
  // knex has no exports map; this is the dialect class `client: 'better-sqlite3'` loads.
  const BetterSqlite3Client = require('knex/lib/dialects/better-sqlite3/index.js') as new (config: unknown) => object;
  return class SharedBetterSqlite3Client extends BetterSqlite3Client {
    async acquireRawConnection(): Promise<RawSqlite> {
      return db;
    }
    async destroyRawConnection(): Promise<void> {
      // The app owns the handle and closes it.
    }
  };
}

/**
 * Wraps the store so rows are keyed by the keyed hash of the session id and sealed.
 * connect-session-knex both calls back and returns a promise that rejects on error (and its
 * touch() never calls back on error), so errors are routed to the callback exactly once and
 * never left unhandled.
 */
class HashedIdStore extends Store {
  constructor(
    private readonly inner: ConnectSessionKnexStore,
    private readonly sessions: WebSessions,
    private readonly onTampered: (key: string, uid: string | null) => void,
  ) {
    super();
  }

  override get(sid: string, cb: (err: unknown, s?: SessionData | null) => void): void {
    const key = this.sessions.keyOf(sid);
    this.inner
      .get(key, (err: unknown, s?: SessionData | null) => {
        if (err || !s) return cb(err, s);
        // A row whose seal fails was written or edited without the key: no session at all.
        if (!this.sessions.sealMatches(key, s)) {
          this.onTampered(key, typeof s.uid === 'string' ? s.uid : null);
          return cb(null, null);
        }
        cb(null, s);
      })
      .catch(() => {});
  }

  override set(sid: string, s: SessionData, cb?: Callback): void {
    const key = this.sessions.keyOf(sid);
    // A copy: the seal belongs to the stored row, not to req.session.
    this.inner.set(key, { ...s, seal: this.sessions.seal(key, s) } as SessionData, cb).catch(() => {});
  }

  override destroy(sid: string, cb?: Callback): void {
    this.inner.destroy(this.sessions.keyOf(sid), cb).catch(() => {});
  }

  // touch() only moves the row's expiry (connect-session-knex never rewrites `sess` there).
  override touch(sid: string, s: SessionData, cb?: Callback): void {
    this.inner.touch(this.sessions.keyOf(sid), s, () => cb?.()).catch((err: unknown) => cb?.(err));
  }
}

export interface SessionOptions {
  /**
   * The raw SQLite handle the data layer runs on. Shared, not a second connection: a second
   * one would wait (blocking the event loop) for a write lock that a transaction of this same
   * process holds across an await. Its single statements may therefore land inside such a
   * transaction (and share its fate); phase 2 moves sessions to the shared database.
   */
  db: RawSqlite | undefined;
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
  let handlers: { secure: RequestHandler; plain: RequestHandler } | undefined;
  // Built on the first page request: the store checks for its table as soon as it exists,
  // and an app that only ever serves the API (or is closed at once, as in tests) needs none.
  const build = () => {
    // Phase 2 of issue 12 points the store at PostgreSQL; until then pages need SQLite.
    if (!o.db) throw new Error('browser sessions need the SQLite database for now; with DATABASE_URL use the API');
    const raw = o.db;
    // knex and its session store are loaded here, on the first page request (about 15 MiB
    // resident that a server used only through the API never carries). Both are CommonJS.
    const require = createRequire(import.meta.url);
    const knex = require('knex') as (config: Knex.Config) => Knex;
    const { ConnectSessionKnexStore: StoreClass } = require('connect-session-knex') as { ConnectSessionKnexStore: typeof ConnectSessionKnexStore };
    const k = knex({ client: sharedHandleClient(raw) as never, connection: { filename: '' }, useNullAsDefault: true, pool: { min: 0, max: 1 } });
    const inner = new StoreClass({ knex: k, tableName: 'sessions', createTable: false, cleanupInterval: 0 });
    // A failed table check reaches every later call through its callback; do not also leave it unhandled.
    inner.ready.catch(() => {});
    // One wrapper per middleware: express-session installs its generate() (which carries
    // the cookie options, Secure included) on the store object it is given.
    const onTampered = o.onTampered ?? (() => {});
    return {
      secure: make(new HashedIdStore(inner, o.sessions, onTampered), true),
      plain: make(new HashedIdStore(inner, o.sessions, onTampered), false),
    };
  };
  const make = (store: Store, secure: boolean) =>
    session({
      name: secure ? '__Host-sfs-session' : 'sfs-session',
      secret: o.secret.map((k) => k.toString('base64')),
      store,
      resave: false,
      // No row and no cookie until someone signs in.
      saveUninitialized: false,
      // Every request pushes the idle deadline out (cookie and store expiry).
      rolling: true,
      unset: 'destroy',
      cookie: { httpOnly: true, sameSite: 'lax', secure, path: '/', maxAge: o.idleMs },
    });
  return (req, res, next) => {
    handlers ??= build();
    (req.secure ? handlers.secure : handlers.plain)(req, res, next);
  };
}
