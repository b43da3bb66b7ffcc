/**
 * Streaming encryption and decryption over the chunk format in format.ts.
 * Pure: the caller supplies the DEK, the random salt and nonce prefix, and the byte sources.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import {
  HEADER_LENGTH,
  IntegrityError,
  TAG_LENGTH,
  chunkCount,
  chunkOffset,
  chunkPlainLength,
  derivePayloadKey,
  encodeHeader,
  openChunk,
  parseHeader,
  sealChunk,
} from './format.js';

const MAX_CHUNK_INDEX = 2 ** 32 - 1;

export interface SealerParams {
  dek: Buffer;
  fileId: Buffer;
  salt: Buffer;
  noncePrefix: Buffer;
  chunkSize: number;
}

/**
 * Incremental encryptor. A full chunk is held back until more data arrives (then it is
 * sealed as a middle chunk) or the input ends (then it is sealed as the last chunk), because
 * the last-chunk flag must be known when sealing.
 */
export class ChunkSealer {
  readonly header: Buffer;
  private readonly key: Buffer;
  private readonly noncePrefix: Buffer;
  private readonly chunkSize: number;
  private readonly pending: Buffer;
  private pendingLength = 0;
  private index = 0;
  private finished = false;

  constructor(p: SealerParams) {
    this.header = encodeHeader({ chunkSize: p.chunkSize, fileId: p.fileId, salt: p.salt, noncePrefix: p.noncePrefix });
    this.key = derivePayloadKey(p.dek, this.header);
    this.noncePrefix = p.noncePrefix;
    this.chunkSize = p.chunkSize;
    this.pending = Buffer.allocUnsafe(p.chunkSize);
  }

  /** Consumes plaintext and returns the ciphertext pieces that are ready (ciphertext and tags). */
  update(data: Buffer): Buffer[] {
    if (this.finished) throw new Error('sealer already finished');
    const out: Buffer[] = [];
    let pos = 0;
    while (pos < data.length) {
      if (this.pendingLength === this.chunkSize) {
        // More data exists after the pending chunk, so it is not the last one.
        this.emit(out, this.pending, false);
        this.pendingLength = 0;
      }
      const remaining = data.length - pos;
      if (this.pendingLength === 0 && remaining > this.chunkSize) {
        // A whole chunk with data after it: seal straight from the input, no copy.
        this.emit(out, data.subarray(pos, pos + this.chunkSize), false);
        pos += this.chunkSize;
        continue;
      }
      const n = Math.min(remaining, this.chunkSize - this.pendingLength);
      data.copy(this.pending, this.pendingLength, pos, pos + n);
      this.pendingLength += n;
      pos += n;
    }
    return out;
  }

  /** Seals the held-back data as the last chunk (an empty input yields one empty last chunk). */
  finish(): Buffer[] {
    if (this.finished) throw new Error('sealer already finished');
    const out: Buffer[] = [];
    this.emit(out, this.pending.subarray(0, this.pendingLength), true);
    this.finished = true;
    this.key.fill(0);
    return out;
  }

  /** Wipes the payload key without producing output (for aborted uploads). */
  destroy(): void {
    this.finished = true;
    this.key.fill(0);
  }

  private emit(out: Buffer[], plaintext: Buffer, lastChunk: boolean): void {
    if (this.index > MAX_CHUNK_INDEX) throw new RangeError('file too large for the chunk counter');
    const [body, tag] = sealChunk(this.key, this.noncePrefix, this.index, lastChunk, plaintext);
    this.index += 1;
    out.push(body, tag);
  }
}

/** A Transform that turns plaintext into the complete ciphertext file (header first). */
export class EncryptTransform extends Transform {
  private readonly sealer: ChunkSealer;
  private headerSent = false;

  constructor(p: SealerParams) {
    super({ highWaterMark: 4 * (p.chunkSize + TAG_LENGTH) });
    this.sealer = new ChunkSealer(p);
  }

  override _transform(data: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.sendHeader();
      for (const piece of this.sealer.update(data)) this.push(piece);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.sendHeader();
      for (const piece of this.sealer.finish()) this.push(piece);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _destroy(err: Error | null, cb: (error: Error | null) => void): void {
    this.sealer.destroy();
    cb(err);
  }

  private sendHeader(): void {
    if (!this.headerSent) {
      this.push(this.sealer.header);
      this.headerSent = true;
    }
  }
}

/** Reads exact byte counts from an async iterable of buffers, copying only across boundaries. */
export class ExactReader {
  private readonly it: AsyncIterator<Buffer>;
  private buf: Buffer = Buffer.alloc(0);
  private done = false;

  constructor(source: AsyncIterable<Buffer>) {
    this.it = source[Symbol.asyncIterator]();
  }

  /** Resolves with exactly n bytes, or throws IntegrityError if the source ends first. */
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      const next = this.done ? { done: true as const, value: undefined } : await this.it.next();
      if (next.done) {
        this.done = true;
        throw new IntegrityError('ciphertext ended early');
      }
      this.buf = this.buf.length === 0 ? next.value : Buffer.concat([this.buf, next.value]);
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** True if the source has no bytes left. */
  async atEnd(): Promise<boolean> {
    while (this.buf.length === 0 && !this.done) {
      const next = await this.it.next();
      if (next.done) this.done = true;
      else this.buf = next.value;
    }
    return this.buf.length === 0;
  }

  /** Stops the underlying source (closes files) when the consumer gives up early. */
  async close(): Promise<void> {
    this.done = true;
    await this.it.return?.();
  }
}

/** Where in the ciphertext file the chunks covering plaintext bytes [start, end] live. */
export interface CiphertextSpan {
  firstChunk: number;
  lastChunk: number;
  /** First ciphertext byte to read (0 when the header is read in the same pass). */
  from: number;
  /** Last ciphertext byte to read, inclusive. */
  to: number;
}

/** Computes the ciphertext span for plaintext range [start, end] (end inclusive; end = -1 for an empty file). */
export function ciphertextSpan(size: number, chunkSize: number, start: number, end: number): CiphertextSpan {
  const n = chunkCount(size, chunkSize);
  const firstChunk = size === 0 ? 0 : Math.floor(start / chunkSize);
  const lastChunk = size === 0 ? 0 : Math.floor(end / chunkSize);
  if (firstChunk < 0 || lastChunk >= n || firstChunk > lastChunk) throw new RangeError('range outside the file');
  const from = firstChunk === 0 ? 0 : chunkOffset(firstChunk, chunkSize);
  const to = chunkOffset(lastChunk, chunkSize) + chunkPlainLength(lastChunk, size, chunkSize) + TAG_LENGTH - 1;
  return { firstChunk, lastChunk, from, to };
}

export interface DecryptParams {
  dek: Buffer;
  /** The file id recorded in the database; the header must carry the same one. */
  fileId: Buffer;
  chunkSize: number;
  /** Plaintext size recorded in the database. */
  size: number;
  /** Plaintext range, end inclusive (0, -1 for an empty file). */
  start: number;
  end: number;
  /** The header bytes, when the source starts at the first covering chunk instead of at byte 0. */
  header?: Buffer;
  /** Checked before the final chunk is released; only meaningful for a full read. */
  expectedSha256?: Buffer;
}

/**
 * Decrypts the plaintext range [start, end] from a ciphertext source that starts at
 * `ciphertextSpan(...).from`. Each chunk is verified before any byte of it is yielded;
 * with `expectedSha256` the last chunk is held back until the whole-file digest matches.
 */
export async function* decryptRange(source: AsyncIterable<Buffer>, p: DecryptParams): AsyncGenerator<Buffer> {
  const span = ciphertextSpan(p.size, p.chunkSize, p.start, p.end);
  const reader = new ExactReader(source);
  let key: Buffer | undefined;
  try {
    const headerBytes = span.firstChunk === 0 ? Buffer.from(await reader.read(HEADER_LENGTH)) : p.header;
    if (!headerBytes) throw new RangeError('header bytes are required for a range that skips chunk 0');
    const header = parseHeader(headerBytes);
    if (!header.fileId.equals(p.fileId)) throw new IntegrityError('header belongs to another file');
    if (header.chunkSize !== p.chunkSize) throw new IntegrityError('header chunk size does not match the record');
    key = derivePayloadKey(p.dek, headerBytes);
    const total = chunkCount(p.size, p.chunkSize);
    const hash = p.expectedSha256 ? createHash('sha256') : null;
    for (let i = span.firstChunk; i <= span.lastChunk; i++) {
      const plainLength = chunkPlainLength(i, p.size, p.chunkSize);
      const sealed = await reader.read(plainLength + TAG_LENGTH);
      const lastChunk = i === total - 1;
      const plaintext = openChunk(key, header.noncePrefix, i, lastChunk, sealed);
      // Extra bytes after the final chunk mean the file was altered: refuse before releasing it.
      if (lastChunk && !(await reader.atEnd())) throw new IntegrityError('unexpected bytes after the last chunk', i);
      const chunkStart = i * p.chunkSize;
      const lo = Math.max(p.start - chunkStart, 0);
      const hi = Math.min(p.end - chunkStart + 1, plaintext.length);
      const slice = lo === 0 && hi === plaintext.length ? plaintext : plaintext.subarray(lo, hi);
      if (hash) {
        hash.update(slice);
        if (i === span.lastChunk) {
          const digest = hash.digest();
          if (digest.length !== p.expectedSha256!.length || !timingSafeEqual(digest, p.expectedSha256!)) {
            throw new IntegrityError('SHA-256 of the decrypted file does not match the record', i);
          }
        }
      }
      if (slice.length > 0) yield slice;
    }
  } finally {
    key?.fill(0);
    await reader.close();
  }
}
