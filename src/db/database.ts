/**
 * Opens the database behind the asynchronous data layer: a Kysely query builder over one
 * dialect. SQLite (better-sqlite3, the default) keeps the pragmas the data path relies on.
 */
import BetterSqlite3 from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import type { DatabaseConnection, Driver, Kysely as KyselyType, PostgresDialectConfig, SqliteDialectConfig, Transaction, TransactionSettings } from 'kysely';
import { createRequire } from 'node:module';
import type * as PgModule from 'pg';
import type { Config } from '../config.js';
import { CompiledQuery, Kysely, PostgresAdapter, PostgresDialect, PostgresDriver, SqliteDialect, SqliteDriver } from './kysely.js';
import type { Schema } from './schema.js';
import { applyMigrations } from './migrations/index.js';

export type { Schema } from './schema.js';

/** What repositories run queries on: the database itself or a transaction of it. */
export type Executor = KyselyType<Schema>;
export type Trx = Transaction<Schema>;
export type Dialect = 'sqlite' | 'postgres';

/** The raw SQLite handle (online backup, PRAGMAs, wal_checkpoint, tests). */
export type RawSqlite = BetterSqlite3.Database;

/** The application's database: the query builder, its dialect and (SQLite) the raw handle. */
export interface Database {
  readonly kysely: KyselyType<Schema>;
  readonly dialect: Dialect;
  /** Only for SQLite. */
  readonly raw: RawSqlite | undefined;
  /** Only for PostgreSQL: the pool (for closing and for tests). */
  readonly pool?: PgModule.Pool;
  /**
   * Runs `fn` in one transaction (BEGIN IMMEDIATE on SQLite) and commits, or rolls back when
   * it throws. Keep it short and never await network or blob-store I/O inside: on SQLite the
   * one connection is held, so every other query of this process waits meanwhile.
   */
  transaction<T>(fn: (trx: Trx) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** How long a statement of the asynchronous layer waits for another connection's write lock. */
const SQLITE_LOCK_WAIT_MS = 2000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * BEGIN IMMEDIATE instead of Kysely's deferred BEGIN: a deferred transaction that reads and
 * then writes must upgrade its lock, and that upgrade fails at once with SQLITE_BUSY when
 * another process (the CLI beside the server) wrote meanwhile; an immediate one waits for the
 * write lock up front and then cannot be refused.
 *
 * The wait is asynchronous: each statement runs with busy_timeout 0 and, on SQLITE_BUSY, is
 * tried again after a timer, for up to SQLITE_LOCK_WAIT_MS. better-sqlite3's own busy wait
 * blocks the event loop, so while another connection of the same process (a second app on
 * the same file, as the multi-instance tests build) held the lock across an await, it could
 * never commit: the waiter held the loop until it gave up. A failed statement changed
 * nothing, so trying it again is safe, inside a transaction or not.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  private readonly noWait: BetterSqlite3.Statement;
  private readonly wait: BetterSqlite3.Statement;

  constructor(cfg: SqliteDialectConfig, raw: RawSqlite) {
    super(cfg);
    this.noWait = raw.prepare('PRAGMA busy_timeout = 0');
    this.wait = raw.prepare(`PRAGMA busy_timeout = ${SQLITE_LOCK_WAIT_MS}`);
  }

  override async acquireConnection(): Promise<DatabaseConnection> {
    const inner = await super.acquireConnection();
    return {
      executeQuery: (q) => this.retryBusy(() => inner.executeQuery(q)),
      streamQuery: (q, n) => inner.streamQuery(q, n),
    };
  }

  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }

  private async retryBusy<R>(run: () => Promise<R>): Promise<R> {
    const deadline = Date.now() + SQLITE_LOCK_WAIT_MS;
    for (let delay = 1; ; delay = Math.min(delay * 2, 25)) {
      // Synchronous in better-sqlite3: the timeout is back before anything else runs.
      this.noWait.get();
      let p: Promise<R>;
      try {
        p = run();
      } catch (err) {
        // Kysely's connection throws synchronously out of better-sqlite3.
        p = Promise.reject(err);
      } finally {
        this.wait.get();
      }
      try {
        return await p;
      } catch (err) {
        if ((err as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() >= deadline) throw err;
      }
      await sleep(delay);
    }
  }
}

class ImmediateSqliteDialect extends SqliteDialect {
  constructor(
    private readonly cfg: SqliteDialectConfig,
    private readonly raw: RawSqlite,
  ) {
    super(cfg);
  }
  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.cfg, this.raw);
  }
}

/**
 * better-sqlite3 compiles on every prepare(), which dominated small requests: the handle
 * Kysely sees caches one prepared statement per SQL text.
 */
function cachingHandle(raw: RawSqlite): SqliteDialectConfig['database'] {
  const cache = new Map<string, BetterSqlite3.Statement>();
  return {
    close: () => raw.close(),
    prepare: (sqlText: string) => {
      let s = cache.get(sqlText);
      // A statement still iterating (a stream) cannot run again: prepare a fresh one then.
      if (s && s.busy) return raw.prepare(sqlText);
      if (!s) {
        s = raw.prepare(sqlText);
        if (cache.size > 500) cache.clear();
        cache.set(sqlText, s);
      }
      return s;
    },
  } as unknown as SqliteDialectConfig['database'];
}

/**
 * True when the executor runs on PostgreSQL (for the few statements whose SQL differs by
 * dialect; everything else is written once). Read from the dialect's adapter.
 */
export function isPostgres(db: Executor): boolean {
  return db.getExecutor().adapter instanceof PostgresAdapter;
}

/** Runs `fn` inside the executor's transaction, or in a new one when it is not a transaction. */
export function inTransaction<T>(db: Executor, fn: (trx: Trx) => Promise<T>): Promise<T> {
  if (db.isTransaction) return fn(db as Trx);
  return db.transaction().execute(fn);
}

/** Wraps an open better-sqlite3 handle (pragmas already set) in the asynchronous layer. */
export function sqliteDatabase(raw: RawSqlite): Database {
  const kysely = new Kysely<Schema>({ dialect: new ImmediateSqliteDialect({ database: cachingHandle(raw) }, raw) });
  let closed = false;
  return {
    kysely,
    dialect: 'sqlite',
    raw,
    transaction: (fn) => kysely.transaction().execute(fn),
    async close() {
      if (closed) return;
      closed = true;
      await kysely.destroy();
      if (raw.open) raw.close();
    },
  };
}

/** Opens (creating if needed) the SQLite file with the data path's pragmas; ':memory:' works for tests. */
export function openSqlite(file: string): RawSqlite {
  if (file !== ':memory:') fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const db = new BetterSqlite3(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  // Deleted rows (wrapped DEKs, token hashes) are overwritten, not left in free pages.
  db.pragma('secure_delete = ON');
  // Short waits only: better-sqlite3 blocks the event loop while it waits for a lock (the
  // asynchronous layer waits without blocking instead: ImmediateSqliteDriver).
  db.pragma('busy_timeout = 2000');
  return db;
}

/** Opens (creating if needed) and migrates the database at `file`. */
export async function openDatabase(file: string): Promise<Database> {
  const raw = openSqlite(file);
  const db = sqliteDatabase(raw);
  try {
    await applyMigrations(db);
  } catch (err) {
    await db.close();
    throw err;
  }
  if (file !== ':memory:') {
    for (const f of [file, `${file}-wal`, `${file}-shm`]) {
      try {
        fs.chmodSync(f, 0o600);
      } catch {
        /* the -wal/-shm files may not exist yet */
      }
    }
  }
  return db;
}

/**
 * The advisory lock every PostgreSQL transaction takes first (pg_advisory_xact_lock, released
 * at commit or rollback): transactions run one at a time, across every instance on the
 * database, as SQLite's BEGIN IMMEDIATE makes them run. That keeps each read-then-write step
 * (setup, reservations, the audit append, compare-and-swaps) atomic without per-table locking.
 */
export const PG_TRANSACTION_LOCK = 0x5f5_0001;

class SerialPostgresDriver extends PostgresDriver {
  override async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    await super.beginTransaction(connection, settings);
    await connection.executeQuery(CompiledQuery.raw(`select pg_advisory_xact_lock(${PG_TRANSACTION_LOCK})`));
  }
}

class SerialPostgresDialect extends PostgresDialect {
  constructor(private readonly cfg: PostgresDialectConfig) {
    super(cfg);
  }
  override createDriver(): Driver {
    return new SerialPostgresDriver(this.cfg);
  }
}

let pgTypesSet = false;

/** Loads pg (CommonJS, on first use) and makes BIGINT (ms timestamps, sizes, counts) a JS number, refusing values past 2^53. */
function loadPg(): typeof PgModule {
  const pg = createRequire(import.meta.url)('pg') as typeof PgModule;
  if (!pgTypesSet) {
    pgTypesSet = true;
    pg.types.setTypeParser(20, (text: string) => {
      const n = Number(text);
      if (!Number.isSafeInteger(n)) throw new RangeError(`a BIGINT from the database is outside the exact range of a JS number: ${text}`);
      return n;
    });
  }
  return pg;
}

/** A PostgreSQL database over a pg Pool (URL as pg reads it, sslmode included; CA file optional). */
export function postgresDatabase(opts: { url: string; poolSize: number; sslCaFile?: string }): Database {
  const pg = loadPg();
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.poolSize,
    // Every transaction takes one lock shared by all instances (PG_TRANSACTION_LOCK), so a
    // session that stalls inside one (a frozen process, a bug awaiting the wrong thing) would
    // stall every instance: PostgreSQL ends such a session after 30 s idle in a transaction,
    // and a wait for a lock gives up after 30 s with an error instead of hanging forever.
    idle_in_transaction_session_timeout: 30_000,
    lock_timeout: 30_000,
    ...(opts.sslCaFile ? { ssl: { ca: fs.readFileSync(opts.sslCaFile, 'utf8'), rejectUnauthorized: true } } : {}),
  });
  // An idle client's error (server restart) must not crash the process; the next query reports it.
  pool.on('error', () => {});
  const kysely = new Kysely<Schema>({ dialect: new SerialPostgresDialect({ pool }) });
  let closed = false;
  return {
    kysely,
    dialect: 'postgres',
    raw: undefined,
    pool,
    transaction: (fn) => kysely.transaction().execute(fn),
    async close() {
      if (closed) return;
      closed = true;
      await kysely.destroy();
    },
  };
}

/** Opens and migrates the configured database: SQLite in DATA_DIR, or PostgreSQL (DATABASE_URL). */
export async function openConfiguredDatabase(config: Pick<Config, 'dbFile' | 'database'>): Promise<Database> {
  const d = config.database;
  if (d.kind === 'sqlite') return openDatabase(config.dbFile);
  const db = postgresDatabase(d);
  try {
    await applyMigrations(db);
  } catch (err) {
    await db.close();
    throw err;
  }
  return db;
}
