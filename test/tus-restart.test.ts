/**
 * A resumable upload survives SIGKILL of the server: the built server runs as a child, is
 * killed mid-upload, restarted on the same directory, and tus-js-client resumes from the
 * committed offset; the file is byte-exact. While the upload runs (and after), no byte
 * sequence of the plaintext (a marker string repeated through the file) is anywhere under
 * uploads/ or in the database files.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import * as tus from 'tus-js-client';
import { afterEach, describe, expect, it } from 'vitest';
import { childAdminToken, childEnv, startChild, tempDir, type Child } from './child.js';
import { listFiles } from './helpers.js';

const C = 64 * 1024;
const SIZE = 48 * 1024 * 1024;
const MARKER = Buffer.from('SFS-TUS-PLAINTEXT-MARKER-5b1e0c');
const children: Child[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const c of children.splice(0)) await c.stop('SIGKILL');
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** Every file under uploads/ and data/ (database, WAL, audit head) that holds the marker. */
function filesWithMarker(dir: string): string[] {
  return [...listFiles(path.join(dir, 'uploads')), ...listFiles(path.join(dir, 'data'))].filter((f) => {
    try {
      return fs.readFileSync(f).includes(MARKER);
    } catch {
      return false; // removed while we looked (a temp file renamed)
    }
  });
}

function downloadSha(port: number, token: string, id: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: `/api/v1/files/${id}/content`, headers: { Authorization: `Bearer ${token}` } }, (res) => {
      const h = createHash('sha256');
      res.on('data', (c: Buffer) => h.update(c));
      res.on('end', () => resolve(res.statusCode === 200 ? h.digest('hex') : `status ${res.statusCode}`));
      res.on('error', reject);
    });
  });
}

describe('SIGKILL of the server mid-upload', () => {
  it('restart, resume from the committed offset, byte-exact; no plaintext under uploads/ or in the database at any moment', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const env = childEnv(dir, { MAX_FILE_SIZE: '1GiB', TUS_LEASE_SECONDS: '2' });
    const first = await startChild(env);
    children.push(first);
    const token = await childAdminToken(first);

    // The plaintext: random bytes with the marker every 4 KiB.
    const file = path.join(dir, 'source.bin');
    const data = randomBytes(SIZE);
    for (let i = 0; i + MARKER.length < SIZE; i += 4096) MARKER.copy(data, i);
    fs.writeFileSync(file, data);
    const sha256 = createHash('sha256').update(data).digest('hex');

    let uploadUrl = '';
    const scans: number[] = [];
    const killed = new Promise<void>((resolve, reject) => {
      let done = false;
      const upload = new tus.Upload(fs.createReadStream(file), {
        endpoint: `http://127.0.0.1:${first.port}/api/v1/tus/`,
        headers: { Authorization: `Bearer ${token}` },
        metadata: { filename: 'source.bin' },
        // Several PATCH requests, so some are committed before the kill.
        chunkSize: 8 * 1024 * 1024,
        retryDelays: null,
        onAfterResponse(req, res) {
          if (req.getMethod() === 'POST') uploadUrl = res.getHeader('Location') ?? '';
        },
        onProgress(sent) {
          if (done) return;
          // Scans while bytes stream in (the .part file grows and the rows change).
          if (scans.length < 6 && sent > (scans.length + 1) * (SIZE / 10)) {
            expect(filesWithMarker(dir)).toEqual([]);
            scans.push(sent);
          }
          if (sent > SIZE * 0.6) {
            done = true;
            first.proc.kill('SIGKILL');
            resolve();
          }
        },
        onSuccess: () => reject(new Error('the upload finished before the kill')),
        onError: () => {
          if (!done) reject(new Error('upload failed before the kill'));
        },
      });
      upload.start();
    });
    await killed;
    await new Promise<void>((r) => (first.proc.exitCode !== null || first.proc.signalCode !== null ? r() : first.proc.once('exit', () => r())));
    expect(scans.length).toBeGreaterThanOrEqual(5);
    expect(filesWithMarker(dir)).toEqual([]);

    const second = await startChild(env);
    children.push(second);
    const id = uploadUrl.split('/').pop()!;
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    const resumeUrl = `http://127.0.0.1:${second.port}/api/v1/tus/${id}`;
    const result = await new Promise<{ offset: number; fileSha: string; fileId: string }>((resolve, reject) => {
      let offset = -1;
      let fileSha = '';
      let fileId = '';
      const upload = new tus.Upload(fs.createReadStream(file), {
        uploadUrl: resumeUrl,
        headers: { Authorization: `Bearer ${token}` },
        chunkSize: 8 * 1024 * 1024,
        // The killed process's lease lapses after TUS_LEASE_SECONDS: 423 until then, retried.
        retryDelays: [200, 400, 800, 1000, 1000, 1000, 1000],
        onAfterResponse(req, res) {
          if (req.getMethod() === 'HEAD' && res.getStatus() === 200 && offset < 0) offset = Number(res.getHeader('Upload-Offset'));
          if (res.getHeader('Upload-File-Id')) {
            fileId = res.getHeader('Upload-File-Id')!;
            fileSha = res.getHeader('Upload-File-Sha256')!;
          }
        },
        onProgress() {
          if (scans.length < 9) {
            expect(filesWithMarker(dir)).toEqual([]);
            scans.push(0);
          }
        },
        onSuccess: () => resolve({ offset, fileSha, fileId }),
        onError: reject,
      });
      upload.start();
    });
    // Resumed, not restarted: from a committed chunk boundary well into the file.
    expect(result.offset).toBeGreaterThan(SIZE / 4);
    expect(result.offset % C).toBe(0);
    expect(result.fileId).toBe(id);
    expect(result.fileSha).toBe(sha256);
    expect(await downloadSha(second.port, token, id)).toBe(sha256);
    expect(filesWithMarker(dir)).toEqual([]);
    // The finished upload left no part file behind.
    expect(listFiles(path.join(dir, 'uploads', '.tus'))).toEqual([]);
  });
});
