/** The chunked format: round trips at the edges, ranges, and one row per tampering case. */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { unwrapDek, wrapDek, type WrapBinding } from '../src/crypto/envelope.js';
import {
  DEFAULT_CHUNK_SIZE as C,
  HEADER_LENGTH,
  IntegrityError,
  TAG_LENGTH,
  chunkOffset,
  ciphertextSize,
  parseHeader,
} from '../src/crypto/format.js';
import { Keyring } from '../src/crypto/keyring.js';
import { ChunkSealer, ciphertextSpan, decryptRange } from '../src/crypto/stream.js';
import { pattern } from './helpers.js';

interface Sealed {
  dek: Buffer;
  fileId: Buffer;
  plaintext: Buffer;
  ciphertext: Buffer;
}

/** Encrypts `plaintext`, feeding it in uneven pieces to exercise buffering. */
function seal(plaintext: Buffer, pieceSizes = [1, 1000, C - 3, 7, C * 2 + 11]): Sealed {
  const dek = randomBytes(32);
  const fileId = randomBytes(16);
  const sealer = new ChunkSealer({ dek, fileId, salt: randomBytes(32), noncePrefix: randomBytes(7), chunkSize: C });
  const out: Buffer[] = [sealer.header];
  let pos = 0;
  let i = 0;
  while (pos < plaintext.length) {
    const n = pieceSizes[i++ % pieceSizes.length]!;
    out.push(...sealer.update(plaintext.subarray(pos, pos + n)));
    pos += n;
  }
  out.push(...sealer.finish());
  return { dek, fileId, plaintext, ciphertext: Buffer.concat(out) };
}

async function* source(buf: Buffer, piece = 10_000): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += piece) yield buf.subarray(i, i + piece);
}

/** Decrypts; returns what was released and the error, if any. */
async function open(
  s: Sealed,
  ciphertext = s.ciphertext,
  range = { start: 0, end: s.plaintext.length - 1 },
  fileId = s.fileId,
): Promise<{ released: Buffer; error: unknown }> {
  const span = ciphertextSpan(s.plaintext.length, C, range.start, range.end);
  const parts: Buffer[] = [];
  const full = range.start === 0 && range.end === s.plaintext.length - 1;
  try {
    // A read that reaches the last chunk gets everything to the end, as a file read would.
    const last = span.lastChunk === Math.max(0, Math.ceil(s.plaintext.length / C) - 1);
    const slice = ciphertext.subarray(span.from, last ? undefined : span.to + 1);
    for await (const p of decryptRange(source(slice), {
      dek: s.dek,
      fileId,
      chunkSize: C,
      size: s.plaintext.length,
      ...range,
      header: span.firstChunk === 0 ? undefined : ciphertext.subarray(0, HEADER_LENGTH),
      expectedSha256: full ? createHash('sha256').update(s.plaintext).digest() : undefined,
    })) {
      parts.push(Buffer.from(p));
    }
    return { released: Buffer.concat(parts), error: null };
  } catch (error) {
    return { released: Buffer.concat(parts), error };
  }
}

const SIZES = [0, 1, C - 1, C, C + 1, 3 * C + 17, 3 * 1024 * 1024 + 5];

describe('round trip', () => {
  it.each(SIZES)('size %i decrypts to the original and has the exact expected length', async (size) => {
    const s = seal(pattern(size, size + 1));
    expect(s.ciphertext.length).toBe(ciphertextSize(size, C));
    const { released, error } = await open(s);
    expect(error).toBeNull();
    expect(released.equals(s.plaintext)).toBe(true);
  });

  it('an empty file is one empty final chunk (header + one tag)', () => {
    const s = seal(Buffer.alloc(0));
    expect(s.ciphertext.length).toBe(HEADER_LENGTH + TAG_LENGTH);
  });

  it('two encryptions of the same plaintext share no ciphertext (fresh DEK, salt, nonce)', () => {
    const p = pattern(2 * C, 9);
    const a = seal(p).ciphertext.subarray(HEADER_LENGTH, HEADER_LENGTH + 64);
    const b = seal(p).ciphertext.subarray(HEADER_LENGTH, HEADER_LENGTH + 64);
    expect(a.equals(b)).toBe(false);
  });

  it('the header records version, chunk size and file id', () => {
    const s = seal(pattern(10));
    const h = parseHeader(s.ciphertext);
    expect(h.version).toBe(1);
    expect(h.chunkSize).toBe(C);
    expect(h.fileId.equals(s.fileId)).toBe(true);
  });

  it('ciphertext contains no run of the plaintext', () => {
    const marker = Buffer.from('PLAINTEXT-MARKER-'.repeat(4000));
    const s = seal(marker);
    expect(s.ciphertext.includes(Buffer.from('PLAINTEXT-MARKER-'))).toBe(false);
  });
});

describe('ranges decrypt only the covering chunks and return the exact slice', () => {
  const size = 5 * C + 123;
  const s = seal(pattern(size, 77));
  const cases: [string, number, number][] = [
    ['first byte', 0, 0],
    ['start of file', 0, 999],
    ['across a chunk boundary', C - 10, C + 10],
    ['exactly one chunk', 2 * C, 3 * C - 1],
    ['middle of a chunk', 3 * C + 5, 3 * C + 6],
    ['tail', size - 100, size - 1],
    ['last byte', size - 1, size - 1],
  ];
  it.each(cases)('%s', async (_name, start, end) => {
    const { released, error } = await open(s, s.ciphertext, { start, end });
    expect(error).toBeNull();
    expect(released.equals(s.plaintext.subarray(start, end + 1))).toBe(true);
  });

  it('reads only the covering span of ciphertext', () => {
    const span = ciphertextSpan(size, C, 3 * C + 5, 3 * C + 6);
    expect(span.from).toBe(chunkOffset(3, C));
    expect(span.to - span.from + 1).toBe(C + TAG_LENGTH);
  });
});

describe('tampering fails without releasing a byte of the affected chunk', () => {
  const size = 4 * C + 1000; // chunks 0..4, the last one short
  const base = seal(pattern(size, 5));
  const other = seal(pattern(size, 6));
  const at = (i: number) => chunkOffset(i, C);
  const flip = (buf: Buffer, pos: number) => {
    const b = Buffer.from(buf);
    b[pos]! ^= 0x01;
    return b;
  };
  const chunkAt = (buf: Buffer, i: number) => buf.subarray(at(i), at(i) + C + TAG_LENGTH);

  // [name, tampered ciphertext, index of the first chunk that must not be released]
  const cases: [string, () => Buffer, number][] = [
    ['bit flipped in the magic', () => flip(base.ciphertext, 0), 0],
    ['bit flipped in the chunk size', () => flip(base.ciphertext, 13), 0],
    ['bit flipped in the salt', () => flip(base.ciphertext, 40), 0],
    ['bit flipped in the nonce prefix', () => flip(base.ciphertext, HEADER_LENGTH - 1), 0],
    ['bit flipped in chunk 0 body', () => flip(base.ciphertext, at(0) + 5), 0],
    ['bit flipped in chunk 2 body', () => flip(base.ciphertext, at(2) + 100), 2],
    ['bit flipped in chunk 1 tag', () => flip(base.ciphertext, at(2) - 1), 1],
    ['bit flipped in the last chunk', () => flip(base.ciphertext, base.ciphertext.length - 20), 4],
    ['truncated at a chunk boundary (last chunk dropped)', () => base.ciphertext.subarray(0, at(4)), 4],
    ['truncated mid-chunk', () => base.ciphertext.subarray(0, at(2) + 500), 2],
    ['bytes appended', () => Buffer.concat([base.ciphertext, Buffer.alloc(16)]), 4],
    [
      'chunks 1 and 2 swapped',
      () => Buffer.concat([base.ciphertext.subarray(0, at(1)), chunkAt(base.ciphertext, 2), chunkAt(base.ciphertext, 1), base.ciphertext.subarray(at(3))]),
      1,
    ],
    [
      'chunk 1 duplicated over chunk 2',
      () => Buffer.concat([base.ciphertext.subarray(0, at(2)), chunkAt(base.ciphertext, 1), base.ciphertext.subarray(at(3))]),
      2,
    ],
    [
      'a full chunk marked non-final presented as the last one',
      // Drop the short last chunk and claim chunk 3 ends the file: its lastChunk flag is wrong.
      () => base.ciphertext.subarray(0, at(4)),
      3,
    ],
    ['header moved from another file', () => Buffer.concat([other.ciphertext.subarray(0, HEADER_LENGTH), base.ciphertext.subarray(HEADER_LENGTH)]), 0],
    ['chunk 2 spliced in from another file', () => Buffer.concat([base.ciphertext.subarray(0, at(2)), chunkAt(other.ciphertext, 2), base.ciphertext.subarray(at(3))]), 2],
    ['whole ciphertext of another file', () => other.ciphertext, 0],
  ];

  it.each(cases)('%s', async (name, tamper, badChunk) => {
    const ct = tamper();
    let sizeSeen = size;
    if (name.startsWith('a full chunk marked non-final')) sizeSeen = 4 * C;
    const s = { ...base, plaintext: base.plaintext.subarray(0, sizeSeen) };
    const { released, error } = await open(s, ct);
    expect(error).toBeInstanceOf(IntegrityError);
    // Whatever was released is a verified prefix that ends before the bad chunk.
    expect(released.length).toBeLessThanOrEqual(badChunk * C);
    expect(released.equals(base.plaintext.subarray(0, released.length))).toBe(true);
  });

  it('a damaged chunk inside a range read fails and releases nothing from it', async () => {
    const ct = flip(base.ciphertext, at(3) + 7);
    const { released, error } = await open(base, ct, { start: 3 * C + 1, end: 3 * C + 50 });
    expect(error).toBeInstanceOf(IntegrityError);
    expect(released.length).toBe(0);
  });

  it('a file id that does not match the record is refused before any chunk', async () => {
    const { released, error } = await open(base, base.ciphertext, undefined, randomBytes(16));
    expect(error).toBeInstanceOf(IntegrityError);
    expect(released.length).toBe(0);
  });

  it('the wrong DEK releases nothing', async () => {
    const { released, error } = await open({ ...base, dek: randomBytes(32) });
    expect(error).toBeInstanceOf(IntegrityError);
    expect(released.length).toBe(0);
  });

  it('a digest mismatch holds back the last chunk', async () => {
    const small = seal(pattern(2 * C + 10, 3));
    const parts: Buffer[] = [];
    let error: unknown = null;
    try {
      for await (const p of decryptRange(source(small.ciphertext), {
        dek: small.dek,
        fileId: small.fileId,
        chunkSize: C,
        size: small.plaintext.length,
        start: 0,
        end: small.plaintext.length - 1,
        expectedSha256: Buffer.alloc(32, 1),
      })) {
        parts.push(Buffer.from(p));
      }
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(IntegrityError);
    expect(Buffer.concat(parts).length).toBe(2 * C);
  });
});

describe('envelope: wrapped DEKs are bound to their row and key', () => {
  const ring = new Keyring(randomBytes(32));
  const dek = randomBytes(32);
  const binding: WrapBinding = { wrapVersion: 2, fileId: 'a'.repeat(32), ownerId: 'c'.repeat(32), size: 1234, sha256: randomBytes(32), formatVersion: 1, chunkSize: C };
  const wrapped = wrapDek(ring.active, dek, binding, randomBytes(12));

  it('unwraps with the same key and binding', () => {
    expect(unwrapDek(ring.active, wrapped, binding).equals(dek)).toBe(true);
  });

  const moved: [string, Partial<WrapBinding>][] = [
    ['moved to another row (file id)', { fileId: 'b'.repeat(32) }],
    ['moved to another owner (wrap version 2)', { ownerId: 'd'.repeat(32) }],
    ['relabelled as wrap version 1', { wrapVersion: 1 }],
    ['size edited', { size: 1235 }],
    ['checksum edited', { sha256: randomBytes(32) }],
    ['format version edited', { formatVersion: 2 }],
    ['chunk size edited', { chunkSize: C * 2 }],
  ];
  it.each(moved)('fails when %s', (_name, change) => {
    expect(() => unwrapDek(ring.active, wrapped, { ...binding, ...change })).toThrow(IntegrityError);
  });

  it('fails under another master key', () => {
    const other = new Keyring(randomBytes(32));
    expect(() => unwrapDek(other.active, wrapped, binding)).toThrow(IntegrityError);
  });

  it('fails when one bit of the wrapped key flips', () => {
    const w = Buffer.from(wrapped);
    w[20]! ^= 0x80;
    expect(() => unwrapDek(ring.active, w, binding)).toThrow(IntegrityError);
  });

  it('key ids are stable, distinct per key, and do not contain the key', () => {
    const k = randomBytes(32);
    const a = new Keyring(k);
    const b = new Keyring(Buffer.from(k));
    expect(a.active.id).toBe(b.active.id);
    expect(a.active.id).toMatch(/^[0-9a-f]{16}$/);
    expect(new Keyring(randomBytes(32)).active.id).not.toBe(a.active.id);
    expect(k.toString('hex').includes(a.active.id)).toBe(false);
  });
});
