/**
 * Envelope encryption of per-file DEKs under a master key's KEK (AES-256-GCM).
 * The associated data binds a wrapped DEK to its file row, so a wrapped key moved to
 * another row, or a row whose size, checksum or (wrap version 2) owner was edited, fails
 * to unwrap.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { IntegrityError, KEY_LENGTH, TAG_LENGTH } from './format.js';
import type { MasterKey } from './keyring.js';

/** Version 1 (the first release): no owner in the associated data. Still read, never written. */
const WRAP_LABEL_V1 = 'sfs/v1 dek wrap';
/** Version 2: the owner's user id is bound too. The label differs, so no row can be relabelled. */
const WRAP_LABEL_V2 = 'sfs/v2 dek wrap';
export type WrapVersion = 1 | 2;
/** The version every new wrap uses. */
export const CURRENT_WRAP_VERSION: WrapVersion = 2;
const WRAP_NONCE_LENGTH = 12;
/** nonce(12) ‖ encrypted DEK(32) ‖ tag(16) */
export const WRAPPED_DEK_LENGTH = WRAP_NONCE_LENGTH + KEY_LENGTH + TAG_LENGTH;

/** Everything about a file that its wrapped DEK is bound to. */
export interface WrapBinding {
  /** Which associated-data layout (the row's wrap_version). */
  wrapVersion: WrapVersion;
  fileId: string;
  /** The owner's user id; bound from wrap version 2 on (ignored by version 1). */
  ownerId: string;
  size: number;
  /** Plaintext SHA-256, 32 raw bytes. */
  sha256: Buffer;
  formatVersion: number;
  chunkSize: number;
}

/** Canonical, length-prefixed associated data: no two bindings encode to the same bytes. */
function associatedData(keyId: string, b: WrapBinding): Buffer {
  const tail = [String(b.size), b.sha256.toString('hex'), String(b.formatVersion), String(b.chunkSize)];
  let parts: string[];
  if (b.wrapVersion === 1) parts = [WRAP_LABEL_V1, b.fileId, keyId, ...tail];
  else if (b.wrapVersion === 2) parts = [WRAP_LABEL_V2, b.fileId, b.ownerId, keyId, ...tail];
  // A row naming an unknown version was edited (the column has a CHECK, but do not trust it).
  else throw new IntegrityError(`unknown wrap version ${String(b.wrapVersion)}`);
  return Buffer.concat(
    parts.map((p) => {
      const bytes = Buffer.from(p, 'utf8');
      const len = Buffer.alloc(4);
      len.writeUInt32BE(bytes.length);
      return Buffer.concat([len, bytes]);
    }),
  );
}

/** AES-256-GCM seal of a 32-byte key under the KEK, bound to `aad`: nonce ‖ ciphertext ‖ tag. */
function seal(key: MasterKey, plainKey: Buffer, aad: Buffer, nonce: Buffer): Buffer {
  if (plainKey.length !== KEY_LENGTH) throw new RangeError('wrapped keys are 32 bytes');
  if (nonce.length !== WRAP_NONCE_LENGTH) throw new RangeError('wrap nonce must be 12 bytes');
  const cipher = createCipheriv('aes-256-gcm', key.kek, nonce, { authTagLength: TAG_LENGTH });
  cipher.setAAD(aad);
  const ct = Buffer.concat([cipher.update(plainKey), cipher.final()]);
  return Buffer.concat([nonce, ct, cipher.getAuthTag()]);
}

/** Opens a seal(); the key is returned only after the tag verified, else IntegrityError(`failure`). */
function open(key: MasterKey, wrapped: Buffer, aad: Buffer, failure: string): Buffer {
  if (wrapped.length !== WRAPPED_DEK_LENGTH) throw new IntegrityError('wrapped key has the wrong length');
  const decipher = createDecipheriv('aes-256-gcm', key.kek, wrapped.subarray(0, WRAP_NONCE_LENGTH), { authTagLength: TAG_LENGTH });
  decipher.setAAD(aad);
  decipher.setAuthTag(wrapped.subarray(WRAP_NONCE_LENGTH + KEY_LENGTH));
  const plainKey = decipher.update(wrapped.subarray(WRAP_NONCE_LENGTH, WRAP_NONCE_LENGTH + KEY_LENGTH));
  try {
    decipher.final();
  } catch {
    plainKey.fill(0);
    throw new IntegrityError(failure);
  }
  return plainKey;
}

/** Wraps a DEK under `key`; `nonce` must be 12 fresh random bytes supplied by the caller. */
export function wrapDek(key: MasterKey, dek: Buffer, binding: WrapBinding, nonce: Buffer): Buffer {
  return seal(key, dek, associatedData(key.id, binding), nonce);
}

/** Unwraps a DEK; throws IntegrityError if the key, the binding or the wrapped bytes do not match. */
export function unwrapDek(key: MasterKey, wrapped: Buffer, binding: WrapBinding): Buffer {
  return open(key, wrapped, associatedData(key.id, binding), 'wrapped key does not belong to this file or key');
}

const SECRET_LABEL = 'sfs/v1 secret wrap';

function secretAad(keyId: string, name: string): Buffer {
  return Buffer.from(JSON.stringify([SECRET_LABEL, keyId, name]), 'utf8');
}

/** Wraps a named 32-byte service secret under `key`; `nonce` must be 12 fresh random bytes. */
export function wrapSecret(key: MasterKey, name: string, secret: Buffer, nonce: Buffer): Buffer {
  return seal(key, secret, secretAad(key.id, name), nonce);
}

/** Unwraps a named service secret; throws IntegrityError if key, name or bytes do not match. */
export function unwrapSecret(key: MasterKey, name: string, wrapped: Buffer): Buffer {
  return open(key, wrapped, secretAad(key.id, name), `secret "${name}" does not unwrap under key ${key.id}`);
}

const UPLOAD_WRAP_LABEL = 'sfs/v1 upload dek wrap';

/** What an incomplete (tus) upload's wrapped DEK is bound to: its row, owner, declared length and chunk size. */
export interface UploadWrapBinding {
  uploadId: string;
  ownerId: string;
  length: number;
  chunkSize: number;
}

function uploadAad(keyId: string, b: UploadWrapBinding): Buffer {
  // Its own label, so an upload's wrap can never pass as a file row's (or the reverse).
  return Buffer.from(JSON.stringify([UPLOAD_WRAP_LABEL, b.uploadId, b.ownerId, keyId, String(b.length), String(b.chunkSize)]), 'utf8');
}

/** Wraps an incomplete upload's DEK under `key`, bound to its uploads row; `nonce` must be 12 fresh random bytes. */
export function wrapUploadDek(key: MasterKey, dek: Buffer, binding: UploadWrapBinding, nonce: Buffer): Buffer {
  return seal(key, dek, uploadAad(key.id, binding), nonce);
}

/** Unwraps an incomplete upload's DEK; IntegrityError when the row, key or bytes do not match. */
export function unwrapUploadDek(key: MasterKey, wrapped: Buffer, binding: UploadWrapBinding): Buffer {
  return open(key, wrapped, uploadAad(key.id, binding), 'wrapped upload key does not belong to this upload or key');
}
