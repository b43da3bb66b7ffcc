/**
 * Numbered schema migrations. Each runs in one transaction with the bump of
 * PRAGMA user_version, so a database is always at exactly one known version.
 * Never edit a released migration: add a new one.
 */
import type { Database } from 'better-sqlite3';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
      CREATE TABLE users (
        id            TEXT PRIMARY KEY,
        username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'user')),
        disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        quota_bytes   INTEGER,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE api_tokens (
        id           TEXT PRIMARY KEY,
        user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        token_hash   BLOB NOT NULL UNIQUE,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at   INTEGER
      ) STRICT;
      CREATE INDEX api_tokens_user ON api_tokens(user_id, created_at);

      -- One row per master key ever used: the key check value detects a wrong key at start-up.
      CREATE TABLE master_keys (
        key_id      TEXT PRIMARY KEY,
        check_value BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        retired_at  INTEGER
      ) STRICT;

      CREATE TABLE files (
        id             TEXT PRIMARY KEY,
        owner_id       TEXT NOT NULL REFERENCES users(id),
        name           TEXT NOT NULL,
        size           INTEGER NOT NULL CHECK (size >= 0),
        mime_type      TEXT NOT NULL,
        sha256         BLOB NOT NULL CHECK (length(sha256) = 32),
        key_id         TEXT NOT NULL REFERENCES master_keys(key_id),
        wrapped_dek    BLOB NOT NULL,
        format_version INTEGER NOT NULL,
        chunk_size     INTEGER NOT NULL,
        created_at     INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX files_owner_created ON files(owner_id, created_at DESC, id DESC);
      CREATE INDEX files_key ON files(key_id);
    `,
  },
];

/** Applies every migration newer than the database's user_version, each in its own transaction. */
export function migrate(db: Database, migrations: Migration[] = MIGRATIONS): number {
  let current = db.pragma('user_version', { simple: true }) as number;
  const latest = migrations.at(-1)?.version ?? 0;
  if (current > latest) {
    throw new Error(`database schema version ${current} is newer than this server knows (${latest}); upgrade the server`);
  }
  for (const m of migrations) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    }).immediate();
    current = m.version;
  }
  return current;
}
