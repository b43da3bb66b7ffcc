/** Property-based checks of the format (fast-check): corruption never releases unverified bytes; ranges are exact. */
import fc from 'fast-check';
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { HEADER_LENGTH, IntegrityError, TAG_LENGTH } from '../src/crypto/format.js';
import { ChunkSealer, ciphertextSpan, decryptRange } from '../src/crypto/stream.js';

// Small chunks so random files span many chunks cheaply; the code path is the same.
const C = 1024;

function seal(plaintext: Buffer, pieces: number[]) {
  const dek = randomBytes(32);
  const fileId = randomBytes(16);
  const s = new ChunkSealer({ dek, fileId, salt: randomBytes(32), noncePrefix: randomBytes(7), chunkSize: C });
  const out = [s.header];
  let pos = 0;
  let i = 0;
  while (pos < plaintext.length) {
    const n = Math.max(1, pieces[i++ % pieces.length]!);
    out.push(...s.update(plaintext.subarray(pos, pos + n)));
    pos += n;
  }
  out.push(...s.finish());
  return { dek, fileId, ciphertext: Buffer.concat(out) };
}

async function decrypt(ct: Buffer, p: { dek: Buffer; fileId: Buffer; size: number; start: number; end: number; sha?: Buffer }) {
  const span = ciphertextSpan(p.size, C, p.start, p.end);
  const lastChunk = Math.max(0, Math.ceil(p.size / C) - 1);
  const src = ct.subarray(span.from, span.lastChunk === lastChunk ? undefined : span.to + 1);
  const parts: Buffer[] = [];
  try {
    for await (const b of decryptRange(
      (async function* () {
        for (let i = 0; i < src.length; i += 700) yield src.subarray(i, i + 700);
      })(),
      { dek: p.dek, fileId: p.fileId, chunkSize: C, size: p.size, start: p.start, end: p.end, header: span.firstChunk ? ct.subarray(0, HEADER_LENGTH) : undefined, expectedSha256: p.sha },
    )) {
      parts.push(Buffer.from(b));
    }
    return { out: Buffer.concat(parts), err: null as unknown };
  } catch (err) {
    return { out: Buffer.concat(parts), err };
  }
}

describe('format properties', () => {
  it('a single corrupted byte anywhere: exact original or failure before any byte of the corrupted chunk', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 0, maxLength: 6 * C + 10 }),
        fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 5 }),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        async (bytes, pieces, where, xor) => {
          const plaintext = Buffer.from(bytes);
          const s = seal(plaintext, pieces);
          const ct = Buffer.from(s.ciphertext);
          const pos = where % ct.length;
          ct[pos]! ^= xor;
          const sha = createHash('sha256').update(plaintext).digest();
          const r = await decrypt(ct, { dek: s.dek, fileId: s.fileId, size: plaintext.length, start: 0, end: plaintext.length - 1, sha });
          expect(r.err).toBeInstanceOf(IntegrityError);
          const badChunk = pos < HEADER_LENGTH ? 0 : Math.floor((pos - HEADER_LENGTH) / (C + TAG_LENGTH));
          expect(r.out.length).toBeLessThanOrEqual(badChunk * C);
          expect(r.out.equals(plaintext.subarray(0, r.out.length))).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('random ranges return exactly the corresponding slice', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 * C + 3 }),
        fc.nat(),
        fc.nat(),
        async (size, a, b) => {
          const plaintext = randomBytes(size);
          const s = seal(plaintext, [777]);
          const start = a % size;
          const end = start + (b % (size - start));
          const r = await decrypt(s.ciphertext, { dek: s.dek, fileId: s.fileId, size, start, end });
          expect(r.err).toBeNull();
          expect(r.out.equals(plaintext.subarray(start, end + 1))).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
  });
});
