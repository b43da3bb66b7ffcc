/**
 * Numbered PostgreSQL schema migrations: the same schema as migrations/sqlite.ts (BYTEA for
 * blobs, BIGINT for millisecond timestamps, sizes and counters). All pending migrations run
 * in one transaction under an advisory lock, with the version kept in schema_version, so
 * several instances starting at once migrate exactly once. Never edit a released migration.
 */
import { sql } from '../kysely.js';
import type { Database } from '../database.js';

/** Held (transaction-scoped) while migrating. */
const MIGRATION_LOCK = 0x5f5_0000;

export interface PgMigration {
  version: number;
  name: string;
  sql: string;
}

// One migration holding the schema SQLite reached in its seven steps: PostgreSQL support
// starts at that schema, and later changes get their own numbers in both files.
export const PG_MIGRATIONS: PgMigration[] = [
  {
    version: 7,
    name: 'schema of SQLite migrations 1-7',
    sql: `
      CREATE TABLE users (
        id                TEXT PRIMARY KEY,
        username          TEXT NOT NULL,
        password_hash     TEXT NOT NULL,
        role              TEXT NOT NULL CHECK (role IN ('admin', 'user')),
        disabled          INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        quota_bytes       BIGINT,
        created_at        BIGINT NOT NULL,
        updated_at        BIGINT NOT NULL,
        password_reset_at BIGINT,
        integrity_mac     BYTEA
      );
      -- SQLite's COLLATE NOCASE (ASCII case) on the name: one user per name whatever its case.
      CREATE UNIQUE INDEX users_username_nocase ON users (lower(username));

      CREATE TABLE api_tokens (
        id           TEXT PRIMARY KEY,
        user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        token_hash   BYTEA NOT NULL UNIQUE,
        created_at   BIGINT NOT NULL,
        expires_at   BIGINT NOT NULL,
        last_used_at BIGINT,
        revoked_at   BIGINT,
        row_mac      BYTEA
      );
      CREATE INDEX api_tokens_user ON api_tokens(user_id, created_at);

      CREATE TABLE master_keys (
        key_id      TEXT PRIMARY KEY,
        check_value BYTEA NOT NULL,
        created_at  BIGINT NOT NULL,
        retired_at  BIGINT
      );

      CREATE TABLE files (
        id             TEXT PRIMARY KEY,
        owner_id       TEXT NOT NULL REFERENCES users(id),
        name           TEXT NOT NULL,
        size           BIGINT NOT NULL CHECK (size >= 0),
        mime_type      TEXT NOT NULL,
        sha256         BYTEA NOT NULL CHECK (length(sha256) = 32),
        key_id         TEXT NOT NULL REFERENCES master_keys(key_id),
        wrapped_dek    BYTEA NOT NULL,
        format_version INTEGER NOT NULL,
        chunk_size     INTEGER NOT NULL,
        created_at     BIGINT NOT NULL,
        wrap_version   INTEGER NOT NULL DEFAULT 1 CHECK (wrap_version IN (1, 2))
      );
      CREATE INDEX files_owner_created ON files(owner_id, created_at DESC, id DESC);
      CREATE INDEX files_key ON files(key_id);

      CREATE TABLE shares (
        id             TEXT PRIMARY KEY,
        file_id        TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        owner_id       TEXT NOT NULL REFERENCES users(id),
        token_hash     BYTEA NOT NULL UNIQUE,
        password_hash  TEXT,
        note           TEXT,
        created_at     BIGINT NOT NULL,
        expires_at     BIGINT NOT NULL,
        max_downloads  BIGINT CHECK (max_downloads IS NULL OR max_downloads >= 1),
        downloads      BIGINT NOT NULL DEFAULT 0,
        bytes_served   BIGINT NOT NULL DEFAULT 0,
        revoked_at     BIGINT,
        expired_at     BIGINT,
        row_mac        BYTEA
      );
      CREATE INDEX shares_file ON shares(file_id, created_at);
      CREATE INDEX shares_expiry ON shares(expires_at) WHERE expired_at IS NULL AND revoked_at IS NULL;

      CREATE TABLE share_reservations (
        id              TEXT PRIMARY KEY,
        share_id        TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
        bytes           BIGINT NOT NULL CHECK (bytes >= 0),
        completion_slot INTEGER NOT NULL CHECK (completion_slot IN (0, 1)),
        expires_at      BIGINT NOT NULL,
        bytes_sent      BIGINT NOT NULL DEFAULT 0,
        slow_since      BIGINT,
        yielded         INTEGER NOT NULL DEFAULT 0 CHECK (yielded IN (0, 1)),
        ticket_id       TEXT
      );
      CREATE INDEX share_reservations_share ON share_reservations(share_id, expires_at);

      CREATE TABLE share_ticket_downloads (
        share_id   TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
        ticket_id  TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (share_id, ticket_id)
      );
      CREATE INDEX share_ticket_downloads_expiry ON share_ticket_downloads(expires_at);

      CREATE TABLE audit_events (
        seq             BIGINT PRIMARY KEY,
        at              BIGINT NOT NULL,
        actor           TEXT NOT NULL,
        action          TEXT NOT NULL,
        subject_user_id TEXT,
        file_id         TEXT,
        share_id        TEXT,
        ip              TEXT,
        user_agent      TEXT,
        outcome         TEXT NOT NULL,
        details         TEXT NOT NULL,
        key_id          TEXT NOT NULL,
        mac             BYTEA NOT NULL
      );
      CREATE INDEX audit_subject ON audit_events(subject_user_id, seq);
      CREATE INDEX audit_file ON audit_events(file_id, seq);

      CREATE TABLE secrets (
        name       TEXT PRIMARY KEY,
        key_id     TEXT NOT NULL REFERENCES master_keys(key_id),
        wrapped    BYTEA NOT NULL,
        created_at BIGINT NOT NULL
      );

      CREATE TABLE sessions (
        sid     TEXT PRIMARY KEY,
        sess    TEXT NOT NULL,
        expired TEXT NOT NULL
      );
      CREATE INDEX sessions_expired ON sessions(expired);
      CREATE INDEX sessions_user ON sessions(((sess::json)->>'uid'));
    `,
  },
  {
    version: 8,
    name: 'state shared by instances: quota leases, rate-limit counters, the setup code',
    sql: `
      CREATE TABLE quota_leases (
        id         TEXT PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        bytes      BIGINT NOT NULL CHECK (bytes >= 0),
        expires_at BIGINT NOT NULL
      );
      CREATE INDEX quota_leases_user ON quota_leases(user_id, expires_at);

      CREATE TABLE rate_limits (
        key      BYTEA PRIMARY KEY,
        hits     BIGINT NOT NULL CHECK (hits >= 0),
        reset_at BIGINT NOT NULL
      );
      CREATE INDEX rate_limits_reset ON rate_limits(reset_at);

      CREATE TABLE setup_code (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        key_id     TEXT NOT NULL,
        code_mac   BYTEA NOT NULL,
        sealed     BYTEA NOT NULL,
        created_at BIGINT NOT NULL
      );
    `,
  },
  {
    version: 10,
    name: 'single-writer operation lock',
    sql: `
      CREATE TABLE op_locks (
        name        TEXT PRIMARY KEY,
        token       TEXT NOT NULL,
        holder      TEXT NOT NULL,
        acquired_at BIGINT NOT NULL,
        expires_at  BIGINT NOT NULL
      );
      ALTER TABLE files ADD COLUMN blob_gen INTEGER NOT NULL DEFAULT 0 CHECK (blob_gen >= 0);
    `,
  },
  {
    version: 11,
    name: 'upload requests',
    sql: `
      CREATE TABLE upload_requests (
        id             TEXT PRIMARY KEY,
        owner_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_hash     BYTEA NOT NULL UNIQUE,
        title          TEXT NOT NULL,
        message        TEXT NOT NULL,
        password_hash  TEXT,
        max_files      INTEGER NOT NULL CHECK (max_files >= 1),
        max_bytes      BIGINT NOT NULL CHECK (max_bytes >= 1),
        max_file_bytes BIGINT NOT NULL CHECK (max_file_bytes >= 1),
        allowed_types  TEXT,
        require_name   INTEGER NOT NULL CHECK (require_name IN (0, 1)),
        require_email  INTEGER NOT NULL CHECK (require_email IN (0, 1)),
        created_at     BIGINT NOT NULL,
        expires_at     BIGINT NOT NULL,
        closed_at      BIGINT,
        files_received INTEGER NOT NULL DEFAULT 0 CHECK (files_received >= 0),
        bytes_received BIGINT NOT NULL DEFAULT 0 CHECK (bytes_received >= 0)
      );
      CREATE INDEX upload_requests_owner ON upload_requests(owner_id, created_at);

      CREATE TABLE upload_request_leases (
        id         TEXT PRIMARY KEY,
        request_id TEXT NOT NULL REFERENCES upload_requests(id) ON DELETE CASCADE,
        files      INTEGER NOT NULL CHECK (files >= 0),
        bytes      BIGINT NOT NULL CHECK (bytes >= 0),
        expires_at BIGINT NOT NULL
      );
      CREATE INDEX upload_request_leases_request ON upload_request_leases(request_id, expires_at);

      ALTER TABLE files ADD COLUMN request_id TEXT;
      ALTER TABLE files ADD COLUMN uploader_name TEXT;
      ALTER TABLE files ADD COLUMN uploader_email TEXT;
      CREATE INDEX files_request ON files(request_id, created_at);
    `,
  },
  {
    version: 12,
    name: 'bundles: several files behind one link, CRC-32 for zip entries',
    sql: `
      ALTER TABLE files ADD COLUMN crc32 BIGINT CHECK (crc32 IS NULL OR (crc32 >= 0 AND crc32 <= 4294967295));
      ALTER TABLE shares ADD COLUMN bundle INTEGER NOT NULL DEFAULT 0 CHECK (bundle IN (0, 1));
      CREATE TABLE share_files (
        share_id TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
        position INTEGER NOT NULL CHECK (position >= 0),
        file_id  TEXT REFERENCES files(id) ON DELETE SET NULL,
        row_mac  BYTEA NOT NULL,
        PRIMARY KEY (share_id, position)
      );
      CREATE INDEX share_files_file ON share_files(file_id);
      -- Same as SQLite's trigger: a deleted anchor file moves a bundle's anchor to another of its files.
      CREATE FUNCTION sfs_bundle_anchor() RETURNS trigger LANGUAGE plpgsql AS $fn$
      BEGIN
        UPDATE shares SET file_id = (
            SELECT sf.file_id FROM share_files sf
             WHERE sf.share_id = shares.id AND sf.file_id IS NOT NULL AND sf.file_id <> OLD.id
             ORDER BY sf.position LIMIT 1)
         WHERE file_id = OLD.id AND bundle = 1
           AND EXISTS (SELECT 1 FROM share_files sf WHERE sf.share_id = shares.id AND sf.file_id IS NOT NULL AND sf.file_id <> OLD.id);
        RETURN OLD;
      END
      $fn$;
      CREATE TRIGGER files_bundle_anchor BEFORE DELETE ON files FOR EACH ROW EXECUTE FUNCTION sfs_bundle_anchor();
    `,
  },
  {
    version: 13,
    name: 'resumable (tus) uploads',
    sql: `
      CREATE TABLE uploads (
        id               TEXT PRIMARY KEY,
        owner_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name             TEXT NOT NULL,
        mime_type        TEXT NOT NULL,
        length           BIGINT NOT NULL CHECK (length >= 0),
        committed        BIGINT NOT NULL DEFAULT 0 CHECK (committed >= 0),
        chunk_size       INTEGER NOT NULL,
        header           BYTEA NOT NULL,
        key_id           TEXT NOT NULL,
        wrapped_dek      BYTEA NOT NULL,
        hash_state       BYTEA,
        store_state      TEXT,
        lease_id         TEXT,
        lease_expires_at BIGINT,
        created_at       BIGINT NOT NULL,
        expires_at       BIGINT NOT NULL,
        file_id          TEXT,
        sha256           BYTEA
      );
      CREATE INDEX uploads_owner ON uploads(owner_id, expires_at);
      CREATE INDEX uploads_expires ON uploads(expires_at);
    `,
  },
  {
    version: 15,
    name: 'single sign-on identities',
    sql: `
      CREATE TABLE oidc_identities (
        issuer        TEXT NOT NULL,
        subject       TEXT NOT NULL,
        user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        email         TEXT,
        created_at    BIGINT NOT NULL,
        last_login_at BIGINT,
        row_mac       BYTEA NOT NULL,
        PRIMARY KEY (issuer, subject)
      );
      CREATE INDEX oidc_identities_user ON oidc_identities(user_id);
      CREATE TABLE sso_policy (
        id                       INTEGER PRIMARY KEY CHECK (id = 1),
        disable_local_passwords  INTEGER NOT NULL CHECK (disable_local_passwords IN (0, 1)),
        updated_at               BIGINT NOT NULL,
        row_mac                  BYTEA NOT NULL
      );
    `,
  },
  {
    version: 16,
    name: 'retention, legal hold, purge queue',
    sql: `
      ALTER TABLE files ADD COLUMN expires_at BIGINT;
      CREATE INDEX files_expires ON files(expires_at) WHERE expires_at IS NOT NULL;
      ALTER TABLE shares ADD COLUMN delete_file_after INTEGER NOT NULL DEFAULT 0 CHECK (delete_file_after IN (0, 1));
      CREATE TABLE legal_holds (
        scope      TEXT NOT NULL CHECK (scope IN ('file', 'user', 'request')),
        target_id  TEXT NOT NULL,
        reason     TEXT NOT NULL,
        reference  TEXT,
        placed_by  TEXT NOT NULL,
        placed_at  BIGINT NOT NULL,
        PRIMARY KEY (scope, target_id)
      );
      CREATE TABLE purge_queue (
        blob_id   TEXT PRIMARY KEY,
        file_id   TEXT NOT NULL,
        queued_at BIGINT NOT NULL
      );
    `,
  },
  {
    version: 19,
    name: 'upload requests: retention of the files that arrive through them',
    sql: `
      ALTER TABLE upload_requests ADD COLUMN file_retention_seconds BIGINT;
    `,
  },
  {
    version: 17,
    name: 'notifications: outbox, webhooks, settings, sign-in addresses, link recipients',
    sql: `
      CREATE TABLE notification_settings (
        user_id    TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        email      TEXT,
        prefs      TEXT NOT NULL DEFAULT '{}',
        updated_at BIGINT NOT NULL
      );
      CREATE TABLE webhooks (
        id         TEXT PRIMARY KEY,
        scope      TEXT NOT NULL UNIQUE,
        url        TEXT NOT NULL,
        sealed     BYTEA NOT NULL,
        created_at BIGINT NOT NULL
      );
      CREATE TABLE notification_outbox (
        id              TEXT PRIMARY KEY,
        event_id        TEXT NOT NULL,
        type            TEXT NOT NULL,
        user_id         TEXT,
        channel         TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
        target          TEXT NOT NULL,
        payload         TEXT NOT NULL,
        sealed          BYTEA,
        status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        lease_owner     TEXT,
        lease_until     BIGINT,
        last_error      TEXT,
        last_attempt_at BIGINT,
        created_at      BIGINT NOT NULL,
        delivered_at    BIGINT,
        UNIQUE (event_id, channel, target)
      );
      CREATE INDEX notification_outbox_due ON notification_outbox(status, next_attempt_at);
      CREATE INDEX notification_outbox_user ON notification_outbox(user_id, created_at);
      CREATE TABLE sign_in_addresses (
        user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        address_hash  BYTEA NOT NULL,
        first_seen_at BIGINT NOT NULL,
        last_seen_at  BIGINT NOT NULL,
        PRIMARY KEY (user_id, address_hash)
      );
      CREATE TABLE share_recipients (
        share_id   TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
        address    TEXT NOT NULL,
        event_id   TEXT NOT NULL,
        message    TEXT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (share_id, address)
      );
    `,
  },
  {
    version: 14,
    name: 'second factors: TOTP, recovery codes, passkeys, reset notices, the 2FA policy',
    sql: `
      CREATE TABLE mfa_totp (
        user_id      TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        key_id       TEXT NOT NULL,
        sealed       BYTEA NOT NULL,
        confirmed_at BIGINT,
        last_step    BIGINT NOT NULL DEFAULT 0,
        created_at   BIGINT NOT NULL
      );
      CREATE TABLE mfa_recovery_codes (
        user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        code_hash  BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        used_at    BIGINT,
        PRIMARY KEY (user_id, code_hash)
      );
      CREATE TABLE mfa_passkeys (
        id           TEXT PRIMARY KEY,
        user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        public_key   BYTEA NOT NULL,
        counter      BIGINT NOT NULL DEFAULT 0,
        transports   TEXT NOT NULL DEFAULT '',
        row_mac      BYTEA NOT NULL,
        created_at   BIGINT NOT NULL,
        last_used_at BIGINT
      );
      CREATE INDEX mfa_passkeys_user ON mfa_passkeys(user_id);
      CREATE TABLE mfa_notices (
        user_id  TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        reset_at BIGINT NOT NULL
      );
      CREATE TABLE mfa_policy (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        require_2fa TEXT NOT NULL CHECK (require_2fa IN ('off', 'admins', 'all')),
        updated_at  BIGINT NOT NULL
      );
    `,
  },
  {
    version: 18,
    name: 'tus uploads through upload requests',
    sql: `
      ALTER TABLE uploads ADD COLUMN request_id TEXT REFERENCES upload_requests(id) ON DELETE CASCADE;
      ALTER TABLE uploads ADD COLUMN uploader_name TEXT;
      ALTER TABLE uploads ADD COLUMN uploader_email TEXT;
    `,
  },
];

/** Applies every migration newer than schema_version in one transaction under the migration lock. */
export async function migrate(db: Database, migrations: PgMigration[] = PG_MIGRATIONS): Promise<number> {
  const latest = Math.max(0, ...migrations.map((m) => m.version));
  return db.transaction(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`.execute(trx);
    await sql`CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`.execute(trx);
    const { rows } = await sql<{ version: number }>`SELECT version FROM schema_version`.execute(trx);
    let current = rows[0]?.version ?? 0;
    if (current > latest) throw new Error(`database schema version ${current} is newer than this server knows (${latest}); upgrade the server`);
    // In version order whatever order the list was merged in (several branches append to it).
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (m.version <= current) continue;
      await sql.raw(m.sql).execute(trx);
      current = m.version;
    }
    await sql`DELETE FROM schema_version`.execute(trx);
    await sql`INSERT INTO schema_version (version) VALUES (${current})`.execute(trx);
    return current;
  });
}
