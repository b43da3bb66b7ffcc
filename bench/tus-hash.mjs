// Cost of the resumable-upload hash design (docs/format.md "Whole-file SHA-256"): hash-wasm's
// SHA-256 with a sealed saved state per checkpoint, against node:crypto, and what the
// alternative (recompute by decrypting the committed prefix on resume) would cost.
//   npm run build && node bench/tus-hash.mjs [MiB]
import { createHash, randomBytes } from 'node:crypto';
import { createSHA256 } from 'hash-wasm';
import { openChunk, sealChunk } from '../dist/crypto/format.js';
import { openHashState, sealHashState } from '../dist/services/tus.js';

const MiB = Number(process.argv[2] ?? 256);
const C = 64 * 1024;
const data = randomBytes(MiB * 1024 * 1024);
const secs = (t) => Number(process.hrtime.bigint() - t) / 1e9;

let t = process.hrtime.bigint();
const w = await createSHA256();
w.init();
for (let o = 0; o < data.length; o += C) w.update(data.subarray(o, o + C));
w.digest('hex');
const wasm = secs(t);

t = process.hrtime.bigint();
const n = createHash('sha256');
for (let o = 0; o < data.length; o += C) n.update(data.subarray(o, o + C));
n.digest('hex');
const native = secs(t);

// One checkpoint's extra work: save, seal; one resume's: open, load.
const dek = randomBytes(32);
const s = await createSHA256();
s.init();
s.update(data.subarray(0, C));
const id = randomBytes(16).toString('hex');
const rounds = 10000;
t = process.hrtime.bigint();
let sealed;
for (let i = 0; i < rounds; i++) sealed = sealHashState(dek, id, (rounds - 1) * C, s.save());
const sealUs = (secs(t) / rounds) * 1e6;
t = process.hrtime.bigint();
for (let i = 0; i < rounds; i++) s.load(openHashState(dek, id, (rounds - 1) * C, sealed));
const loadUs = (secs(t) / rounds) * 1e6;

// The alternative: decrypt and hash the committed prefix again on every resume.
const key = randomBytes(32);
const prefix = randomBytes(7);
const sealedChunks = [];
for (let o = 0; o < data.length; o += C) sealedChunks.push(Buffer.concat(sealChunk(key, prefix, o / C, false, data.subarray(o, o + C))));
t = process.hrtime.bigint();
const h2 = createHash('sha256');
sealedChunks.forEach((s, i) => h2.update(openChunk(key, prefix, i, false, s)));
h2.digest();
const recompute = secs(t);

const per5GB = (s) => (s * 5000) / (MiB * 1.048576);
console.log(`hash-wasm SHA-256: ${(MiB / wasm).toFixed(0)} MiB/s; node:crypto: ${(MiB / native).toFixed(0)} MiB/s`);
console.log(`extra hashing time of a 5 GB upload with hash-wasm instead of node:crypto: ${(per5GB(wasm) - per5GB(native)).toFixed(1)} s`);
console.log(`per checkpoint: save + seal ${sealUs.toFixed(1)} µs; per resume: open + load ${loadUs.toFixed(1)} µs`);
console.log(`recompute-on-resume alternative: decrypt + hash ${(MiB / recompute).toFixed(0)} MiB/s, i.e. ${per5GB(recompute).toFixed(1)} s per resume of a 5 GB upload cut near its end`);
