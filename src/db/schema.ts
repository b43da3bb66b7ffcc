/**
 * The typed shape of every table, as the query builder (Kysely) sees it. Column names are the
 * SQL ones; repositories map them to camelCase rows. Integers that hold milliseconds or byte
 * counts are JS numbers (exact up to 2^53); blobs are Buffers.
 */
import type { Generated } from 'kysely';

export interface UsersTable {
  id: string;
  username: string;
  password_hash: string;
  role: 'admin' | 'user';
  disabled: Generated<number>;
  quota_bytes: number | null;
  created_at: number;
  updated_at: number;
  password_reset_at: number | null;
  integrity_mac: Buffer | null;
}

export interface ApiTokensTable {
  id: string;
  user_id: string;
  name: string;
  token_hash: Buffer;
  created_at: number;
  expires_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
  row_mac: Buffer | null;
}

export interface MasterKeysTable {
  key_id: string;
  check_value: Buffer;
  created_at: number;
  retired_at: number | null;
}

export interface FilesTable {
  id: string;
  owner_id: string;
  name: string;
  size: number;
  mime_type: string;
  sha256: Buffer;
  key_id: string;
  wrapped_dek: Buffer;
  format_version: number;
  chunk_size: number;
  created_at: number;
  wrap_version: Generated<number>;
  /** Which object holds the ciphertext (storage/blob-store.ts blobIdOf). */
  blob_gen: Generated<number>;
  /** Unsigned CRC-32 of the plaintext (zip entries); null for files uploaded before migration 12. */
  crc32: number | null;
  /** When the purge job crypto-shreds the file (ms); null: kept until deleted. */
  expires_at: number | null;
  /** The upload request the file arrived through (null for the owner's own uploads). */
  request_id: Generated<string | null>;
  /** Name and email the uploader gave on the request's page (null when not asked or not given). */
  uploader_name: Generated<string | null>;
  uploader_email: Generated<string | null>;
}

export interface SharesTable {
  id: string;
  file_id: string;
  owner_id: string;
  token_hash: Buffer;
  password_hash: string | null;
  note: string | null;
  created_at: number;
  expires_at: number;
  max_downloads: number | null;
  downloads: Generated<number>;
  bytes_served: Generated<number>;
  revoked_at: number | null;
  expired_at: number | null;
  row_mac: Buffer | null;
  /** 1: a link to several files (share_files); file_id is then only an anchor. */
  bundle: Generated<number>;
  /** 1: the file is purged once this link's last allowed download completed. */
  delete_file_after: Generated<number>;
}

/** The files of a bundle link, in order; file_id is null once that file was deleted. */
export interface ShareFilesTable {
  share_id: string;
  position: number;
  file_id: string | null;
  row_mac: Buffer;
}

export interface ShareReservationsTable {
  id: string;
  share_id: string;
  bytes: number;
  completion_slot: number;
  expires_at: number;
  bytes_sent: Generated<number>;
  slow_since: number | null;
  yielded: Generated<number>;
  ticket_id: string | null;
}

export interface ShareTicketDownloadsTable {
  share_id: string;
  ticket_id: string;
  expires_at: number;
}

export interface AuditEventsTable {
  seq: number;
  at: number;
  actor: string;
  action: string;
  subject_user_id: string | null;
  file_id: string | null;
  share_id: string | null;
  ip: string | null;
  user_agent: string | null;
  outcome: string;
  /** JSON text. */
  details: string;
  key_id: string;
  mac: Buffer;
}

export interface SecretsTable {
  name: string;
  key_id: string;
  wrapped: Buffer;
  created_at: number;
}

/** Written by the session store (http/pages/session.ts over db/sessions.ts); read and deleted by services/sessions.ts. */
export interface SessionsTable {
  sid: string;
  /** JSON text. */
  sess: string;
  /** ISO 8601 text. */
  expired: string;
}

/** Bytes reserved by uploads in flight on any instance; counted only until expires_at (ms). */
export interface QuotaLeasesTable {
  id: string;
  user_id: string;
  bytes: number;
  expires_at: number;
}

/** Rate-limit counters shared by every instance; `key` is a keyed hash, never the IP or name. */
export interface RateLimitsTable {
  key: Buffer;
  hits: number;
  reset_at: number;
}

/** The first-run setup code (one row at most, id 1): keyed hash and sealed code. */
export interface SetupCodeTable {
  id: number;
  key_id: string;
  code_mac: Buffer;
  sealed: Buffer;
  created_at: number;
}

/** Single-writer operation locks (ops/op-lock.ts). */
export interface OpLocksTable {
  name: string;
  /** Random per acquisition: only the holder renews or releases. */
  token: string;
  /** "backup (pid 123 on host, since ISO)": for the refusal message. */
  holder: string;
  acquired_at: number;
  expires_at: number;
}

/** One TOTP authenticator per user: the secret sealed under a master-key sub-key (services/mfa.ts). */
export interface MfaTotpTable {
  user_id: string;
  key_id: string;
  sealed: Buffer;
  confirmed_at: number | null;
  /** Newest accepted time step (replay guard). */
  last_step: Generated<number>;
  created_at: number;
}

/** Single-use recovery codes, as keyed hashes. */
export interface MfaRecoveryCodesTable {
  user_id: string;
  code_hash: Buffer;
  created_at: number;
  used_at: number | null;
}

/** WebAuthn credentials (public keys), MAC-sealed against planting. */
export interface MfaPasskeysTable {
  id: string;
  user_id: string;
  name: string;
  public_key: Buffer;
  counter: Generated<number>;
  transports: Generated<string>;
  row_mac: Buffer;
  created_at: number;
  last_used_at: number | null;
}

/** A pending "your second factors were reset" notice. */
export interface MfaNoticesTable {
  user_id: string;
  reset_at: number;
}

/** The admin page's REQUIRE_2FA switch (one row at most, id 1). */
export interface MfaPolicyTable {
  id: number;
  require_2fa: 'off' | 'admins' | 'all';
  updated_at: number;
}

/** Active legal holds (db/holds.ts): a held file cannot be deleted or purged by anyone. */
export interface LegalHoldsTable {
  scope: 'file' | 'user' | 'request';
  target_id: string;
  reason: string;
  reference: string | null;
  /** The admin's user id. */
  placed_by: string;
  placed_at: number;
}

/** Ciphertext of purged files still to remove (db/purge-queue.ts): the purge's crash journal. */
export interface PurgeQueueTable {
  blob_id: string;
  file_id: string;
  queued_at: number;
}

/** An owner's upload request (services/requests.ts); the token is only its keyed hash. */
export interface UploadRequestsTable {
  id: string;
  owner_id: string;
  token_hash: Buffer;
  title: string;
  message: string;
  password_hash: string | null;
  max_files: number;
  max_bytes: number;
  max_file_bytes: number;
  /** JSON array of lowercase extensions without the dot; null = any type. */
  allowed_types: string | null;
  require_name: number;
  require_email: number;
  created_at: number;
  expires_at: number;
  closed_at: number | null;
  files_received: Generated<number>;
  bytes_received: Generated<number>;
  /** Seconds the arriving files are kept (migration 19); null: the retention default. */
  file_retention_seconds: Generated<number | null>;
}

/** Files and bytes of uploads to a request still streaming on any instance; counted until expires_at (ms). */
export interface UploadRequestLeasesTable {
  id: string;
  request_id: string;
  files: number;
  bytes: number;
  expires_at: number;
}

/** Resumable (tus) uploads in progress or just completed (services/tus.ts, db/uploads.ts). */
export interface UploadsTable {
  id: string;
  owner_id: string;
  name: string;
  mime_type: string;
  length: number;
  /** Plaintext bytes durably stored (a chunk boundary, or `length` when complete). */
  committed: Generated<number>;
  chunk_size: number;
  /** The 69 header bytes of the ciphertext (salt, nonce prefix: not secret). */
  header: Buffer;
  key_id: string;
  /** The DEK wrapped under the master key, bound to this row; zeroed once complete. */
  wrapped_dek: Buffer;
  /** hash-wasm SHA-256 state at `committed`, sealed under a key derived from the DEK. */
  hash_state: Buffer | null;
  /** JSON: where the incomplete ciphertext lives (S3: multipart upload id, parts, staged bytes). */
  store_state: string | null;
  lease_id: string | null;
  lease_expires_at: number | null;
  created_at: number;
  expires_at: number;
  /** Set when the upload became a file. */
  file_id: string | null;
  sha256: Buffer | null;
  /** The upload request it goes to (null: the owner's own upload), and what its uploader gave. */
  request_id: string | null;
  uploader_name: string | null;
  uploader_email: string | null;
}

/** Per-user notification choices (services/notify/settings.ts). `prefs` is JSON: event type -> channels. */
export interface NotificationSettingsTable {
  user_id: string;
  email: string | null;
  prefs: string;
  updated_at: number;
}

/** One webhook per scope (a user id, or '*admin' for the audit stream); the secret is sealed. */
export interface WebhooksTable {
  id: string;
  scope: string;
  url: string;
  sealed: Buffer;
  created_at: number;
}

/** One delivery of an event over one channel; `event_id` is the idempotency key (db/outbox.ts). */
export interface NotificationOutboxTable {
  id: string;
  event_id: string;
  type: string;
  user_id: string | null;
  channel: 'email' | 'webhook';
  target: string;
  /** JSON text: the event as delivered, never a secret. */
  payload: string;
  /** What must not sit in the clear (a link URL for its recipient), sealed; cleared when done. */
  sealed: Buffer | null;
  status: Generated<'pending' | 'sent' | 'failed'>;
  attempts: Generated<number>;
  next_attempt_at: number;
  lease_owner: string | null;
  lease_until: number | null;
  last_error: string | null;
  last_attempt_at: number | null;
  created_at: number;
  delivered_at: number | null;
}

/** Keyed hashes of the client addresses a user signed in from (new-sign-in notices). */
export interface SignInAddressesTable {
  user_id: string;
  address_hash: Buffer;
  first_seen_at: number;
  last_seen_at: number;
}

/** Addresses a link was sent to by email. */
export interface ShareRecipientsTable {
  share_id: string;
  address: string;
  event_id: string;
  message: string | null;
  created_at: number;
}

/** OpenID Connect identities linked to users (migration 15, db/oidc-identities.ts). */
export interface OidcIdentitiesTable {
  issuer: string;
  subject: string;
  user_id: string;
  /** The email the provider last stated (shown on /account; never used to link). */
  email: string | null;
  created_at: number;
  last_login_at: number | null;
  /** MAC over issuer, subject and user id. */
  row_mac: Buffer;
}

/** The admin page's single sign-on switch (one row at most, id 1; migration 15). */
export interface SsoPolicyTable {
  id: number;
  disable_local_passwords: number;
  updated_at: number;
  row_mac: Buffer;
}

export interface Schema {
  users: UsersTable;
  api_tokens: ApiTokensTable;
  master_keys: MasterKeysTable;
  files: FilesTable;
  shares: SharesTable;
  share_reservations: ShareReservationsTable;
  share_ticket_downloads: ShareTicketDownloadsTable;
  share_files: ShareFilesTable;
  audit_events: AuditEventsTable;
  secrets: SecretsTable;
  sessions: SessionsTable;
  quota_leases: QuotaLeasesTable;
  rate_limits: RateLimitsTable;
  setup_code: SetupCodeTable;
  op_locks: OpLocksTable;
  mfa_totp: MfaTotpTable;
  mfa_recovery_codes: MfaRecoveryCodesTable;
  mfa_passkeys: MfaPasskeysTable;
  mfa_notices: MfaNoticesTable;
  mfa_policy: MfaPolicyTable;
  legal_holds: LegalHoldsTable;
  purge_queue: PurgeQueueTable;
  upload_requests: UploadRequestsTable;
  upload_request_leases: UploadRequestLeasesTable;
  uploads: UploadsTable;
  notification_settings: NotificationSettingsTable;
  webhooks: WebhooksTable;
  notification_outbox: NotificationOutboxTable;
  sign_in_addresses: SignInAddressesTable;
  share_recipients: ShareRecipientsTable;
  oidc_identities: OidcIdentitiesTable;
  sso_policy: SsoPolicyTable;
}
