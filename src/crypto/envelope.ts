/**
 * Envelope encryption of per-file DEKs under a master key's KEK (AES-256-GCM).
 * The associated data binds a wrapped DEK to its file row, so a wrapped key moved to
 * another row, or a row whose size or checksum was edited, fails to unwrap.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { IntegrityError, KEY_LENGTH, TAG_LENGTH } from './format.js';
import type { MasterKey } from './keyring.js';

const WRAP_LABEL = 'sfs/v1 dek wrap';
const WRAP_NONCE_LENGTH = 12;
/** nonce(12) ‖ encrypted DEK(32) ‖ tag(16) */
export const WRAPPED_DEK_LENGTH = WRAP_NONCE_LENGTH + KEY_LENGTH + TAG_LENGTH;

/** Everything about a file that its wrapped DEK is bound to. */
export interface WrapBinding {
  fileId: string;
  size: number;
  /** Plaintext SHA-256, 32 raw bytes. */
  sha256: Buffer;
  formatVersion: number;
  chunkSize: number;
}

/** Canonical, length-prefixed associated data: no two bindings encode to the same bytes. */
function associatedData(keyId: string, b: WrapBinding): Buffer {
  const parts = [WRAP_LABEL, b.fileId, keyId, String(b.size), b.sha256.toString('hex'), String(b.formatVersion), String(b.chunkSize)];
  return Buffer.concat(
    parts.map((p) => {
      const bytes = Buffer.from(p, 'utf8');
      const len = Buffer.alloc(4);
      len.writeUInt32BE(bytes.length);
      return Buffer.concat([len, bytes]);
    }),
  );
}

/** Wraps a DEK under `key`; `nonce` must be 12 fresh random bytes supplied by the caller. */
export function wrapDek(key: MasterKey, dek: Buffer, binding: WrapBinding, nonce: Buffer): Buffer {
  if (dek.length !== KEY_LENGTH) throw new RangeError('DEK must be 32 bytes');
  if (nonce.length !== WRAP_NONCE_LENGTH) throw new RangeError('wrap nonce must be 12 bytes');
  const cipher = createCipheriv('aes-256-gcm', key.kek, nonce, { authTagLength: TAG_LENGTH });
  cipher.setAAD(associatedData(key.id, binding));
  const ct = Buffer.concat([cipher.update(dek), cipher.final()]);
  return Buffer.concat([nonce, ct, cipher.getAuthTag()]);
}

/** Unwraps a DEK; throws IntegrityError if the key, the binding or the wrapped bytes do not match. */
export function unwrapDek(key: MasterKey, wrapped: Buffer, binding: WrapBinding): Buffer {
  if (wrapped.length !== WRAPPED_DEK_LENGTH) throw new IntegrityError('wrapped key has the wrong length');
  const nonce = wrapped.subarray(0, WRAP_NONCE_LENGTH);
  const ct = wrapped.subarray(WRAP_NONCE_LENGTH, WRAP_NONCE_LENGTH + KEY_LENGTH);
  const tag = wrapped.subarray(WRAP_NONCE_LENGTH + KEY_LENGTH);
  const decipher = createDecipheriv('aes-256-gcm', key.kek, nonce, { authTagLength: TAG_LENGTH });
  decipher.setAAD(associatedData(key.id, binding));
  decipher.setAuthTag(tag);
  const dek = decipher.update(ct);
  try {
    decipher.final();
  } catch {
    dek.fill(0);
    throw new IntegrityError('wrapped key does not belong to this file or key');
  }
  return dek;
}

const SECRET_LABEL = 'sfs/v1 secret wrap';

function secretAad(keyId: string, name: string): Buffer {
  return Buffer.from(JSON.stringify([SECRET_LABEL, keyId, name]), 'utf8');
}

/** Wraps a named 32-byte service secret under `key`; `nonce` must be 12 fresh random bytes. */
export function wrapSecret(key: MasterKey, name: string, secret: Buffer, nonce: Buffer): Buffer {
  if (secret.length !== KEY_LENGTH) throw new RangeError('secret must be 32 bytes');
  const cipher = createCipheriv('aes-256-gcm', key.kek, nonce, { authTagLength: TAG_LENGTH });
  cipher.setAAD(secretAad(key.id, name));
  const ct = Buffer.concat([cipher.update(secret), cipher.final()]);
  return Buffer.concat([nonce, ct, cipher.getAuthTag()]);
}

/** Unwraps a named service secret; throws IntegrityError if key, name or bytes do not match. */
export function unwrapSecret(key: MasterKey, name: string, wrapped: Buffer): Buffer {
  if (wrapped.length !== WRAPPED_DEK_LENGTH) throw new IntegrityError('wrapped secret has the wrong length');
  const decipher = createDecipheriv('aes-256-gcm', key.kek, wrapped.subarray(0, WRAP_NONCE_LENGTH), { authTagLength: TAG_LENGTH });
  decipher.setAAD(secretAad(key.id, name));
  decipher.setAuthTag(wrapped.subarray(WRAP_NONCE_LENGTH + KEY_LENGTH));
  const secret = decipher.update(wrapped.subarray(WRAP_NONCE_LENGTH, WRAP_NONCE_LENGTH + KEY_LENGTH));
  try {
    decipher.final();
  } catch {
    secret.fill(0);
    throw new IntegrityError(`secret "${name}" does not unwrap under key ${key.id}`);
  }
  return secret;
}
