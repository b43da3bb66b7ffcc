/**
 * Load: many concurrent clients doing mixed uploads (1 KiB to 20 MiB), downloads and deletes
 * against one real server process, loopback only, bounded in time and disk. Zero 5xx, every
 * download byte-exact, nothing lost, server memory bounded.
 *   npm test:          LOAD_CLIENTS=30  LOAD_SECONDS=10 (the default)
 *   npm run test:load: LOAD_CLIENTS=100 LOAD_SECONDS=60
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { childAdminToken, childEnv, peakRss, randomKey, startChild, tempDir, type Child } from './child.js';

const CLIENTS = Number(process.env.LOAD_CLIENTS ?? 30);
const SECONDS = Number(process.env.LOAD_SECONDS ?? 10);
const DISK_BUDGET = 1024 * 1024 * 1024; // bytes of plaintext kept at once

let child: Child | undefined;
const dir = tempDir();
afterAll(async () => {
  await child?.stop('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Deterministic bytes for (seed, size), generated piece by piece, never whole in memory. */
function* generate(seed: number, size: number): Generator<Buffer> {
  const block = Buffer.alloc(64 * 1024);
  let x = seed || 1;
  for (let sent = 0; sent < size; sent += block.length) {
    for (let i = 0; i < block.length; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      block.writeInt32LE(x | 0, i);
    }
    yield Buffer.from(block.subarray(0, Math.min(block.length, size - sent)));
  }
}

function sizeFor(r: number): number {
  // Log-uniform between 1 KiB and 20 MiB: mostly small files, some large ones.
  return Math.floor(1024 * Math.pow(20 * 1024, r));
}

describe(`load: ${CLIENTS} clients for ${SECONDS} s`, () => {
  it('zero 5xx, byte-exact downloads, nothing lost, bounded memory', async () => {
    child = await startChild(childEnv(dir, { NODE_ENV: 'production', MASTER_KEY: randomKey(), LOG_LEVEL: 'error', MAX_FILE_SIZE: '64MiB' }));
    const token = await childAdminToken(child);
    const port = child.port;
    const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
    const files = new Map<string, { sha256: string; size: number }>();
    const deleted = new Set<string>();
    let stored = 0;
    const stats = { uploads: 0, downloads: 0, deletes: 0, bytesUp: 0, bytesDown: 0, errors5xx: 0, mismatches: 0, other: [] as string[] };

    const request = (method: string, path: string, headers: Record<string, string | number> = {}) =>
      http.request({ host: '127.0.0.1', port, method, path, agent, headers: { Authorization: `Bearer ${token}`, ...headers } });

    const upload = (seed: number, size: number) =>
      new Promise<void>((resolve) => {
        const hash = createHash('sha256');
        const req = request('PUT', `/api/v1/uploads/load-${seed}.bin`, { 'Content-Length': size });
        req.on('response', (res) => {
          let t = '';
          res.on('data', (d) => (t += d));
          res.on('end', () => {
            if (res.statusCode! >= 500) stats.errors5xx++;
            if (res.statusCode === 201) {
              const f = JSON.parse(t).file;
              const expected = hash.digest('hex');
              if (f.sha256 !== expected) stats.mismatches++;
              files.set(f.id, { sha256: expected, size });
              stats.uploads++;
              stats.bytesUp += size;
            } else {
              stored -= size;
              stats.other.push(`PUT ${res.statusCode}`);
            }
            resolve();
          });
        });
        req.on('error', (e) => {
          stored -= size;
          stats.other.push(`PUT ${e.message}`);
          resolve();
        });
        const gen = generate(seed, size);
        const pump = () => {
          for (let n = gen.next(); !n.done; n = gen.next()) {
            hash.update(n.value);
            if (!req.write(n.value)) return void req.once('drain', pump);
          }
          req.end();
        };
        pump();
      });

    const download = (id: string, expect_: { sha256: string; size: number }) =>
      new Promise<void>((resolve) => {
        const req = request('GET', `/api/v1/files/${id}/content`);
        req.on('response', (res) => {
          const hash = createHash('sha256');
          let n = 0;
          res.on('data', (d: Buffer) => {
            hash.update(d);
            n += d.length;
          });
          res.on('end', () => {
            if (res.statusCode! >= 500) stats.errors5xx++;
            if (res.statusCode === 200) {
              stats.downloads++;
              stats.bytesDown += n;
              if (hash.digest('hex') !== expect_.sha256 || n !== expect_.size) stats.mismatches++;
            } else if (!(res.statusCode === 404 && deleted.has(id))) stats.other.push(`GET ${res.statusCode}`);
            resolve();
          });
          res.on('error', () => {
            stats.other.push('GET aborted');
            resolve();
          });
        });
        req.on('error', (e) => {
          stats.other.push(`GET ${e.message}`);
          resolve();
        });
        req.end();
      });

    const remove = (id: string) =>
      new Promise<void>((resolve) => {
        const f = files.get(id)!;
        files.delete(id);
        deleted.add(id);
        const req = request('DELETE', `/api/v1/files/${id}`);
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode! >= 500) stats.errors5xx++;
            if (res.statusCode === 204) {
              stats.deletes++;
              stored -= f.size;
            } else stats.other.push(`DELETE ${res.statusCode}`);
            resolve();
          });
        });
        req.on('error', (e) => {
          stats.other.push(`DELETE ${e.message}`);
          resolve();
        });
        req.end();
      });

    let seed = 1;
    const deadline = Date.now() + SECONDS * 1000;
    const worker = async (w: number) => {
      let rnd = (w + 1) * 2654435761;
      const next = () => ((rnd = (rnd * 1103515245 + 12345) >>> 0) / 2 ** 32);
      while (Date.now() < deadline) {
        const op = next();
        const ids = [...files.keys()];
        if (op < 0.45 || ids.length === 0) {
          const size = sizeFor(next());
          if (stored + size > DISK_BUDGET && ids.length) {
            await remove(ids[Math.floor(next() * ids.length)]!);
            continue;
          }
          stored += size;
          await upload(seed++, size);
        } else if (op < 0.9) {
          const id = ids[Math.floor(next() * ids.length)]!;
          await download(id, files.get(id)!);
        } else {
          await remove(ids[Math.floor(next() * ids.length)]!);
        }
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, (_, w) => worker(w)));

    // The server's list equals what was uploaded minus what was deleted.
    const listed: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await new Promise((resolve) => {
        const req = request('GET', `/api/v1/files?limit=100${cursor ? `&cursor=${cursor}` : ''}`);
        req.on('response', (res) => {
          let t = '';
          res.on('data', (d) => (t += d));
          res.on('end', () => resolve(JSON.parse(t)));
        });
        req.end();
      });
      listed.push(...page.files.map((f: { id: string }) => f.id));
      cursor = page.nextCursor;
    } while (cursor);
    agent.destroy();

    const peak = peakRss(child.proc.pid!);
    console.log(
      `load: ${CLIENTS} clients, ${SECONDS} s: ${stats.uploads} uploads (${(stats.bytesUp / 2 ** 20).toFixed(0)} MiB), ` +
        `${stats.downloads} downloads (${(stats.bytesDown / 2 ** 20).toFixed(0)} MiB), ${stats.deletes} deletes; ` +
        `server peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB`,
    );
    expect(stats.errors5xx).toBe(0);
    expect(stats.mismatches).toBe(0);
    expect(stats.other).toEqual([]);
    expect(stats.uploads).toBeGreaterThan(CLIENTS);
    expect(stats.downloads).toBeGreaterThan(CLIENTS);
    expect(listed.sort()).toEqual([...files.keys()].sort());
    expect(peak).toBeLessThan(512 * 1024 * 1024);
  }, (SECONDS + 120) * 1000);
});
