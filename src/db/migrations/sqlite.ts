/**
 * Numbered SQLite schema migrations. Each runs in one transaction with the bump of
 * PRAGMA user_version, so a database is always at exactly one known version.
 * Never edit a released migration: add a new one (and its PostgreSQL twin, once there is one).
 * sqlite-only: this whole file (STRICT tables, PRAGMA user_version, json_extract index).
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
  {
    version: 2,
    name: 'shares, download reservations, audit log',
    sql: `
      CREATE TABLE shares (
        id             TEXT PRIMARY KEY,
        file_id        TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        owner_id       TEXT NOT NULL REFERENCES users(id),
        -- SHA-256 of the link token: a leaked database does not leak working links.
        token_hash     BLOB NOT NULL UNIQUE,
        password_hash  TEXT,
        note           TEXT,
        created_at     INTEGER NOT NULL,
        expires_at     INTEGER NOT NULL,
        max_downloads  INTEGER CHECK (max_downloads IS NULL OR max_downloads >= 1),
        downloads      INTEGER NOT NULL DEFAULT 0,
        bytes_served   INTEGER NOT NULL DEFAULT 0,
        revoked_at     INTEGER,
        expired_at     INTEGER
      ) STRICT;
      CREATE INDEX shares_file ON shares(file_id, created_at);
      CREATE INDEX shares_expiry ON shares(expires_at) WHERE expired_at IS NULL AND revoked_at IS NULL;

      -- Bytes (and completion slots) promised to responses in flight. They expire, so a
      -- crash mid-download does not burn a share's budget for good.
      CREATE TABLE share_reservations (
        id              TEXT PRIMARY KEY,
        share_id        TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
        bytes           INTEGER NOT NULL CHECK (bytes >= 0),
        completion_slot INTEGER NOT NULL CHECK (completion_slot IN (0, 1)),
        expires_at      INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX share_reservations_share ON share_reservations(share_id, expires_at);

      -- Append-only, chained with an HMAC under a key derived from the master key.
      CREATE TABLE audit_events (
        seq         INTEGER PRIMARY KEY,
        at          INTEGER NOT NULL,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        subject_user_id TEXT,
        file_id     TEXT,
        share_id    TEXT,
        ip          TEXT,
        user_agent  TEXT,
        outcome     TEXT NOT NULL,
        details     TEXT NOT NULL,
        key_id      TEXT NOT NULL,
        mac         BLOB NOT NULL
      ) STRICT;
      CREATE INDEX audit_subject ON audit_events(subject_user_id, seq);
      CREATE INDEX audit_file ON audit_events(file_id, seq);
    `,
  },
  {
    version: 3,
    name: 'wrapped service secrets',
    sql: `
      -- Long-lived secrets (e.g. the audit MAC root) stored wrapped under a master key, so a
      -- key rotation rewraps them like DEKs instead of orphaning what they protect.
      CREATE TABLE secrets (
        name       TEXT PRIMARY KEY,
        key_id     TEXT NOT NULL REFERENCES master_keys(key_id),
        wrapped    BLOB NOT NULL,
        created_at INTEGER NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 4,
    name: 'browser sessions',
    sql: `
      -- Laid out as connect-session-knex expects (sid, sess, expired), created here so the
      -- store never alters the schema itself. sid holds the SHA-256 of the cookie's session
      -- id, so a leaked database holds no working session.
      CREATE TABLE sessions (
        sid     TEXT PRIMARY KEY,
        sess    TEXT NOT NULL,
        expired TEXT NOT NULL
      ) STRICT;
      CREATE INDEX sessions_expired ON sessions(expired);
      -- "List my sessions" and "end every session of this user".
      CREATE INDEX sessions_user ON sessions(json_extract(sess, '$.uid'));
    `,
  },
  {
    version: 5,
    name: 'admin password reset notice',
    sql: `
      -- When an administrator last set this user's password (null once the user chose their
      -- own): shown to the user at sign-in and on /account, so a reset is never silent.
      ALTER TABLE users ADD COLUMN password_reset_at INTEGER;
    `,
  },
  {
    version: 6,
    name: 'slow download reservations give way; repeat downloads of one ticket',
    sql: `
      -- Progress facts each response reports with its heartbeat, so any instance sharing the
      -- database can tell a stalled holder of a completion slot from a working one.
      ALTER TABLE share_reservations ADD COLUMN bytes_sent INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE share_reservations ADD COLUMN slow_since INTEGER;
      ALTER TABLE share_reservations ADD COLUMN yielded INTEGER NOT NULL DEFAULT 0 CHECK (yielded IN (0, 1));
      -- The download ticket (its random id, not a credential) a response runs under.
      ALTER TABLE share_reservations ADD COLUMN ticket_id TEXT;

      -- Tickets whose download has been counted: the same ticket may fetch the file again
      -- until it expires without spending the link's budget a second time.
      CREATE TABLE share_ticket_downloads (
        share_id   TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
        ticket_id  TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (share_id, ticket_id)
      ) STRICT;
      CREATE INDEX share_ticket_downloads_expiry ON share_ticket_downloads(expires_at);
    `,
  },
  {
    version: 7,
    name: 'integrity against database writers',
    sql: `
      -- Which associated-data layout wraps the DEK (docs/format.md): 1 = file, key, size,
      -- checksum, format; 2 = also the owner, so moving a file to another user by SQL makes
      -- it fail to unwrap. Old rows stay 1 until they are rewrapped (start-up upgrade, key rotate).
      ALTER TABLE files ADD COLUMN wrap_version INTEGER NOT NULL DEFAULT 1 CHECK (wrap_version IN (1, 2));
      -- HMAC over what grants power (services/integrity.ts), under a key only the master key
      -- opens: a database writer cannot make a user admin, re-enable them, or set a password.
      ALTER TABLE users ADD COLUMN integrity_mac BLOB;
      -- The same for a token's and a link's owner, file, expiry and limits.
      ALTER TABLE api_tokens ADD COLUMN row_mac BLOB;
      ALTER TABLE shares ADD COLUMN row_mac BLOB;
    `,
  },
  {
    version: 8,
    name: 'state shared by instances: quota leases, rate-limit counters, the setup code',
    sql: `
      -- Bytes of uploads still streaming, reserved ahead in steps by whichever instance runs
      -- the upload. A lease counts only until expires_at; its instance renews it while the
      -- upload streams, so a killed instance's leases stop counting after a bounded time.
      CREATE TABLE quota_leases (
        id         TEXT PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        bytes      INTEGER NOT NULL CHECK (bytes >= 0),
        expires_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX quota_leases_user ON quota_leases(user_id, expires_at);

      -- Rate-limit counters of every instance. The key is a keyed hash (HMAC under a key
      -- derived from the master key) of the limiter's name and the client key, which holds
      -- IP addresses and usernames: the database holds neither.
      CREATE TABLE rate_limits (
        key      BLOB PRIMARY KEY,
        hits     INTEGER NOT NULL CHECK (hits >= 0),
        reset_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX rate_limits_reset ON rate_limits(reset_at);

      -- The one first-run setup code of every instance (one row at most): a keyed hash to
      -- check against and the code sealed under a key derived from the master key named by
      -- key_id, so every instance prints the same code. Deleted by the setup that uses it.
      CREATE TABLE setup_code (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        key_id     TEXT NOT NULL,
        code_mac   BLOB NOT NULL,
        sealed     BLOB NOT NULL,
        created_at INTEGER NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 10,
    name: 'single-writer operation lock',
    sql: `
      -- One row per held operation lock (ops/op-lock.ts): who holds it and until when. Taken
      -- by one transaction that checks expiry, renewed while the operation runs, deleted at
      -- the end; a crashed holder's row simply expires. The holder text names a process and
      -- host, never a secret.
      CREATE TABLE op_locks (
        name       TEXT PRIMARY KEY,
        token      TEXT NOT NULL,
        holder     TEXT NOT NULL,
        acquired_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
      ) STRICT;
      -- Which object holds a file's ciphertext: 0 is <id>.enc, n > 0 is <id>.g<n>.enc.
      -- Re-encryption on an object store (no rename) writes generation n + 1 beside the old
      -- object and moves the row to it by compare-and-swap, so a reader always finds the
      -- ciphertext its row's wrapped key opens.
      ALTER TABLE files ADD COLUMN blob_gen INTEGER NOT NULL DEFAULT 0 CHECK (blob_gen >= 0);
    `,
  },
  {
    version: 11,
    name: 'upload requests',
    sql: `
      -- Upload requests (services/requests.ts): outsiders send files to an owner through a
      -- link. The token is kept only as its keyed hash (like share links). The counters are
      -- what was committed through the request; they never go down (deleting a received file
      -- does not reopen a full request).
      CREATE TABLE upload_requests (
        id             TEXT PRIMARY KEY,
        owner_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_hash     BLOB NOT NULL UNIQUE,
        title          TEXT NOT NULL,
        message        TEXT NOT NULL,
        password_hash  TEXT,
        max_files      INTEGER NOT NULL CHECK (max_files >= 1),
        max_bytes      INTEGER NOT NULL CHECK (max_bytes >= 1),
        max_file_bytes INTEGER NOT NULL CHECK (max_file_bytes >= 1),
        allowed_types  TEXT,
        require_name   INTEGER NOT NULL CHECK (require_name IN (0, 1)),
        require_email  INTEGER NOT NULL CHECK (require_email IN (0, 1)),
        created_at     INTEGER NOT NULL,
        expires_at     INTEGER NOT NULL,
        closed_at      INTEGER,
        files_received INTEGER NOT NULL DEFAULT 0 CHECK (files_received >= 0),
        bytes_received INTEGER NOT NULL DEFAULT 0 CHECK (bytes_received >= 0)
      ) STRICT;
      CREATE INDEX upload_requests_owner ON upload_requests(owner_id, created_at);

      -- Files and bytes of uploads to a request still streaming on any instance (like
      -- quota_leases): counted only until expires_at, renewed while the upload runs.
      CREATE TABLE upload_request_leases (
        id         TEXT PRIMARY KEY,
        request_id TEXT NOT NULL REFERENCES upload_requests(id) ON DELETE CASCADE,
        files      INTEGER NOT NULL CHECK (files >= 0),
        bytes      INTEGER NOT NULL CHECK (bytes >= 0),
        expires_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX upload_request_leases_request ON upload_request_leases(request_id, expires_at);

      -- Which request a file came through, and what the uploader said their name and email are.
      -- No foreign key: deleting a request clears the column itself (db/requests.ts), and a plain
      -- column can be dropped again by tools that rebuild older layouts.
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
      -- CRC-32 of the plaintext (unsigned), computed while uploading: a bundle's zip needs it
      -- before streaming so its bytes (Content-Length, ETag, Range) are known up front. Null
      -- for files uploaded earlier; the first zip Range request computes it once (verified).
      ALTER TABLE files ADD COLUMN crc32 INTEGER CHECK (crc32 IS NULL OR (crc32 >= 0 AND crc32 <= 4294967295));
      -- 1 for a link to several files (share_files). Its file_id is only an anchor that keeps
      -- the row alive (the trigger below moves it when that file goes); its MAC covers the flag.
      ALTER TABLE shares ADD COLUMN bundle INTEGER NOT NULL DEFAULT 0 CHECK (bundle IN (0, 1));
      -- The files of a bundle, in order. A deleted file leaves its row with file_id NULL, so the
      -- recipient page can say a file was withdrawn (and name nothing about it). row_mac binds
      -- share, position and file under the integrity key: a database writer cannot add a file.
      CREATE TABLE share_files (
        share_id TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
        position INTEGER NOT NULL CHECK (position >= 0),
        file_id  TEXT REFERENCES files(id) ON DELETE SET NULL,
        row_mac  BLOB NOT NULL,
        PRIMARY KEY (share_id, position)
      ) STRICT;
      CREATE INDEX share_files_file ON share_files(file_id);
      -- Deleting a bundle's anchor file moves the anchor to another file of the bundle first,
      -- so the link keeps its other files; with none left the cascade removes the link.
      CREATE TRIGGER files_bundle_anchor BEFORE DELETE ON files BEGIN
        UPDATE shares SET file_id = (
            SELECT sf.file_id FROM share_files sf
             WHERE sf.share_id = shares.id AND sf.file_id IS NOT NULL AND sf.file_id <> OLD.id
             ORDER BY sf.position LIMIT 1)
         WHERE file_id = OLD.id AND bundle = 1
           AND EXISTS (SELECT 1 FROM share_files sf WHERE sf.share_id = shares.id AND sf.file_id IS NOT NULL AND sf.file_id <> OLD.id);
      END;
    `,
  },
  {
    version: 13,
    name: 'resumable (tus) uploads',
    sql: `
      -- One row per resumable upload (services/tus.ts). Only ciphertext exists while it is
      -- incomplete: the DEK is wrapped under the master key (bound to this upload row), the
      -- running SHA-256 state is sealed under a key derived from the DEK, and the store holds
      -- sealed 64 KiB chunks. committed is the plaintext offset of the last durable chunk
      -- boundary (docs/format.md). A PATCH holds the row's lease (one UPDATE that checks the
      -- expiry), so a second PATCH through any instance is refused. file_id is set, and the
      -- key material wiped, once the upload became an ordinary file.
      CREATE TABLE uploads (
        id               TEXT PRIMARY KEY,
        owner_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name             TEXT NOT NULL,
        mime_type        TEXT NOT NULL,
        length           INTEGER NOT NULL CHECK (length >= 0),
        committed        INTEGER NOT NULL DEFAULT 0 CHECK (committed >= 0),
        chunk_size       INTEGER NOT NULL,
        header           BLOB NOT NULL,
        key_id           TEXT NOT NULL,
        wrapped_dek      BLOB NOT NULL,
        hash_state       BLOB,
        store_state      TEXT,
        lease_id         TEXT,
        lease_expires_at INTEGER,
        created_at       INTEGER NOT NULL,
        expires_at       INTEGER NOT NULL,
        file_id          TEXT,
        sha256           BLOB
      ) STRICT;
      CREATE INDEX uploads_owner ON uploads(owner_id, expires_at);
      CREATE INDEX uploads_expires ON uploads(expires_at);
    `,
  },
  {
    version: 15,
    name: 'single sign-on identities',
    sql: `
      -- Which OpenID Connect identity (the provider's issuer and its subject id: never the
      -- email) signs in as which user. Linked by a just-in-time creation or by the signed-in
      -- user from /account. row_mac seals issuer, subject and user (services/integrity.ts), so
      -- a database writer without the key cannot point an identity at another account.
      CREATE TABLE oidc_identities (
        issuer        TEXT NOT NULL,
        subject       TEXT NOT NULL,
        user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        email         TEXT,
        created_at    INTEGER NOT NULL,
        last_login_at INTEGER,
        row_mac       BLOB NOT NULL,
        PRIMARY KEY (issuer, subject)
      ) STRICT;
      CREATE INDEX oidc_identities_user ON oidc_identities(user_id);
      -- The admin page's switch for local passwords of SSO-linked users (one row at most;
      -- without it OIDC_DISABLE_LOCAL_PASSWORDS applies). row_mac seals the value.
      CREATE TABLE sso_policy (
        id                       INTEGER PRIMARY KEY CHECK (id = 1),
        disable_local_passwords  INTEGER NOT NULL CHECK (disable_local_passwords IN (0, 1)),
        updated_at               INTEGER NOT NULL,
        row_mac                  BLOB NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 16,
    name: 'retention, legal hold, purge queue',
    sql: `
      -- When a file is crypto-shredded by the purge job (ms; NULL: kept until deleted).
      ALTER TABLE files ADD COLUMN expires_at INTEGER;
      CREATE INDEX files_expires ON files(expires_at) WHERE expires_at IS NOT NULL;
      -- "Delete the file after its last allowed download" (needs max_downloads).
      ALTER TABLE shares ADD COLUMN delete_file_after INTEGER NOT NULL DEFAULT 0 CHECK (delete_file_after IN (0, 1));
      -- Active legal holds; releasing one deletes its row (the audit log keeps the history).
      CREATE TABLE legal_holds (
        scope      TEXT NOT NULL CHECK (scope IN ('file', 'user', 'request')),
        target_id  TEXT NOT NULL,
        reason     TEXT NOT NULL,
        reference  TEXT,
        placed_by  TEXT NOT NULL,
        placed_at  INTEGER NOT NULL,
        PRIMARY KEY (scope, target_id)
      ) STRICT;
      -- Ciphertext whose row (and wrapped key) is already gone, written in the purge's
      -- transaction: a pass that dies before removing the blob leaves it here, and the next
      -- pass finishes the job, so a crash never leaves an orphan.
      CREATE TABLE purge_queue (
        blob_id   TEXT PRIMARY KEY,
        file_id   TEXT NOT NULL,
        queued_at INTEGER NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 19,
    name: 'upload requests: retention of the files that arrive through them',
    sql: `
      -- Files arriving through the request expire this long after their upload (seconds,
      -- within FILE_MAX_RETENTION); null: the retention default.
      ALTER TABLE upload_requests ADD COLUMN file_retention_seconds INTEGER;
    `,
  },
  {
    version: 17,
    name: 'notifications: outbox, webhooks, settings, sign-in addresses, link recipients',
    sql: `
      -- Per-user notification choices (services/notify): the address emails go to and, per
      -- event type, the channels ("email", "webhook") as JSON. No row: nothing is sent.
      CREATE TABLE notification_settings (
        user_id    TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        email      TEXT,
        prefs      TEXT NOT NULL DEFAULT '{}',
        updated_at INTEGER NOT NULL
      ) STRICT;
      -- One webhook per scope: a user id, or '*admin' for the admin-wide audit stream. The
      -- signing secret is sealed (AES-256-GCM under a service secret wrapped by the master key).
      CREATE TABLE webhooks (
        id         TEXT PRIMARY KEY,
        scope      TEXT NOT NULL UNIQUE,
        url        TEXT NOT NULL,
        sealed     BLOB NOT NULL,
        created_at INTEGER NOT NULL
      ) STRICT;
      -- The outbox: one row per delivery of an event (event_id is the idempotency key every
      -- channel carries), inserted in the transaction of the change it describes. Workers
      -- claim rows with one UPDATE that sets a lease; a crashed claimer's lease runs out.
      -- The sealed column holds what must not sit in the clear (a link URL for its recipient) and
      -- is cleared once the row is done.
      CREATE TABLE notification_outbox (
        id              TEXT PRIMARY KEY,
        event_id        TEXT NOT NULL,
        type            TEXT NOT NULL,
        user_id         TEXT,
        channel         TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
        target          TEXT NOT NULL,
        payload         TEXT NOT NULL,
        sealed          BLOB,
        status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        lease_owner     TEXT,
        lease_until     INTEGER,
        last_error      TEXT,
        last_attempt_at INTEGER,
        created_at      INTEGER NOT NULL,
        delivered_at    INTEGER,
        UNIQUE (event_id, channel, target)
      ) STRICT;
      CREATE INDEX notification_outbox_due ON notification_outbox(status, next_attempt_at);
      CREATE INDEX notification_outbox_user ON notification_outbox(user_id, created_at);
      -- Client addresses a user has signed in from, as keyed hashes (never the address).
      CREATE TABLE sign_in_addresses (
        user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        address_hash  BLOB NOT NULL,
        first_seen_at INTEGER NOT NULL,
        last_seen_at  INTEGER NOT NULL,
        PRIMARY KEY (user_id, address_hash)
      ) STRICT;
      -- Who a link was sent to by email, and which outbox event carried it.
      CREATE TABLE share_recipients (
        share_id   TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
        address    TEXT NOT NULL,
        event_id   TEXT NOT NULL,
        message    TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (share_id, address)
      ) STRICT;
    `,
  },
  {
    version: 14,
    name: 'second factors: TOTP, recovery codes, passkeys, reset notices, the 2FA policy',
    sql: `
      -- One TOTP authenticator per user (services/mfa.ts). The secret is sealed (AES-256-GCM
      -- under an HKDF sub-key of the master key named by key_id, bound to the user), never
      -- stored in clear; confirmed_at is null until the first code is confirmed. last_step is
      -- the newest time step accepted: a code is accepted only by the one UPDATE that raises it,
      -- so a code cannot be used twice, whichever instance it reaches.
      CREATE TABLE mfa_totp (
        user_id      TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        key_id       TEXT NOT NULL,
        sealed       BLOB NOT NULL,
        confirmed_at INTEGER,
        last_step    INTEGER NOT NULL DEFAULT 0,
        created_at   INTEGER NOT NULL
      ) STRICT;
      -- Single-use recovery codes as keyed hashes (HMAC under a key from the integrity root).
      CREATE TABLE mfa_recovery_codes (
        user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        code_hash  BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        used_at    INTEGER,
        PRIMARY KEY (user_id, code_hash)
      ) STRICT;
      -- WebAuthn credentials (public keys only); row_mac binds id, user and key so a database
      -- writer cannot plant a credential of their own.
      CREATE TABLE mfa_passkeys (
        id           TEXT PRIMARY KEY,
        user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        public_key   BLOB NOT NULL,
        counter      INTEGER NOT NULL DEFAULT 0,
        transports   TEXT NOT NULL DEFAULT '',
        row_mac      BLOB NOT NULL,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER
      ) STRICT;
      CREATE INDEX mfa_passkeys_user ON mfa_passkeys(user_id);
      -- "An administrator reset your second factors": shown once at the next sign-in.
      CREATE TABLE mfa_notices (
        user_id  TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        reset_at INTEGER NOT NULL
      ) STRICT;
      -- The admin page's REQUIRE_2FA switch (one row at most); without it the setting applies.
      CREATE TABLE mfa_policy (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        require_2fa TEXT NOT NULL CHECK (require_2fa IN ('off', 'admins', 'all')),
        updated_at  INTEGER NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 18,
    name: 'tus uploads through upload requests',
    sql: `
      -- A resumable upload to an upload request (services/tus.ts with routes/request-tus.ts):
      -- the request it goes to and what the uploader gave as name and email, copied to the
      -- file on completion. Its files/bytes reservation on the request is the
      -- upload_request_leases row whose id is the upload id.
      ALTER TABLE uploads ADD COLUMN request_id TEXT REFERENCES upload_requests(id) ON DELETE CASCADE;
      ALTER TABLE uploads ADD COLUMN uploader_name TEXT;
      ALTER TABLE uploads ADD COLUMN uploader_email TEXT;
    `,
  },
];

/**
 * Applies every migration newer than the database's user_version, each in its own immediate
 * transaction. Synchronous on the raw handle: it runs once at open, before any query of the
 * asynchronous layer, and PRAGMA user_version has no portable form anyway.
 */
export function migrate(db: Database, migrations: Migration[] = MIGRATIONS): number {
  let current = db.pragma('user_version', { simple: true }) as number;
  const latest = Math.max(0, ...migrations.map((m) => m.version));
  if (current > latest) {
    throw new Error(`database schema version ${current} is newer than this server knows (${latest}); upgrade the server`);
  }
  // In version order whatever order the list was merged in (several branches append to it).
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    }).immediate();
    current = m.version;
  }
  return current;
}
