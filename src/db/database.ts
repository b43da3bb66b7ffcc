/** Opens the SQLite database with the pragmas the data path relies on, and migrates it. */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { migrate } from './migrations.js';

export type Db = Database.Database;

/** Opens (creating if needed) and migrates the database at `file`; ':memory:' works for tests. */
export function openDatabase(file: string): Db {
  if (file !== ':memory:') fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  // Deleted rows (wrapped DEKs, token hashes) are overwritten, not left in free pages.
  db.pragma('secure_delete = ON');
  // Short waits only: better-sqlite3 blocks the event loop while it waits for a lock.
  db.pragma('busy_timeout = 2000');
  migrate(db);
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

const statements = new WeakMap<Db, Map<string, Database.Statement>>();

/**
 * A prepared statement for `sql`, compiled once per connection and reused: better-sqlite3
 * compiles on every prepare(), which dominated small requests.
 */
export function stmt(db: Db, sql: string): Database.Statement {
  let cache = statements.get(db);
  if (!cache) {
    cache = new Map();
    statements.set(db, cache);
  }
  let s = cache.get(sql);
  if (!s) {
    s = db.prepare(sql);
    cache.set(sql, s);
  }
  return s;
}
