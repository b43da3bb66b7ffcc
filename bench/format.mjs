/**
 * Scenario 6, the format alone (no HTTP), and the raw ceiling of this machine, in one
 * process: node:crypto AES-256-GCM and SHA-256 on 64 KiB chunks, then the product's
 * ChunkSealer and decryptRange (from dist/) over the same bytes. Prints one JSON object.
 *
 *   node bench/format.mjs [--quick]
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { MiB, KiB, median } from './lib.mjs';

const quick = process.argv.includes('--quick');
const dist = path.resolve(import.meta.dirname, '..', 'dist');
const { ChunkSealer, decryptRange } = await import(pathToFileURL(path.join(dist, 'crypto', 'stream.js')).href);

const CHUNK = 64 * KiB;
/** The file the format benchmarks encrypt and decrypt; bigger than the L2 caches, so it streams from memory. */
const FILE = (quick ? 16 : 64) * MiB;
/** Each trial moves FILE * ROUNDS bytes; the figure is the median of TRIALS trials. */
const ROUNDS = quick ? 2 : 8;
const TRIALS = quick ? 3 : 5;
/** Ciphertext is read back in the slices the server's file stream produces. */
const READ_SLICE = 256 * KiB;

const plain = randomBytes(FILE);
const chunks = [];
for (let o = 0; o < FILE; o += CHUNK) chunks.push(plain.subarray(o, o + CHUNK));
const key = randomBytes(32);
const iv = randomBytes(12);

/** Runs fn TRIALS times (after one warm-up); returns the median throughput in MiB/s. */
async function measure(fn) {
  await fn();
  const rates = [];
  for (let t = 0; t < TRIALS; t++) {
    const t0 = performance.now();
    await fn();
    rates.push((FILE * ROUNDS) / MiB / ((performance.now() - t0) / 1000));
  }
  return median(rates);
}

function sealerParams() {
  return { dek: key, fileId: randomBytes(16), salt: randomBytes(32), noncePrefix: randomBytes(7), chunkSize: CHUNK };
}

// One encrypted copy of the file, for the decrypt benchmarks.
const params = sealerParams();
const sealer = new ChunkSealer(params);
const parts = [sealer.header];
for (const c of chunks) parts.push(...sealer.update(c));
parts.push(...sealer.finish());
const ciphertext = Buffer.concat(parts);
parts.length = 0;
const plainSha = createHash('sha256').update(plain).digest();

async function* slices() {
  for (let o = 0; o < ciphertext.length; o += READ_SLICE) yield ciphertext.subarray(o, o + READ_SLICE);
}

async function decryptOnce(withSha) {
  let n = 0;
  for await (const p of decryptRange(slices(), {
    dek: key,
    fileId: params.fileId,
    chunkSize: CHUNK,
    size: FILE,
    start: 0,
    end: FILE - 1,
    expectedSha256: withSha ? plainSha : undefined,
  })) {
    n += p.length;
  }
  if (n !== FILE) throw new Error(`decryptRange returned ${n} bytes, expected ${FILE}`);
}

const r = {};
// --- The raw ceiling: one long-lived cipher (or hash) object fed 64 KiB chunks.
r.rawAesGcmEncrypt = await measure(() => {
  const c = createCipheriv('aes-256-gcm', key, iv);
  for (let k = 0; k < ROUNDS; k++) for (const ch of chunks) c.update(ch);
  c.final();
});
r.rawAesGcmDecrypt = await measure(() => {
  const d = createDecipheriv('aes-256-gcm', key, iv);
  for (let k = 0; k < ROUNDS; k++) for (const ch of chunks) d.update(ch);
});
r.rawSha256 = await measure(() => {
  const h = createHash('sha256');
  for (let k = 0; k < ROUNDS; k++) for (const ch of chunks) h.update(ch);
  h.digest();
});
r.rawAesGcmEncryptSha256 = await measure(() => {
  const c = createCipheriv('aes-256-gcm', key, iv);
  const h = createHash('sha256');
  for (let k = 0; k < ROUNDS; k++)
    for (const ch of chunks) {
      h.update(ch);
      c.update(ch);
    }
  c.final();
  h.digest();
});
r.rawAesGcmDecryptSha256 = await measure(() => {
  const d = createDecipheriv('aes-256-gcm', key, iv);
  const h = createHash('sha256');
  for (let k = 0; k < ROUNDS; k++) for (const ch of chunks) h.update(d.update(ch));
  h.digest();
});
// --- Raw, but with a fresh cipher object, nonce and tag per 64 KiB chunk (what any chunked AEAD format pays).
r.rawAesGcmPerChunk = await measure(() => {
  const nonce = Buffer.alloc(12);
  let i = 0;
  for (let k = 0; k < ROUNDS; k++)
    for (const ch of chunks) {
      nonce.writeUInt32BE(i++, 4);
      const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
      c.update(ch);
      c.final();
      c.getAuthTag();
    }
});

// --- The product's format.
r.formatEncrypt = await measure(() => {
  for (let k = 0; k < ROUNDS; k++) {
    const s = new ChunkSealer(sealerParams());
    for (const ch of chunks) s.update(ch);
    s.finish();
  }
});
r.formatEncryptSha256 = await measure(() => {
  for (let k = 0; k < ROUNDS; k++) {
    const s = new ChunkSealer(sealerParams());
    const h = createHash('sha256');
    for (const ch of chunks) {
      h.update(ch);
      s.update(ch);
    }
    s.finish();
    h.digest();
  }
});
r.formatDecrypt = await measure(async () => {
  for (let k = 0; k < ROUNDS; k++) await decryptOnce(false);
});
r.formatDecryptSha256 = await measure(async () => {
  for (let k = 0; k < ROUNDS; k++) await decryptOnce(true);
});

process.stdout.write(
  JSON.stringify({ unit: 'MiB/s', chunkSize: CHUNK, fileBytes: FILE, bytesPerTrial: FILE * ROUNDS, trials: TRIALS, results: r }) + '\n',
);
