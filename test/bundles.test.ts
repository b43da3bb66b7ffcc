/**
 * Bundles: one link to several files, each on its own and all as one zip whose bytes are known
 * before streaming (Content-Length, strong ETag, Range), checked with real unzippers.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_CHUNK_SIZE as C, chunkOffset } from '../src/crypto/format.js';
import { layoutZip, zipEntryNames } from '../src/services/zip.js';
import { binaryParser, downloadsSettled, makeHarness, makeUser, pattern, serve, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
let token: string;
afterEach(() => h?.cleanup());
const auth = (t = token) => ({ Authorization: `Bearer ${t}` });

async function init(env: Record<string, string> = {}) {
  h = await makeHarness(env);
  token = await setupAdmin(h);
}

interface Uploaded {
  id: string;
  name: string;
  content: Buffer;
}

async function upload(name: string, content: Buffer, t = token): Promise<Uploaded> {
  const r = await h.request.put(`/api/v1/uploads/${encodeURIComponent(name)}`).set(auth(t)).send(content);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return { id: r.body.file.id, name: r.body.file.name, content };
}

async function bundle(files: Uploaded[], body: Record<string, unknown> = {}) {
  const r = await h.request.post('/api/v1/shares').set(auth()).send({ fileIds: files.map((f) => f.id), ...body });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body as { id: string; token: string; url: string; bundle: boolean; fileIds: string[] };
}

const get = (p: string, headers: Record<string, string> = {}) => h.request.get(p).set(headers).buffer(true).parse(binaryParser);

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-zip-'));

/** Runs unzip -t, 7z t and Python's zipfile (byte-exact against the originals, bit 11, stored); returns Python's report. */
function checkWithUnzippers(zip: Buffer, originals: { name: string; content: Buffer }[]): { names: string[]; zip64: boolean } {
  const dir = tmp();
  const zipPath = path.join(dir, 'b.zip');
  fs.writeFileSync(zipPath, zip);
  const expected = originals.map((o, i) => {
    fs.writeFileSync(path.join(dir, `orig${i}`), o.content);
    return { name: o.name, path: path.join(dir, `orig${i}`) };
  });
  const unzip = execFileSync('unzip', ['-t', zipPath], { encoding: 'utf8' });
  expect(unzip).toMatch(/No errors detected/);
  const seven = execFileSync('7z', ['t', zipPath], { encoding: 'utf8' });
  expect(seven).toMatch(/Everything is Ok/);
  const script = `
import json, sys, zipfile
zf = zipfile.ZipFile(sys.argv[1])
expected = json.loads(sys.argv[2])
infos = zf.infolist()
assert [i.filename for i in infos] == [e['name'] for e in expected], [i.filename for i in infos]
for info, e in zip(infos, expected):
    assert info.flag_bits & 0x800, 'bit 11 (UTF-8 name) not set'
    assert info.compress_type == zipfile.ZIP_STORED
    assert zf.read(info) == open(e['path'], 'rb').read(), info.filename
data = open(sys.argv[1], 'rb').read()
print(json.dumps({'names': [i.filename for i in infos], 'zip64': b'PK\\x06\\x06' in data[-200:]}))
`;
  const out = execFileSync('python3', ['-c', script, zipPath, JSON.stringify(expected)], { encoding: 'utf8' });
  fs.rmSync(dir, { recursive: true, force: true });
  return JSON.parse(out) as { names: string[]; zip64: boolean };
}

/** GET over a real socket: what the client received, and whether the body ended cleanly. */
async function rawGet(p: string, headers: Record<string, string> = {}): Promise<{ status: number; received: Buffer; clean: boolean }> {
  const server = await serve(h.app);
  try {
    return await new Promise((resolve) => {
      http.get({ host: '127.0.0.1', port: server.port, path: p, headers }, (res) => {
        const parts: Buffer[] = [];
        let settled = false;
        const done = (clean: boolean) => {
          if (!settled) resolve({ status: res.statusCode!, received: Buffer.concat(parts), clean });
          settled = true;
        };
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => done(true));
        res.on('aborted', () => done(false));
        res.on('error', () => done(false));
      });
    });
  } finally {
    await server.close();
  }
}

async function shareRow(id: string) {
  await downloadsSettled(h);
  return (await h.sql<{ downloads: number; bytes_served: number }>('SELECT downloads, bytes_served FROM shares WHERE id = ?', [id]))[0]!;
}

/** The files of the edge-size bundle: 0, chunk-1, chunk, chunk+1 bytes, with names unzippers must keep. */
async function edgeFiles(): Promise<Uploaded[]> {
  return [
    await upload('empty.txt', Buffer.alloc(0)),
    await upload('Überweisung 2026.pdf', pattern(C - 1, 2)),
    await upload('報告.bin', pattern(C, 3)),
    await upload('chunk+1.dat', pattern(C + 1, 4)),
  ];
}

describe('bundle zip', () => {
  it('is a valid stored zip with UTF-8 names (unzip -t, 7z t, Python byte-exact) and its length and ETag before streaming', async () => {
    await init();
    const files = await edgeFiles();
    const s = await bundle(files);
    expect(s).toMatchObject({ bundle: true, fileIds: files.map((f) => f.id) });
    const head = await h.request.head(`/s/${s.token}/zip`);
    expect(head.status).toBe(200);
    const r = await get(`/s/${s.token}/zip`);
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/zip');
    expect(r.headers['content-length']).toBe(String(r.body.length));
    expect(head.headers['content-length']).toBe(String(r.body.length));
    expect(r.headers.etag).toMatch(/^"zip-[A-Za-z0-9_-]{32}"$/);
    expect(head.headers.etag).toBe(r.headers.etag);
    expect(r.headers['accept-ranges']).toBe('bytes');
    const report = checkWithUnzippers(r.body, files);
    expect(report.zip64).toBe(false);
    // The same files in another link give the same bytes (nothing depends on the link or the hour).
    const again = await get(`/s/${(await bundle(files)).token}/zip`);
    expect(again.headers.etag).toBe(r.headers.etag);
    expect(again.body.equals(r.body)).toBe(true);
    // HEAD counted nothing; the two GETs counted one each.
    expect((await shareRow(s.id)).downloads).toBe(1);
  });

  it('forced ZIP64 (BUNDLE_ZIP64=always) passes every unzipper too', async () => {
    await init({ BUNDLE_ZIP64: 'always' });
    const files = await edgeFiles();
    const s = await bundle(files);
    const r = await get(`/s/${s.token}/zip`);
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe(String(r.body.length));
    expect(checkWithUnzippers(r.body, files).zip64).toBe(true);
    // Ranges of the ZIP64 layout equal the full zip too.
    const size = r.body.length;
    for (const [a, b] of [[0, 60], [size - 120, size - 1]]) {
      const part = await get(`/s/${s.token}/zip`, { Range: `bytes=${a}-${b}` });
      expect(part.status).toBe(206);
      expect(part.body.equals(r.body.subarray(a, b + 1)), `${a}-${b}`).toBe(true);
    }
  });

  it('answers Range at many offsets with the same bytes as the full zip; If-Range with a stale ETag gets all of it', async () => {
    await init();
    const files = await edgeFiles();
    const s = await bundle(files);
    const full = await get(`/s/${s.token}/zip`);
    const size = full.body.length;
    const names = zipEntryNames(files.map((f) => f.name));
    const layout = layoutZip(files.map((f, i) => ({ name: names[i]!, size: f.content.length, crc32: null, createdAt: 0, sha256: '' })), false);
    expect(layout.size).toBe(size);
    const last = layout.entries[3]!;
    const ranges: [string, number, number][] = [
      ['the first byte', 0, 0],
      ['the first local header', 0, 29],
      ['inside a local header', 10, 40],
      ['across an empty entry into the next header', layout.entries[0]!.headerOffset + 5, layout.entries[1]!.dataOffset + 3],
      ['a chunk boundary inside a file', last.dataOffset + C - 3, last.dataOffset + C + 2],
      ['a data descriptor', last.dataOffset + last.size - 2, last.dataOffset + last.size + 10],
      ['the central directory', layout.centralOffset - 3, layout.centralOffset + 70],
      ['the last byte', size - 1, size - 1],
      ['all of it', 0, size - 1],
    ];
    for (const [what, a, b] of ranges) {
      const r = await get(`/s/${s.token}/zip`, { Range: `bytes=${a}-${b}` });
      expect(r.status, what).toBe(206);
      expect(r.headers['content-range'], what).toBe(`bytes ${a}-${b}/${size}`);
      expect(r.body.equals(full.body.subarray(a, b + 1)), what).toBe(true);
    }
    const suffix = await get(`/s/${s.token}/zip`, { Range: 'bytes=-22' });
    expect(suffix.body.equals(full.body.subarray(size - 22))).toBe(true);
    // If-Range: the current ETag resumes, a stale one gets the whole zip.
    const resumed = await get(`/s/${s.token}/zip`, { Range: `bytes=${size - 100}-`, 'If-Range': String(full.headers.etag) });
    expect(resumed.status).toBe(206);
    expect(resumed.body.equals(full.body.subarray(size - 100))).toBe(true);
    const stale = await get(`/s/${s.token}/zip`, { Range: `bytes=${size - 100}-`, 'If-Range': '"zip-stale"' });
    expect(stale.status).toBe(200);
    expect(stale.body.equals(full.body)).toBe(true);
    const beyond = await get(`/s/${s.token}/zip`, { Range: `bytes=${size}-` });
    expect(beyond.status).toBe(416);
    expect(beyond.headers['content-range']).toBe(`bytes */${size}`);
  });

  it('a files row without a CRC-32 (uploaded before it was recorded) gets it once, from the verified plaintext', async () => {
    await init();
    const files = [await upload('a.bin', pattern(C + 7, 5)), await upload('b.bin', pattern(300, 6))];
    const [row] = await h.sql<{ crc32: number }>('SELECT crc32 FROM files WHERE id = ?', [files[0]!.id]);
    expect(Number(row!.crc32)).toBe(crc32(files[0]!.content));
    const s = await bundle(files);
    const full = await get(`/s/${s.token}/zip`);
    await h.sql('UPDATE files SET crc32 = NULL');
    const tail = await get(`/s/${s.token}/zip`, { Range: 'bytes=100-' });
    expect(tail.status).toBe(206);
    expect(tail.body.equals(full.body.subarray(100))).toBe(true);
    const rows = await h.sql<{ id: string; crc32: number }>('SELECT id, crc32 FROM files');
    for (const f of files) expect(Number(rows.find((r) => r.id === f.id)!.crc32)).toBe(crc32(f.content));
  });

  it('a tampered chunk in the second file cuts the zip; ranges that do not cover it are still served (only covering chunks are decrypted)', async () => {
    await init();
    const files = [await upload('one.bin', pattern(C - 1, 7)), await upload('two.bin', pattern(2 * C + 5, 8)), await upload('three.bin', pattern(100, 9))];
    const s = await bundle(files);
    const before = await get(`/s/${s.token}/zip`);
    const names = zipEntryNames(files.map((f) => f.name));
    const layout = layoutZip(files.map((f, i) => ({ name: names[i]!, size: f.content.length, crc32: null, createdAt: 0, sha256: '' })), false);
    const damagedAt = layout.entries[1]!.dataOffset + C;
    const blob = await h.readBlob(files[1]!.id);
    blob[chunkOffset(1, C) + 10]! ^= 1;
    await h.writeBlob(files[1]!.id, blob);
    // The first file with the damaged file's first chunk, and the third file with the central
    // directory: served whole, and without the server meeting the damage (had it decrypted the
    // damaged chunk after the last byte of the range, the client could not tell, the log can).
    const failures = () => h.logLines.filter((l) => l.includes('download failed after headers were sent')).length;
    for (const [a, b] of [[0, damagedAt - 1], [layout.entries[2]!.headerOffset, before.body.length - 1]]) {
      const r = await get(`/s/${s.token}/zip`, { Range: `bytes=${a}-${b}` });
      expect(r.status).toBe(206);
      expect(r.body.equals(before.body.subarray(a, b + 1))).toBe(true);
    }
    await downloadsSettled(h);
    expect(failures()).toBe(0);
    const cut = await rawGet(`/s/${s.token}/zip`);
    expect(cut.status).toBe(200);
    expect(cut.clean).toBe(false);
    expect(cut.received.length).toBeLessThanOrEqual(damagedAt);
    expect(cut.received.equals(before.body.subarray(0, cut.received.length))).toBe(true);
    const covering = await rawGet(`/s/${s.token}/zip`, { Range: `bytes=${damagedAt - 10}-${damagedAt + 10}` });
    expect(covering.status).toBe(206);
    expect(covering.clean).toBe(false);
    await downloadsSettled(h);
    expect(failures()).toBe(2);
  });
});

describe('bundle budgets', () => {
  it('two parallel full zips on a one-download link: exactly one is served', async () => {
    await init();
    const files = [await upload('a.bin', pattern(3 * C, 10)), await upload('b.bin', pattern(2 * C, 11))];
    const s = await bundle(files, { maxDownloads: 1 });
    const [a, b] = await Promise.all([get(`/s/${s.token}/zip`), get(`/s/${s.token}/zip`)]);
    expect([a.status, b.status].sort()).toEqual([200, 404]);
    expect((await shareRow(s.id)).downloads).toBe(1);
    expect((await get(`/s/${s.token}/zip`)).status).toBe(404);
    expect((await get(`/s/${s.token}/files/${files[0]!.id}`)).status).toBe(404);
  });

  it('a zip resumed with Range counts once, and its bytes equal an uninterrupted zip', async () => {
    await init();
    const files = [await upload('a.bin', pattern(2 * C + 3, 12)), await upload('b.bin', pattern(10, 13))];
    const s = await bundle(files, { maxDownloads: 1 });
    const head = await get(`/s/${s.token}/zip`, { Range: 'bytes=0-999' });
    expect(head.status).toBe(206);
    expect((await shareRow(s.id)).downloads).toBe(0);
    const rest = await get(`/s/${s.token}/zip`, { Range: 'bytes=1000-', 'If-Range': String(head.headers.etag) });
    expect(rest.status).toBe(206);
    expect((await shareRow(s.id)).downloads).toBe(1);
    const whole = await get(`/s/${(await bundle(files)).token}/zip`);
    expect(Buffer.concat([head.body, rest.body]).equals(whole.body)).toBe(true);
    expect((await get(`/s/${s.token}/zip`, { Range: 'bytes=0-9' })).status).toBe(404);
  });

  it("the page's files, fetched one by one under its ticket, are one download; without a ticket each file is one", async () => {
    await init();
    const files = [await upload('a.txt', Buffer.from('alpha')), await upload('b.txt', Buffer.from('beta')), await upload('c.txt', Buffer.from('gamma'))];
    const s = await bundle(files, { maxDownloads: 1 });
    const page = await h.request.get(`/s/${s.token}`);
    expect(page.status).toBe(200);
    for (const f of files) expect(page.text).toContain(createHash('sha256').update(f.content).digest('hex'));
    const hrefs = [...page.text.matchAll(/href="(\/s\/[^"]+\/files\/[0-9a-f]{32}\?ticket=[^"]+)"/g)].map((m) => m[1]!.replace(/&amp;/g, '&'));
    expect(hrefs).toHaveLength(3);
    for (const [i, href] of hrefs.entries()) {
      const r = await get(href);
      expect(r.status).toBe(200);
      expect(r.body.equals(files[i]!.content)).toBe(true);
    }
    expect((await shareRow(s.id)).downloads).toBe(1);
    const zipHref = /href="(\/s\/[^"]+\/zip\?ticket=[^"]+)"/.exec(page.text)![1]!.replace(/&amp;/g, '&');
    expect((await get(zipHref)).status).toBe(200); // the same recipient's same download
    expect((await get(`/s/${s.token}/zip`)).status).toBe(404); // anyone else: used up
    expect((await shareRow(s.id)).downloads).toBe(1);

    const plain = await bundle(files, { maxDownloads: 1 });
    expect((await get(`/s/${plain.token}/files/${files[0]!.id}`)).status).toBe(200);
    expect((await get(`/s/${plain.token}/files/${files[1]!.id}`)).status).toBe(404);
  });
});

describe('bundle links', () => {
  it('deleting a file withdraws it (the anchor too): the page says so, the zip and ETag change, the link keeps the others', async () => {
    await init();
    const files = [await upload('first.txt', Buffer.from('one')), await upload('second.txt', Buffer.from('two')), await upload('third.txt', Buffer.from('three'))];
    const s = await bundle(files);
    const before = await get(`/s/${s.token}/zip`);
    expect((await h.request.delete(`/api/v1/files/${files[0]!.id}`).set(auth())).status).toBe(204);
    const page = await h.request.get(`/s/${s.token}`);
    expect(page.status).toBe(200);
    expect(page.text).toContain('1 file was withdrawn');
    expect(page.text).not.toContain('first.txt');
    expect((await get(`/s/${s.token}/files/${files[0]!.id}`)).status).toBe(404);
    const after = await get(`/s/${s.token}/zip`);
    expect(after.status).toBe(200);
    expect(after.headers.etag).not.toBe(before.headers.etag);
    expect(checkWithUnzippers(after.body, files.slice(1)).names).toEqual(['second.txt', 'third.txt']);
    // A resume against the old zip's ETag gets the new zip whole.
    const resumed = await get(`/s/${s.token}/zip`, { Range: 'bytes=10-', 'If-Range': String(before.headers.etag) });
    expect(resumed.status).toBe(200);
    const list = await h.request.get(`/api/v1/files/${files[1]!.id}/shares`).set(auth());
    expect(list.body.shares.find((x: { id: string }) => x.id === s.id)).toMatchObject({ bundle: true, fileIds: [files[1]!.id, files[2]!.id] });
    await h.request.delete(`/api/v1/files/${files[2]!.id}`).set(auth());
    await h.request.delete(`/api/v1/files/${files[1]!.id}`).set(auth());
    expect((await h.request.get(`/s/${s.token}`)).status).toBe(404);
  });

  it('refuses bad file lists, leaves nothing behind, and a bundle is not a single-file link', async () => {
    await init();
    const mine = await upload('mine.txt', Buffer.from('mine'));
    const other = await makeUser(h, token, 'bob');
    const theirs = await upload('theirs.txt', Buffer.from('theirs'), other);
    const cases: [string, unknown, number, string][] = [
      ['no files', [], 400, 'validation_error'],
      ['a duplicate', [mine.id, mine.id], 400, 'validation_error'],
      ['not an id', ['nope'], 400, 'validation_error'],
      ["another user's file", [mine.id, theirs.id], 404, 'not_found'],
      ['an unknown file', [mine.id, 'f'.repeat(32)], 404, 'not_found'],
    ];
    for (const [what, fileIds, status, code] of cases) {
      const r = await h.request.post('/api/v1/shares').set(auth()).send({ fileIds });
      expect(r.status, what).toBe(status);
      expect(r.body.code, what).toBe(code);
    }
    expect(await h.sql('SELECT id FROM shares')).toHaveLength(0);
    expect(await h.sql('SELECT share_id FROM share_files')).toHaveLength(0);
    const s = await bundle([mine]);
    expect((await get(`/s/${s.token}/content`)).status).toBe(404);
    // A database writer cannot add a file to the bundle, not even one of the owner's: the row's MAC does not match.
    const another = await upload('another.txt', Buffer.from('another'));
    await h.sql('INSERT INTO share_files (share_id, position, file_id, row_mac) SELECT share_id, 1, ?, row_mac FROM share_files WHERE share_id = ? AND position = 0', [another.id, s.id]);
    await h.sql('INSERT INTO share_files (share_id, position, file_id, row_mac) SELECT share_id, 2, ?, row_mac FROM share_files WHERE share_id = ? AND position = 0', [theirs.id, s.id]);
    expect((await get(`/s/${s.token}/files/${another.id}`)).status).toBe(404);
    expect((await get(`/s/${s.token}/files/${theirs.id}`)).status).toBe(404);
    expect((await get(`/s/${s.token}/files/${mine.id}`)).status).toBe(200);
  });

  it('a database writer cannot turn a single-file link into a bundle, or a bundle into a single-file link', async () => {
    await init();
    const files = [await upload('x.txt', Buffer.from('x')), await upload('y.txt', Buffer.from('y'))];
    const single = await h.request.post(`/api/v1/files/${files[0]!.id}/shares`).set(auth()).send({});
    const b = await bundle(files);
    expect((await get(`/s/${single.body.token}/content`)).status).toBe(200);
    expect((await get(`/s/${b.token}/zip`)).status).toBe(200);
    // The single link's files would otherwise come from share_files rows the writer copied in.
    await h.sql('INSERT INTO share_files (share_id, position, file_id, row_mac) SELECT ?, position, file_id, row_mac FROM share_files WHERE share_id = ?', [single.body.id, b.id]);
    await h.sql('UPDATE shares SET bundle = 1 WHERE id = ?', [single.body.id]);
    await h.sql('UPDATE shares SET bundle = 0 WHERE id = ?', [b.id]);
    expect((await h.request.get(`/s/${single.body.token}`)).status).toBe(404);
    expect((await get(`/s/${single.body.token}/zip`)).status).toBe(404);
    expect((await get(`/s/${b.token}/content`)).status).toBe(404);
    expect((await get(`/s/${b.token}/zip`)).status).toBe(404);
  });

  it('a password-protected bundle takes the password as HTTP Basic auth on the zip', async () => {
    await init();
    const files = [await upload('p.txt', Buffer.from('secret'))];
    const s = await bundle(files, { password: 'bundle password 1' });
    const page = await h.request.get(`/s/${s.token}`);
    expect(page.text).not.toContain('p.txt');
    expect((await get(`/s/${s.token}/zip`)).status).toBe(401);
    const ok = await get(`/s/${s.token}/zip`, { Authorization: `Basic ${Buffer.from(':bundle password 1').toString('base64')}` });
    expect(ok.status).toBe(200);
    expect(checkWithUnzippers(ok.body, files).names).toEqual(['p.txt']);
  });
});
