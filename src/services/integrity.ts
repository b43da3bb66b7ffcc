/**
 * Integrity against someone who can write the database but does not hold the master key.
 *
 * One random 32-byte root, kept in `secrets` wrapped under the master key (and rewrapped by
 * `sfs key rotate` like the audit root), gives two keys by HKDF, each under its own label:
 *
 * - the lookup key: every stored secret lookup (API token, share-link token, session id) is
 *   stored as HMAC-SHA256(k_lookup, SHA-256(secret)). Without the key nobody can compute the
 *   stored value of a token they chose, so inserting a row grants nothing. Defining it over
 *   the SHA-256 lets rows of the first release (which stored the SHA-256) be re-keyed without
 *   knowing the tokens.
 * - the row key: a MAC over a canonical, length-prefixed encoding of the fields of a row that
 *   grant power (a user's role, disabled flag, password hash, quota; a token's user, expiry
 *   and revocation; a link's file, owner, password, limits, counters and revocation; a
 *   session's user and sign-in time). Every write through the repositories re-seals the row;
 *   the MAC is checked where the row is used to authenticate, so an edited row is refused.
 *   A MAC cannot tell an old copy of a row from the current one: see docs/security.md.
 *
 * The root is created, and every existing row re-keyed and sealed, in one transaction the
 * first time a database is opened by this version (`openIntegrity`): the root's presence is
 * the record that the upgrade ran, so it runs once.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { CURRENT_WRAP_VERSION, unwrapDek, unwrapSecret, wrapDek, wrapSecret } from '../crypto/envelope.js';
import { deriveSubkey, type Keyring } from '../crypto/keyring.js';
import type { Database, Trx } from '../db/database.js';
import { MasterKeysRepo } from '../db/master-keys.js';
import { SecretsRepo } from '../db/secrets.js';
import { IntegrityError } from '../crypto/format.js';

/** Name of the wrapped secret the lookup and row-MAC keys are derived from. */
export const INTEGRITY_ROOT_SECRET = 'integrity-root';
const LOOKUP_LABEL = 'sfs/v1 secret lookup';
const ROW_MAC_LABEL = 'sfs/v1 row mac';
const SESSION_COOKIE_LABEL = 'sfs/v1 session cookie signing';

/** A value a row MAC covers: strings and safe integers; booleans are written as 0/1. */
export type MacField = string | number | boolean | null;

/** Keys derived from the integrity root; they never leave the process. */
export class IntegrityKeys {
  private readonly lookupKey: Buffer;
  private readonly rowKey: Buffer;
  /** Signs page session cookies (HKDF under its own label); survives key rotation with the root. */
  readonly sessionCookieKey: Buffer;

  constructor(root: Buffer) {
    this.lookupKey = deriveSubkey(root, LOOKUP_LABEL);
    this.rowKey = deriveSubkey(root, ROW_MAC_LABEL);
    this.sessionCookieKey = deriveSubkey(root, SESSION_COOKIE_LABEL);
  }

  /** The stored lookup value of a secret: HMAC(k_lookup, SHA-256(secret)). */
  lookup(secret: string): Buffer {
    return this.rekey(createHash('sha256').update(secret, 'utf8').digest());
  }

  /** The stored lookup value from a secret's SHA-256 (re-keys rows of the first release). */
  rekey(sha256: Buffer): Buffer {
    return createHmac('sha256', this.lookupKey).update(sha256).digest();
  }

  /** MAC of a row of `table` over `fields` (order matters; see encodeFields). */
  rowMac(table: string, fields: MacField[]): Buffer {
    return createHmac('sha256', this.rowKey).update(encodeFields([ROW_MAC_LABEL, table, ...fields])).digest();
  }

  /** True when `mac` is the MAC of these fields (constant time); a missing MAC never matches. */
  rowMacMatches(table: string, fields: MacField[], mac: Buffer | null | undefined): boolean {
    if (!mac) return false;
    const expected = this.rowMac(table, fields);
    return mac.length === expected.length && timingSafeEqual(mac, expected);
  }
}

/**
 * Canonical encoding: each field is one tag byte (0 = null, 1 = value) and, for a value, its
 * UTF-8 bytes behind a 4-byte big-endian length. Numbers are written in decimal, booleans as
 * "0"/"1". No two field lists encode to the same bytes.
 */
export function encodeFields(fields: MacField[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of fields) {
    if (f === null) {
      parts.push(Buffer.from([0]));
      continue;
    }
    if (typeof f === 'number' && !Number.isSafeInteger(f)) throw new RangeError('row MAC fields are integers');
    const text = typeof f === 'boolean' ? (f ? '1' : '0') : String(f);
    const bytes = Buffer.from(text, 'utf8');
    const head = Buffer.alloc(5);
    head[0] = 1;
    head.writeUInt32BE(bytes.length, 1);
    parts.push(head, bytes);
  }
  return Buffer.concat(parts);
}

// Field lists, in one place so writers and checkers cannot drift apart.

/**
 * What a user row's MAC covers: everything that decides who may sign in and with what power,
 * and the admin password-reset stamp (removing it would hide a reset from the user).
 */
export function userMacFields(u: {
  id: string;
  username: string;
  role: string;
  disabled: boolean;
  passwordHash: string;
  quotaBytes: number | null;
  passwordResetAt: number | null;
}): MacField[] {
  return [u.id, u.username, u.role, u.disabled, u.passwordHash, u.quotaBytes, u.passwordResetAt];
}

/** What a single sign-on identity row's MAC covers: which provider identity signs in as which user. */
export function identityMacFields(i: { issuer: string; subject: string; userId: string }): MacField[] {
  return [i.issuer, i.subject, i.userId];
}

/** What an API token row's MAC covers (not its name or last use, which grant nothing). */
export function tokenMacFields(t: { id: string; userId: string; tokenHash: Buffer; expiresAt: number; revokedAt: number | null }): MacField[] {
  return [t.id, t.userId, t.tokenHash.toString('hex'), t.expiresAt, t.revokedAt];
}

/** What a share row's MAC covers (not its note or the sweep's expired_at: expiry is checked against expires_at). */
export function shareMacFields(s: {
  id: string;
  fileId: string;
  ownerId: string;
  tokenHash: Buffer;
  passwordHash: string | null;
  expiresAt: number;
  maxDownloads: number | null;
  downloads: number;
  bytesServed: number;
  revokedAt: number | null;
  /** A bundle link: its file_id is only an anchor that moves when that file is deleted (share_files holds the files). */
  bundle?: boolean;
}): MacField[] {
  // A bundle seals the flag instead of the anchor: flipping it either way breaks the MAC.
  return [s.id, s.bundle ? '*bundle' : s.fileId, s.ownerId, s.tokenHash.toString('hex'), s.passwordHash, s.expiresAt, s.maxDownloads, s.downloads, s.bytesServed, s.revokedAt];
}

/** What a session's seal covers: the store key (so a seal cannot move to another row), the user and the sign-in time. */
export function sessionMacFields(storeKey: string, uidJson: string, createdAtJson: string): MacField[] {
  return [storeKey, uidJson, createdAtJson];
}

/** Counts of rows the one-off upgrade re-keyed or sealed. */
export interface IntegrityUpgrade {
  users: number;
  tokens: number;
  shares: number;
  sessions: number;
  /** File rows rewrapped from wrap version 1 to the current version (under their own key). */
  files: number;
}

/**
 * The integrity keys of this database. On the first open by this version (no root yet) it
 * creates the root and, in the same immediate transaction, re-keys and seals every existing
 * row, and returns what it did as `upgraded` (null on every later open).
 * Throws IntegrityError when the root exists under a key that is not loaded or does not unwrap.
 */
export async function openIntegrity(db: Database, keyring: Keyring, now = Date.now()): Promise<{ keys: IntegrityKeys; upgraded: IntegrityUpgrade | null }> {
  const read = async (secrets: SecretsRepo): Promise<IntegrityKeys | null> => {
    const row = await secrets.get(INTEGRITY_ROOT_SECRET);
    if (!row) return null;
    const master = keyring.get(row.keyId);
    if (!master) throw new IntegrityError(`secret "${INTEGRITY_ROOT_SECRET}" is wrapped under master key ${row.keyId}, which is not loaded`);
    const root = unwrapSecret(master, INTEGRITY_ROOT_SECRET, row.wrapped);
    const keys = new IntegrityKeys(root);
    root.fill(0);
    return keys;
  };
  const existing = await read(new SecretsRepo(db.kysely));
  if (existing) return { keys: existing, upgraded: null };
  return db.transaction(async (trx) => {
    // Another process may have won the race between the read above and this lock.
    const raced = await read(new SecretsRepo(trx));
    if (raced) return { keys: raced, upgraded: null };
    const root = randomBytes(32);
    const active = keyring.active;
    await new MasterKeysRepo(trx).insertIfMissing(active.id, active.checkValue, now);
    await trx
      .insertInto('secrets')
      .values({ name: INTEGRITY_ROOT_SECRET, key_id: active.id, wrapped: wrapSecret(active, INTEGRITY_ROOT_SECRET, root, randomBytes(12)), created_at: now })
      .execute();
    const keys = new IntegrityKeys(root);
    root.fill(0);
    return { keys, upgraded: await upgradeRows(trx, keyring, keys) };
  });
}

/**
 * Re-keys lookups stored as plain SHA-256 by the first release and seals every row. Runs
 * only inside openIntegrity's transaction, right after the root was created: it trusts the
 * rows as they are at that moment (there was nothing to check them against before).
 */
async function upgradeRows(db: Trx, keyring: Keyring, keys: IntegrityKeys): Promise<IntegrityUpgrade> {
  const out: IntegrityUpgrade = { users: 0, tokens: 0, shares: 0, sessions: 0, files: 0 };
  const n = (r: { numUpdatedRows: bigint }) => Number(r.numUpdatedRows);
  const users = await db.selectFrom('users').select(['id', 'username', 'role', 'disabled', 'password_hash', 'quota_bytes', 'password_reset_at']).execute();
  for (const u of users) {
    const mac = keys.rowMac('users', userMacFields({ id: u.id, username: u.username, role: u.role, disabled: u.disabled === 1, passwordHash: u.password_hash, quotaBytes: u.quota_bytes, passwordResetAt: u.password_reset_at ?? null }));
    out.users += n(await db.updateTable('users').set({ integrity_mac: mac }).where('id', '=', u.id).executeTakeFirst());
  }
  const tokens = await db.selectFrom('api_tokens').select(['id', 'user_id', 'token_hash', 'expires_at', 'revoked_at']).execute();
  for (const t of tokens) {
    const tokenHash = keys.rekey(t.token_hash);
    const mac = keys.rowMac('api_tokens', tokenMacFields({ id: t.id, userId: t.user_id, tokenHash, expiresAt: t.expires_at, revokedAt: t.revoked_at }));
    out.tokens += n(await db.updateTable('api_tokens').set({ token_hash: tokenHash, row_mac: mac }).where('id', '=', t.id).executeTakeFirst());
  }
  const shares = await db
    .selectFrom('shares')
    .select(['id', 'file_id', 'owner_id', 'token_hash', 'password_hash', 'expires_at', 'max_downloads', 'downloads', 'bytes_served', 'revoked_at', 'bundle'])
    .execute();
  for (const s of shares) {
    const tokenHash = keys.rekey(s.token_hash);
    const mac = keys.rowMac(
      'shares',
      shareMacFields({
        id: s.id,
        fileId: s.file_id,
        ownerId: s.owner_id,
        tokenHash,
        passwordHash: s.password_hash,
        expiresAt: s.expires_at,
        maxDownloads: s.max_downloads,
        downloads: s.downloads,
        bytesServed: s.bytes_served,
        revokedAt: s.revoked_at,
        bundle: s.bundle === 1,
      }),
    );
    out.shares += n(await db.updateTable('shares').set({ token_hash: tokenHash, row_mac: mac }).where('id', '=', s.id).executeTakeFirst());
  }
  const sessions = await db.selectFrom('sessions').select(['sid', 'sess']).execute();
  for (const r of sessions) {
    let sess: Record<string, unknown>;
    try {
      sess = JSON.parse(r.sess) as Record<string, unknown>;
    } catch {
      continue; // unreadable: the store would refuse it anyway, and the sweep removes it
    }
    if (!/^[0-9a-f]{64}$/.test(r.sid)) continue;
    const key = keys.rekey(Buffer.from(r.sid, 'hex')).toString('hex');
    sess.seal = sealSession(keys, key, sess);
    out.sessions += n(await db.updateTable('sessions').set({ sid: key, sess: JSON.stringify(sess) }).where('sid', '=', r.sid).executeTakeFirst());
  }
  // Wrap version 1 rows: rewrap under their own key with the owner bound. A database writer
  // cannot undo this (a version-2 wrap does not open under the version-1 layout).
  const files = await db
    .selectFrom('files')
    .select(['id', 'owner_id', 'key_id', 'wrapped_dek', 'size', 'sha256', 'format_version', 'chunk_size'])
    .where('wrap_version', '=', 1)
    .execute();
  for (const f of files) {
    const key = keyring.get(f.key_id);
    if (!key) continue; // left for `sfs key rotate`, which reports it
    const binding = { fileId: f.id, ownerId: f.owner_id, size: f.size, sha256: f.sha256, formatVersion: f.format_version, chunkSize: f.chunk_size };
    let dek: Buffer;
    try {
      dek = unwrapDek(key, f.wrapped_dek, { ...binding, wrapVersion: 1 });
    } catch {
      continue; // already damaged: downloads and scrub report it
    }
    const wrapped = wrapDek(key, dek, { ...binding, wrapVersion: CURRENT_WRAP_VERSION }, randomBytes(12));
    dek.fill(0);
    out.files += n(
      await db.updateTable('files').set({ wrapped_dek: wrapped, wrap_version: CURRENT_WRAP_VERSION }).where('id', '=', f.id).where('wrapped_dek', '=', f.wrapped_dek).executeTakeFirst(),
    );
  }
  return out;
}

/** The seal a session row carries in `sess.seal` (hex). Values of any JSON type are covered as their JSON text. */
export function sealSession(keys: IntegrityKeys, storeKey: string, sess: { uid?: unknown; createdAt?: unknown }): string {
  return keys.rowMac('sessions', sessionMacFields(storeKey, JSON.stringify(sess.uid ?? null), JSON.stringify(sess.createdAt ?? null))).toString('hex');
}

/** True when a loaded session's seal matches its store key, user and sign-in time. */
export function sessionSealMatches(keys: IntegrityKeys, storeKey: string, sess: { uid?: unknown; createdAt?: unknown; seal?: unknown }): boolean {
  if (typeof sess.seal !== 'string' || !/^[0-9a-f]{64}$/.test(sess.seal)) return false;
  const expected = Buffer.from(sealSession(keys, storeKey, sess), 'hex');
  return timingSafeEqual(expected, Buffer.from(sess.seal, 'hex'));
}
