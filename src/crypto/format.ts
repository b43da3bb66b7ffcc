/**
 * The on-disk ciphertext format: a versioned header followed by AES-256-GCM chunks
 * (the STREAM construction used by age, Tink and MinIO DARE). See docs/format.md.
 *
 * This module is pure: it sees only the buffers it is given. Keys and randomness
 * (DEK, salt, nonce prefix) come from the caller, files and sockets stay outside.
 */
import { createCipheriv, createDecipheriv, hkdfSync } from 'node:crypto';

export const MAGIC = Buffer.from('SFSCRYPT', 'latin1'); // 8 bytes
export const FORMAT_VERSION = 1;
/** Suite 1: AES-256-GCM chunks, 16-byte tags, HKDF-SHA256 payload key. */
export const SUITE_AES256GCM_HKDF_SHA256 = 1;
export const DEFAULT_CHUNK_SIZE = 64 * 1024;
export const TAG_LENGTH = 16;
export const KEY_LENGTH = 32;
export const FILE_ID_LENGTH = 16;
export const SALT_LENGTH = 32;
export const NONCE_PREFIX_LENGTH = 7;
/** magic(8) version(1) suite(1) chunkSize(4) fileId(16) salt(32) noncePrefix(7) */
export const HEADER_LENGTH = 8 + 1 + 1 + 4 + FILE_ID_LENGTH + SALT_LENGTH + NONCE_PREFIX_LENGTH;
/** Chunk index is a u32, so a file has at most 2^32 chunks (256 TiB at 64 KiB). */
const MAX_CHUNKS = 2 ** 32;
const MIN_CHUNK_SIZE = 1024;
const MAX_CHUNK_SIZE = 16 * 1024 * 1024;
const PAYLOAD_INFO_LABEL = Buffer.from('sfs/v1 payload key', 'latin1');

export interface Header {
  version: number;
  suite: number;
  chunkSize: number;
  /** 16 raw bytes; the API shows them as 32 hex characters. */
  fileId: Buffer;
  salt: Buffer;
  noncePrefix: Buffer;
}

/** Thrown whenever ciphertext fails authentication or is malformed; never carries key material. */
export class IntegrityError extends Error {
  constructor(
    message: string,
    /** Index of the chunk that failed, or null for header/length problems. */
    readonly chunkIndex: number | null = null,
  ) {
    super(message);
    this.name = 'IntegrityError';
  }
}

/** Serialises a header; every byte of it is later bound into the payload key. */
export function encodeHeader(h: Omit<Header, 'version' | 'suite'>): Buffer {
  if (h.fileId.length !== FILE_ID_LENGTH) throw new RangeError('fileId must be 16 bytes');
  if (h.salt.length !== SALT_LENGTH) throw new RangeError('salt must be 32 bytes');
  if (h.noncePrefix.length !== NONCE_PREFIX_LENGTH) throw new RangeError('noncePrefix must be 7 bytes');
  assertChunkSize(h.chunkSize);
  const out = Buffer.alloc(HEADER_LENGTH);
  let o = MAGIC.copy(out, 0);
  out[o++] = FORMAT_VERSION;
  out[o++] = SUITE_AES256GCM_HKDF_SHA256;
  out.writeUInt32BE(h.chunkSize, o);
  o += 4;
  o += h.fileId.copy(out, o);
  o += h.salt.copy(out, o);
  h.noncePrefix.copy(out, o);
  return out;
}

/** Parses and checks a header; unknown magic, version, suite or chunk size is an IntegrityError. */
export function parseHeader(buf: Buffer): Header {
  if (buf.length < HEADER_LENGTH) throw new IntegrityError('ciphertext shorter than its header');
  if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) throw new IntegrityError('not an sfs ciphertext (bad magic)');
  let o = MAGIC.length;
  const version = buf[o++]!;
  const suite = buf[o++]!;
  if (version !== FORMAT_VERSION) throw new IntegrityError(`unsupported format version ${version}`);
  if (suite !== SUITE_AES256GCM_HKDF_SHA256) throw new IntegrityError(`unsupported cipher suite ${suite}`);
  const chunkSize = buf.readUInt32BE(o);
  o += 4;
  try {
    assertChunkSize(chunkSize);
  } catch {
    throw new IntegrityError(`invalid chunk size ${chunkSize}`);
  }
  const fileId = Buffer.from(buf.subarray(o, (o += FILE_ID_LENGTH)));
  const salt = Buffer.from(buf.subarray(o, (o += SALT_LENGTH)));
  const noncePrefix = Buffer.from(buf.subarray(o, (o += NONCE_PREFIX_LENGTH)));
  return { version, suite, chunkSize, fileId, salt, noncePrefix };
}

function assertChunkSize(n: number): void {
  if (!Number.isInteger(n) || n < MIN_CHUNK_SIZE || n > MAX_CHUNK_SIZE) {
    throw new RangeError(`chunk size must be an integer in [${MIN_CHUNK_SIZE}, ${MAX_CHUNK_SIZE}]`);
  }
}

/**
 * Derives the per-file payload key from the DEK. The whole encoded header is in the
 * HKDF info, so changing any header byte, or moving a header onto another file's
 * chunks, yields a different key and every chunk then fails its tag.
 */
export function derivePayloadKey(dek: Buffer, headerBytes: Buffer): Buffer {
  if (dek.length !== KEY_LENGTH) throw new RangeError('DEK must be 32 bytes');
  const header = parseHeader(headerBytes);
  const info = Buffer.concat([PAYLOAD_INFO_LABEL, headerBytes.subarray(0, HEADER_LENGTH)]);
  return Buffer.from(hkdfSync('sha256', dek, header.salt, info, KEY_LENGTH));
}

/** Nonce for chunk `index`: prefix(7) ‖ u32 BE index ‖ lastChunk flag (1 on the final chunk). */
export function chunkNonce(noncePrefix: Buffer, index: number, lastChunk: boolean): Buffer {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_CHUNKS) throw new RangeError('chunk index out of range');
  const nonce = Buffer.allocUnsafe(12);
  noncePrefix.copy(nonce, 0, 0, NONCE_PREFIX_LENGTH);
  nonce.writeUInt32BE(index, NONCE_PREFIX_LENGTH);
  nonce[11] = lastChunk ? 1 : 0;
  return nonce;
}

/** Encrypts one chunk; returns [ciphertext, tag] so callers can write both without a concat copy. */
export function sealChunk(
  payloadKey: Buffer,
  noncePrefix: Buffer,
  index: number,
  lastChunk: boolean,
  plaintext: Buffer,
): [Buffer, Buffer] {
  const cipher = createCipheriv('aes-256-gcm', payloadKey, chunkNonce(noncePrefix, index, lastChunk), {
    authTagLength: TAG_LENGTH,
  });
  const ct = cipher.update(plaintext);
  const rest = cipher.final();
  const body = rest.length ? Buffer.concat([ct, rest]) : ct;
  return [body, cipher.getAuthTag()];
}

/**
 * Decrypts one sealed chunk (ciphertext ‖ tag). The plaintext is returned only after
 * `final()` has verified the tag, so no byte of a forged chunk ever leaves this function.
 */
export function openChunk(
  payloadKey: Buffer,
  noncePrefix: Buffer,
  index: number,
  lastChunk: boolean,
  sealed: Buffer,
): Buffer {
  if (sealed.length < TAG_LENGTH) throw new IntegrityError(`chunk ${index} shorter than a tag`, index);
  const body = sealed.subarray(0, sealed.length - TAG_LENGTH);
  const tag = sealed.subarray(sealed.length - TAG_LENGTH);
  const decipher = createDecipheriv('aes-256-gcm', payloadKey, chunkNonce(noncePrefix, index, lastChunk), {
    authTagLength: TAG_LENGTH,
  });
  decipher.setAuthTag(tag);
  const pt = decipher.update(body);
  try {
    const rest = decipher.final();
    return rest.length ? Buffer.concat([pt, rest]) : pt;
  } catch {
    pt.fill(0); // never let unauthenticated plaintext escape, even by accident
    throw new IntegrityError(`chunk ${index} failed authentication`, index);
  }
}

/** Number of chunks used for a plaintext of `size` bytes (an empty file is one empty final chunk). */
export function chunkCount(size: number, chunkSize: number): number {
  return size === 0 ? 1 : Math.ceil(size / chunkSize);
}

/** Exact ciphertext file length for a plaintext of `size` bytes. */
export function ciphertextSize(size: number, chunkSize: number): number {
  return HEADER_LENGTH + size + chunkCount(size, chunkSize) * TAG_LENGTH;
}

/** Byte offset in the ciphertext file where chunk `index` starts. */
export function chunkOffset(index: number, chunkSize: number): number {
  return HEADER_LENGTH + index * (chunkSize + TAG_LENGTH);
}

/** Plaintext length of chunk `index` in a file of `size` bytes. */
export function chunkPlainLength(index: number, size: number, chunkSize: number): number {
  const n = chunkCount(size, chunkSize);
  if (index < n - 1) return chunkSize;
  return size - (n - 1) * chunkSize;
}
