/**
 * Stored data changed behind the server's back. For each case: the download fails without
 * the client receiving a single byte of a chunk that did not verify (checked on the bytes
 * the client got), the failure is logged as integrity_error with the request id, an audit
 * event is written, and the scrub reports the same file.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CHUNK_SIZE as C, HEADER_LENGTH, TAG_LENGTH, chunkOffset } from '../src/crypto/format.js';
import { scrub } from '../src/ops/scrub.js';
import { makeHarness, pattern, serve, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
let token: string;
let served: Awaited<ReturnType<typeof serve>>;
let port: number;

beforeAll(async () => {
  h = await makeHarness();
  token = await setupAdmin(h);
  served = await serve(h.app);
  port = served.port;
});
afterAll(async () => {
  await served.close();
  h.cleanup();
});

const SIZE = 4 * C + 1234; // chunks 0..4, the last one short

async function upload(seed: number): Promise<{ id: string; content: Buffer }> {
  const content = pattern(SIZE, seed);
  const r = await h.request.put(`/api/v1/uploads/t${seed}.bin`).set('Authorization', `Bearer ${token}`).send(content);
  return { id: r.body.file.id, content };
}

/** Downloads over a real socket and reports exactly what the client received. */
function fetch(id: string): Promise<{ status: number; received: Buffer; clean: boolean; requestId: string }> {
  return new Promise((resolve) => {
    http.get({ host: '127.0.0.1', port, path: `/api/v1/files/${id}/content`, headers: { Authorization: `Bearer ${token}` } }, (res) => {
      const parts: Buffer[] = [];
      let settled = false;
      const done = (clean: boolean) => {
        if (settled) return;
        settled = true;
        resolve({ status: res.statusCode!, received: Buffer.concat(parts), clean, requestId: String(res.headers['x-request-id']) });
      };
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => done(true));
      res.on('aborted', () => done(false));
      res.on('error', () => done(false));
    });
  });
}

/** A copy of `b` with one bit flipped at `pos`. */
const flip = (b: Buffer, pos: number) => {
  const out = Buffer.from(b);
  out[pos]! ^= 0x10;
  return out;
};
const chunkBytes = (b: Buffer, i: number) => b.subarray(chunkOffset(i, C), chunkOffset(i, C) + C + TAG_LENGTH);

// [case, tamper(stored ciphertext, row id, another file) -> new ciphertext (or null: the
// database is changed instead), first chunk that must not reach the client]. The bytes are
// rewritten through the harness, so the table runs on the disk store and on S3 alike.
type Tamper = (blob: Buffer, id: string, other: { id: string; blob: Buffer }) => Buffer | null | Promise<null>;
const cases: [string, Tamper, number][] = [
  ['bit flipped in the header', (b) => flip(b, 20), 0],
  ['bit flipped in the first chunk', (b) => flip(b, chunkOffset(0, C) + 7), 0],
  ['bit flipped in a middle chunk', (b) => flip(b, chunkOffset(2, C) + 500), 2],
  ['bit flipped in the last chunk', (b) => flip(b, chunkOffset(4, C) + 3), 4],
  ['bit flipped in a tag', (b) => flip(b, chunkOffset(2, C) - 1), 1],
  ['truncated at a chunk boundary', (b) => b.subarray(0, chunkOffset(4, C)), 0],
  ['truncated mid-chunk', (b) => b.subarray(0, chunkOffset(2, C) + 100), 0],
  ['bytes appended', (b) => Buffer.concat([b, Buffer.alloc(32)]), 0],
  [
    'two chunks swapped',
    (b) => {
      const out = Buffer.from(b);
      const one = Buffer.from(chunkBytes(out, 1));
      chunkBytes(out, 2).copy(out, chunkOffset(1, C));
      one.copy(out, chunkOffset(2, C));
      return out;
    },
    1,
  ],
  ['replaced with another file’s ciphertext', (_b, _id, other) => other.blob, 0],
  ['wrapped DEK moved from another row', async (_b, id, other) => (await h.sql('UPDATE files SET wrapped_dek = (SELECT wrapped_dek FROM files WHERE id = ?) WHERE id = ?', [other.id, id]), null), 0],
  ['size changed in the database', async (_b, id) => (await h.sql('UPDATE files SET size = size - 1 WHERE id = ?', [id]), null), 0],
  ['checksum changed in the database', async (_b, id) => (await h.sql('UPDATE files SET sha256 = ? WHERE id = ?', [randomBytes(32), id]), null), 0],
];

describe('tampered files never leak unverified bytes', () => {
  it.each(cases)('%s', async (_name, tamper, badChunk) => {
    const target = await upload(1);
    const other = await upload(2);
    const changed = await tamper(await h.readBlob(target.id), target.id, { id: other.id, blob: await h.readBlob(other.id) });
    if (changed) await h.writeBlob(target.id, changed);
    const r = await fetch(target.id);
    // Either a clean 500 before any byte, or a cut connection after a verified prefix.
    if (r.status === 500) {
      expect(r.clean).toBe(true);
      expect(JSON.parse(r.received.toString()).code).toBe('integrity_error');
    } else {
      expect(r.status).toBe(200);
      expect(r.clean).toBe(false);
      expect(r.received.length).toBeLessThanOrEqual(badChunk * C);
      expect(r.received.equals(target.content.subarray(0, r.received.length))).toBe(true);
    }
    expect(r.received.length === SIZE && r.clean).toBe(false);
    // Logged as an integrity error with the request id.
    // The log line and the audit row are written after the connection is cut, so the client can
    // only wait for them (on PostgreSQL the audit append takes a few round trips).
    await expect.poll(() => h.logLines.some((l) => l.includes('integrity_error') && l.includes(r.requestId)), { timeout: 5000 }).toBe(true);
    // An audit event records the failed download.
    const failed = async () => (await h.sql<{ outcome: string; details: string }>("SELECT outcome, details FROM audit_events WHERE action = 'file.download' AND file_id = ? ORDER BY seq DESC LIMIT 1", [target.id]))[0];
    await expect.poll(async () => (await failed())?.outcome, { timeout: 5000 }).toBe('failure');
    const ev = await failed();
    expect(JSON.parse(ev!.details).integrityError).toBe(true);
    // The scrub reports the same file as corrupt, and the untouched one as ok.
    const report = await scrub(h.app.services.vault, h.blobs, { fileId: target.id });
    expect(report.entries[0]!.status).toBe('corrupt');
    const fine = await scrub(h.app.services.vault, h.blobs, { fileId: other.id });
    expect(fine.entries[0]!.status).toBe('ok');
  });

  it('the header is not part of the plaintext: a flipped header yields zero file bytes', async () => {
    const target = await upload(3);
    await h.writeBlob(target.id, flip(await h.readBlob(target.id), HEADER_LENGTH - 2));
    const r = await fetch(target.id);
    expect(r.status).toBe(500);
    expect(r.received.includes(target.content.subarray(0, 64))).toBe(false);
  });
});
