/**
 * Master-key operations: status, rotation (rewrap every DEK and service secret under the
 * active key, never touching ciphertext, upgrading old wraps to the current wrap version on
 * the way), and retiring keys nothing references any more. The integrity root (lookups and
 * row MACs) is a service secret, so rotation carries it along and nothing else changes.
 */
import { randomBytes } from 'node:crypto';
import { CURRENT_WRAP_VERSION, unwrapDek, unwrapSecret, unwrapUploadDek, wrapDek, wrapSecret, wrapUploadDek, type WrapVersion } from '../crypto/envelope.js';
import { Keyring } from '../crypto/keyring.js';
import { sql } from '../db/kysely.js';
import type { Database } from '../db/database.js';
import { MasterKeysRepo } from '../db/master-keys.js';
import { SecretsRepo } from '../db/secrets.js';
import { TotpRepo } from '../db/mfa-totp.js';
import { rewrapTotpSecrets } from '../services/mfa.js';

export interface KeyStatus {
  keyId: string;
  inKeyring: boolean;
  inDatabase: boolean;
  active: boolean;
  files: number;
  /** null when the key is not in both places (nothing to compare). */
  checkValueMatches: boolean | null;
}

/** One line per key id known to the keyring or the database. */
export async function keyStatus(db: Database, keyring: Keyring): Promise<KeyStatus[]> {
  const repo = new MasterKeysRepo(db.kysely);
  const rows = new Map((await repo.list()).map((r) => [r.keyId, r]));
  const counts = await repo.fileCounts();
  const ids = [...new Set([...keyring.ids(), ...rows.keys(), ...counts.keys()])];
  return ids.map((id) => {
    const key = keyring.get(id);
    const row = rows.get(id);
    return {
      keyId: id,
      inKeyring: key !== undefined,
      inDatabase: row !== undefined,
      active: keyring.active.id === id,
      files: counts.get(id) ?? 0,
      checkValueMatches: key && row ? Keyring.checkMatches(key, row.checkValue) : null,
    };
  });
}

export interface RotateProgress {
  done: number;
  total: number;
}

export interface RotateResult {
  rewrapped: number;
  /** Files another writer changed or deleted mid-rotation (compare-and-swap lost); harmless. */
  skipped: number;
  /** Files whose old key is not loaded, or whose wrapped DEK did not unwrap. */
  failed: { id: string; reason: string }[];
  secrets: number;
  /** Incomplete (tus) uploads whose DEK was rewrapped under the active key. */
  uploads?: number;
  interrupted: boolean;
}

interface RowToRewrap {
  id: string;
  owner_id: string;
  key_id: string;
  wrap_version: number;
  wrapped_dek: Buffer;
  size: number;
  sha256: Buffer;
  format_version: number;
  chunk_size: number;
}

/**
 * Rewraps every DEK not under the active key or not at the current wrap version (which also
 * binds the owner), in batches: each batch is one transaction and each row update is a
 * compare-and-swap on the old key id and wrapped DEK, so this is safe while the server runs,
 * safe to interrupt (`shouldStop`) and safe to run again (it continues where it stopped).
 */
export async function rotate(
  db: Database,
  keyring: Keyring,
  opts: { batchSize?: number; onProgress?: (p: RotateProgress) => void; shouldStop?: () => boolean } = {},
): Promise<RotateResult> {
  const active = keyring.active;
  const batchSize = opts.batchSize ?? 200;
  const k = db.kysely;
  await new MasterKeysRepo(k).insertIfMissing(active.id, active.checkValue, Date.now());
  const stale = () =>
    k.selectFrom('files').where((eb) => eb.or([eb('key_id', '!=', active.id), eb('wrap_version', '!=', CURRENT_WRAP_VERSION)]));
  const total = Number((await stale().select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
  const result: RotateResult = { rewrapped: 0, skipped: 0, failed: [], secrets: 0, interrupted: false };
  const failedIds = new Set<string>();
  let after = '';
  for (;;) {
    if (opts.shouldStop?.()) {
      result.interrupted = true;
      break;
    }
    const rows: RowToRewrap[] = await stale()
      .select(['id', 'owner_id', 'key_id', 'wrap_version', 'wrapped_dek', 'size', 'sha256', 'format_version', 'chunk_size'])
      .where('id', '>', after)
      .orderBy('id')
      .limit(batchSize)
      .execute();
    if (rows.length === 0) break;
    after = rows.at(-1)!.id;
    // Crypto is synchronous, so the whole batch (unwrap, wrap, CAS update) fits in one short
    // transaction that awaits only its own updates (never a network or blob-store round trip).
    await db.transaction(async (trx) => {
      for (const r of rows) {
        const old = keyring.get(r.key_id);
        if (!old) {
          if (!failedIds.has(r.id)) result.failed.push({ id: r.id, reason: `key ${r.key_id} is not loaded` });
          failedIds.add(r.id);
          continue;
        }
        const binding = { fileId: r.id, ownerId: r.owner_id, size: r.size, sha256: r.sha256, formatVersion: r.format_version, chunkSize: r.chunk_size };
        let dek: Buffer;
        try {
          // Under the layout the row names; a version-1 row whose owner was edited still opens
          // here (version 1 does not bind the owner): its owner is taken as it is now.
          dek = unwrapDek(old, r.wrapped_dek, { ...binding, wrapVersion: r.wrap_version as WrapVersion });
        } catch {
          result.failed.push({ id: r.id, reason: 'wrapped key does not unwrap (row altered?)' });
          failedIds.add(r.id);
          continue;
        }
        const wrapped = wrapDek(active, dek, { ...binding, wrapVersion: CURRENT_WRAP_VERSION }, randomBytes(12));
        dek.fill(0);
        // The owner is in the WHERE too: the new wrap binds the owner read here.
        const u = await trx
          .updateTable('files')
          .set({ key_id: active.id, wrapped_dek: wrapped, wrap_version: CURRENT_WRAP_VERSION })
          .where('id', '=', r.id)
          .where('owner_id', '=', r.owner_id)
          .where('key_id', '=', r.key_id)
          .where('wrapped_dek', '=', r.wrapped_dek)
          .executeTakeFirst();
        if (Number(u.numUpdatedRows) === 1) result.rewrapped++;
        else result.skipped++;
      }
    });
    opts.onProgress?.({ done: result.rewrapped + result.skipped + result.failed.length, total });
  }
  if (!result.interrupted) {
    result.secrets = await rotateSecrets(db, keyring, result);
    // TOTP secrets are sealed under a sub-key of the master key: they move with it.
    const totp = await rewrapTotpSecrets(db, keyring);
    result.secrets += totp.rewrapped;
    result.failed.push(...totp.failed);
    result.uploads = await rewrapOpenUploads(db, keyring, result);
  }
  await checkpointWal(db);
  return result;
}

/**
 * Copies the WAL into the database and truncates it, so the old wrapped keys a rewrite
 * replaced do not linger in the -wal file (secure_delete clears them in the database pages).
 * False when a reader kept it from completing (SQLite's own checkpoints finish it later).
 */
export async function checkpointWal(db: Database): Promise<boolean> {
  // sqlite-only: other databases have no WAL file of ours to clear.
  if (db.dialect !== 'sqlite') return true;
  try {
    const { rows } = await sql<{ busy: number }>`PRAGMA wal_checkpoint(TRUNCATE)`.execute(db.kysely);
    return rows[0]?.busy === 0;
  } catch {
    return false;
  }
}

/**
 * Rewraps the DEKs of incomplete (tus) uploads under the active key, so an upload begun before a
 * rotation still completes after the old key is retired. Same compare-and-swap as file rows:
 * a PATCH that completed the upload meanwhile (the wrap is zeroed then) simply loses the race.
 */
async function rewrapOpenUploads(db: Database, keyring: Keyring, result: RotateResult): Promise<number> {
  const active = keyring.active;
  const rows = await db.kysely
    .selectFrom('uploads')
    .select(['id', 'owner_id', 'key_id', 'wrapped_dek', 'length', 'chunk_size'])
    .where('file_id', 'is', null)
    .where('key_id', '!=', active.id)
    .execute();
  let n = 0;
  for (const r of rows) {
    const old = keyring.get(r.key_id);
    if (!old) {
      result.failed.push({ id: `upload:${r.id}`, reason: `key ${r.key_id} is not loaded` });
      continue;
    }
    const binding = { uploadId: r.id, ownerId: r.owner_id, length: r.length, chunkSize: r.chunk_size };
    let dek: Buffer;
    try {
      dek = unwrapUploadDek(old, r.wrapped_dek, binding);
    } catch {
      result.failed.push({ id: `upload:${r.id}`, reason: 'wrapped upload key does not unwrap (row altered?)' });
      continue;
    }
    const wrapped = wrapUploadDek(active, dek, binding, randomBytes(12));
    dek.fill(0);
    const u = await db.kysely
      .updateTable('uploads')
      .set({ key_id: active.id, wrapped_dek: wrapped })
      .where('id', '=', r.id)
      .where('key_id', '=', r.key_id)
      .where('wrapped_dek', '=', r.wrapped_dek)
      .where('file_id', 'is', null)
      .executeTakeFirst();
    if (Number(u.numUpdatedRows) === 1) n++;
  }
  return n;
}

/** Rewraps service secrets (e.g. the audit MAC root) under the active key. */
async function rotateSecrets(db: Database, keyring: Keyring, result: RotateResult): Promise<number> {
  const repo = new SecretsRepo(db.kysely);
  let n = 0;
  for (const s of await repo.list()) {
    if (s.keyId === keyring.active.id) continue;
    const old = keyring.get(s.keyId);
    if (!old) {
      result.failed.push({ id: `secret:${s.name}`, reason: `key ${s.keyId} is not loaded` });
      continue;
    }
    const secret = unwrapSecret(old, s.name, s.wrapped);
    const wrapped = wrapSecret(keyring.active, s.name, secret, randomBytes(12));
    secret.fill(0);
    if (await repo.rewrap(s.name, s.keyId, keyring.active.id, wrapped)) n++;
  }
  return n;
}

export class KeyInUseError extends Error {
  constructor(
    readonly keyId: string,
    readonly files: number,
    readonly secrets: number,
  ) {
    super(`key ${keyId} still wraps ${files} file(s) and ${secrets} service secret(s); run "sfs key rotate" first`);
    this.name = 'KeyInUseError';
  }
}

/** Removes a key's check value once no file or secret references it; throws KeyInUseError otherwise. */
export function retire(db: Database, keyId: string): Promise<boolean> {
  return db.transaction(async (trx) => {
    const files = (await new MasterKeysRepo(trx).fileCounts()).get(keyId) ?? 0;
    // Open uploads count as secrets here: their wrapped DEKs need the key until rotated.
    const openUploads = Number(
      (await trx.selectFrom('uploads').select((eb) => eb.fn.countAll<number>().as('n')).where('key_id', '=', keyId).where('file_id', 'is', null).executeTakeFirstOrThrow()).n,
    );
    const secrets = (await new SecretsRepo(trx).countUnderKey(keyId)) + (await new TotpRepo(trx).countUnderKey(keyId)) + openUploads;
    if (files || secrets) throw new KeyInUseError(keyId, files, secrets);
    return new MasterKeysRepo(trx).delete(keyId);
  });
}
