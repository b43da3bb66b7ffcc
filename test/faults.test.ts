/** Crashes and faults: SIGKILL mid-upload, SIGTERM with work in flight, a full disk, a busy database, a reader that stops reading. */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DiskBlobStore } from '../src/storage/disk.js';
import { childAdminToken, childEnv, currentRss, peakRss, randomKey, startChild, tempDir, type Child } from './child.js';
import { PG_TRANSACTION_LOCK } from '../src/db/database.js';
import { SETUP_CODE, TEST_DIALECT, binaryParser, listFiles, makeHarness, pattern, separateConnection, setupAdmin } from './helpers.js';

// Child servers run on their own SQLite + disk directories whatever the vitest project: the
// process-level faults run once, in the "disk" project. What goes through a harness runs in both.
const SINGLE_NODE = TEST_DIALECT === 'sqlite';

const dirs: string[] = [];
const children: Child[] = [];
afterAll(async () => {
  for (const c of children) await c.stop('SIGKILL');
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
function dir() {
  const d = tempDir();
  dirs.push(d);
  return d;
}
async function start(env: Record<string, string>) {
  const c = await startChild(env);
  children.push(c);
  return c;
}

function put(port: number, token: string, name: string, body: Buffer): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: `/api/v1/uploads/${name}`, headers: { Authorization: `Bearer ${token}`, 'Content-Length': body.length } }, (res) => {
      let t = '';
      res.on('data', (d) => (t += d));
      res.on('end', () => resolve({ status: res.statusCode!, body: t ? JSON.parse(t) : null }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function getHash(port: number, token: string, id: string): Promise<{ status: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: `/api/v1/files/${id}/content`, headers: { Authorization: `Bearer ${token}` } }, (res) => {
        const h = createHash('sha256');
        res.on('data', (d) => h.update(d));
        res.on('end', () => resolve({ status: res.statusCode!, sha256: h.digest('hex') }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

/** Starts a PUT of `total` bytes, sends `first` bytes, and returns a handle to finish or abandon it. */
function partialPut(port: number, token: string, name: string, total: number, first: number) {
  let status: Promise<number>;
  const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: `/api/v1/uploads/${name}`, headers: { Authorization: `Bearer ${token}`, 'Content-Length': total } });
  status = new Promise((resolve) => {
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('error', () => resolve(-1));
  });
  req.write(pattern(first, 5));
  return { status, finish: () => req.end(pattern(total - first, 6)) };
}

/** Another process hammering the SQLite file with short immediate transactions for 2.5 s; resolves to how many it made. */
function sqliteWriter(dbFile: string): Promise<number> {
  const writer = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `
      import Database from 'better-sqlite3';
      const db = new Database(${JSON.stringify(dbFile)});
      db.pragma('busy_timeout = 2000');
      const end = Date.now() + 2500;
      let n = 0;
      while (Date.now() < end) {
        db.transaction(() => { db.prepare("INSERT INTO master_keys (key_id, check_value, created_at) VALUES (?, x'00', 0)").run('x' + n++); db.prepare('DELETE FROM master_keys WHERE key_id = ?').run('x' + (n - 1)); }).immediate();
      }
      console.log(n);
      `,
    ],
    { cwd: path.resolve(import.meta.dirname, '..') },
  );
  let out = '';
  writer.stdout.on('data', (d) => (out += d));
  return new Promise((resolve) => writer.on('exit', () => resolve(Number(out))));
}

/** A second PostgreSQL connection making short transactions under the app's transaction lock for `ms`; resolves to how many. */
async function pgWriter(db: Awaited<ReturnType<typeof separateConnection>>, ms: number): Promise<number> {
  const end = Date.now() + ms;
  let n = 0;
  try {
    while (Date.now() < end) {
      await db.sql('BEGIN');
      await db.sql(`SELECT pg_advisory_xact_lock(${PG_TRANSACTION_LOCK})`);
      await db.sql('INSERT INTO master_keys (key_id, check_value, created_at) VALUES (?, ?, 0)', [`x${n}`, Buffer.alloc(1)]);
      await db.sql('DELETE FROM master_keys WHERE key_id = ?', [`x${n++}`]);
      await db.sql('COMMIT');
    }
  } finally {
    await db.close();
  }
  return n;
}

describe.runIf(SINGLE_NODE)('crashes', () => {
  it('SIGKILL in the middle of a large upload: after restart no temp file, no row without ciphertext, earlier files intact', async () => {
    const d = dir();
    const env = childEnv(d, { MASTER_KEY: randomKey(), MAX_FILE_SIZE: '1GiB' });
    const c = await start(env);
    const token = await childAdminToken(c);
    const earlier = [pattern(100_000, 1), pattern(3 * 65536 + 5, 2)];
    const ids: string[] = [];
    for (const [i, b] of earlier.entries()) ids.push((await put(c.port, token, `e${i}.bin`, b)).body.file.id);
    const big = partialPut(c.port, token, 'big.bin', 300 * 1024 * 1024, 40 * 1024 * 1024);
    // Wait until the temp file is on disk and growing, then kill the process outright.
    for (let i = 0; i < 100 && !listFiles(path.join(d, 'uploads')).some((f) => f.endsWith('.tmp')); i++) await new Promise((r) => setTimeout(r, 50));
    expect(listFiles(path.join(d, 'uploads')).some((f) => f.endsWith('.tmp'))).toBe(true);
    await c.stop('SIGKILL');
    await big.status;
    const again = await start(env);
    expect(listFiles(path.join(d, 'uploads')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    const t2 = (await (async () => token)()) as string;
    for (const [i, id] of ids.entries()) {
      expect(await getHash(again.port, t2, id)).toEqual({ status: 200, sha256: createHash('sha256').update(earlier[i]!).digest('hex') });
    }
    const list = await new Promise<any>((resolve) =>
      http.get({ host: '127.0.0.1', port: again.port, path: '/api/v1/files', headers: { Authorization: `Bearer ${t2}` } }, (res) => {
        let t = '';
        res.on('data', (x) => (t += x));
        res.on('end', () => resolve(JSON.parse(t)));
      }),
    );
    expect(list.files.map((f: { id: string }) => f.id).sort()).toEqual([...ids].sort());
    // Every row has its ciphertext and every blob has its row.
    const blobs = listFiles(path.join(d, 'uploads')).map((f) => path.basename(f, '.enc')).sort();
    expect(blobs).toEqual([...ids].sort());
    await again.stop();
  });

  it('SIGTERM: no new connections, in-flight uploads finish, exit 0', async () => {
    const d = dir();
    const c = await start(childEnv(d, { SHUTDOWN_GRACE_MS: '10000' }));
    const token = await childAdminToken(c);
    const up = partialPut(c.port, token, 'inflight.bin', 2_000_000, 1_000_000);
    await new Promise((r) => setTimeout(r, 200));
    const exited = new Promise<number | null>((resolve) => c.proc.once('exit', resolve));
    c.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    // A new connection is refused while the old request is still running.
    const refused = await new Promise<string>((resolve) => {
      http.get({ host: '127.0.0.1', port: c.port, path: '/healthz' }, () => resolve('answered')).on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    up.finish();
    expect(await up.status).toBe(201);
    expect(await exited).toBe(0);
    expect(listFiles(path.join(d, 'uploads')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('SIGTERM with an upload that outlasts the grace period: cut, exit 0, nothing half-written visible', async () => {
    const d = dir();
    const env = childEnv(d, { SHUTDOWN_GRACE_MS: '500', MASTER_KEY: randomKey() });
    const c = await start(env);
    const token = await childAdminToken(c);
    const up = partialPut(c.port, token, 'stalled.bin', 2_000_000, 500_000);
    await new Promise((r) => setTimeout(r, 200));
    const exited = new Promise<number | null>((resolve) => c.proc.once('exit', resolve));
    c.proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(await up.status).toBe(-1);
    const again = await start(env);
    expect(listFiles(path.join(d, 'uploads'))).toEqual([]);
    await again.stop();
  });
});

describe('faults', () => {
  it('disk full during an upload: 507 insufficient_storage, temp removed, the server keeps serving', async () => {
    class FullDisk extends DiskBlobStore {
      full = true;
      override async put(id: string, source: AsyncIterable<Buffer[]>) {
        if (!this.full) return super.put(id, source);
        // The write fails part-way, as it would with ENOSPC from the file system.
        const failing = async function* () {
          let n = 0;
          for await (const pieces of source) {
            n += pieces.reduce((a, b) => a + b.length, 0);
            if (n > 200_000) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
            yield pieces;
          }
        };
        return super.put(id, failing());
      }
    }
    const h = await makeHarness();
    const store = new FullDisk(h.config.uploadsDir);
    const { createApp } = await import('../src/app.js');
    const { SetupCode } = await import('../src/services/accounts.js');
    const app = await createApp({ config: h.config, db: h.database, store, keyring: h.keyring, logger: (await import('../src/http/logging.js')).createLogger('silent'), setup: new SetupCode('code-123') });
    const supertest = (await import('supertest')).default;
    // The database's setup code (stored by the harness's own app first), not this app's proposal.
    await supertest(app).post('/api/v1/setup').send({ setupCode: SETUP_CODE, username: 'admin', password: 'admin password 123' });
    const token = (await supertest(app).post('/api/v1/auth/tokens').send({ username: 'admin', password: 'admin password 123' })).body.token;
    const r = await supertest(app).put('/api/v1/uploads/x.bin').set('Authorization', `Bearer ${token}`).send(pattern(1_000_000, 1));
    expect(r.status).toBe(507);
    expect(r.body.code).toBe('insufficient_storage');
    const m = await supertest(app).post('/api/v1/files').set('Authorization', `Bearer ${token}`).attach('file', pattern(1_000_000, 2), 'y.bin');
    expect(m.status).toBe(507);
    expect(listFiles(h.config.uploadsDir)).toEqual([]);
    expect(await h.sql('SELECT count(*) AS n FROM files')).toEqual([{ n: 0 }]);
    store.full = false;
    const ok = await supertest(app).put('/api/v1/uploads/z.bin').set('Authorization', `Bearer ${token}`).send(pattern(1_000_000, 3));
    expect(ok.status).toBe(201);
    const d = await supertest(app).get(`/api/v1/files/${ok.body.file.id}/content`).set('Authorization', `Bearer ${token}`).buffer(true).parse(binaryParser);
    expect((d.body as Buffer).equals(pattern(1_000_000, 3))).toBe(true);
    h.cleanup();
  });

  it('another process writing the database at the same time: no lost rows, no errors to clients', async () => {
    const h = await makeHarness();
    const token = await setupAdmin(h);
    // A second writer (as the CLI, or another instance, would be) hammering the same database
    // with short transactions: another process on the SQLite file; on PostgreSQL a connection
    // of its own taking the transaction lock each time, as another instance's transactions do.
    const writes = h.dialect === 'postgres' ? pgWriter(await separateConnection(h), 2500) : sqliteWriter(h.config.dbFile);
    const statuses: number[] = [];
    const ids: string[] = [];
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline) {
      const r = await h.request.put(`/api/v1/uploads/c${statuses.length}.bin`).set('Authorization', `Bearer ${token}`).send(pattern(20_000, statuses.length));
      statuses.push(r.status);
      if (r.status === 201) ids.push(r.body.file.id);
    }
    expect(await writes).toBeGreaterThan(100);
    expect(statuses.length).toBeGreaterThan(5);
    expect(statuses.every((s) => s === 201)).toBe(true);
    const rows = (await h.sql<{ id: string }>('SELECT id FROM files')).map((r) => r.id).sort();
    expect(rows).toEqual([...ids].sort());
    h.cleanup();
  });

  it.runIf(SINGLE_NODE)('a client that stops reading a download: server memory stays bounded and the connection is timed out', async () => {
    const d = dir();
    const c = await start(childEnv(d, { SOCKET_IDLE_TIMEOUT_SECONDS: '5', MAX_FILE_SIZE: '1GiB', LOG_LEVEL: 'info' }));
    const token = await childAdminToken(c);
    // Larger than what loopback TCP buffers can absorb (tcp_rmem max here is 32 MiB), so the
    // server really is blocked on the stalled client rather than done writing.
    const SIZE = 256 * 1024 * 1024;
    const hash = createHash('sha256');
    const up = await new Promise<{ status: number; body: any }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: c.port, method: 'PUT', path: '/api/v1/uploads/slow.bin', headers: { Authorization: `Bearer ${token}`, 'Content-Length': SIZE } }, (res) => {
        let t = '';
        res.on('data', (x) => (t += x));
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(t) }));
      });
      req.on('error', reject);
      const block = randomBytes(1024 * 1024);
      let sent = 0;
      const pump = () => {
        while (sent < SIZE) {
          block.writeUInt32BE(sent / block.length, 0);
          hash.update(block);
          sent += block.length;
          if (!req.write(Buffer.from(block))) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    });
    expect(up.status).toBe(201);
    const big = { length: SIZE, sha256: hash.digest('hex') };
    const before = currentRss(c.proc.pid!);
    // Read one chunk, then stop reading for 8 s (the idle timeout is 5 s), then try to read on.
    const result = await new Promise<{ clean: boolean; received: number }>((resolve) => {
      http.get({ host: '127.0.0.1', port: c.port, path: `/api/v1/files/${up.body.file.id}/content`, headers: { Authorization: `Bearer ${token}` } }, (res) => {
        let received = 0;
        let settled = false;
        const done = (clean: boolean) => {
          if (!settled) {
            settled = true;
            resolve({ clean, received });
          }
        };
        res.on('data', (chunk: Buffer) => (received += chunk.length));
        res.once('data', async () => {
          res.pause();
          // Kernel buffers soak up tens of MiB first; then the server sees no progress and
          // must give up. Wait for its log line (bounded), then try to read on.
          for (let i = 0; i < 120 && !c.stdout().includes('download stalled'); i++) await new Promise((r) => setTimeout(r, 500));
          res.resume();
        });
        res.on('end', () => done(received === big.length));
        res.on('aborted', () => done(false));
        res.on('error', () => done(false));
        res.on('close', () => done(received === big.length));
      });
    });
    // The server gave up on the stalled connection: the client never got the whole file.
    expect(c.stdout()).toContain('download stalled');
    expect(result.clean).toBe(false);
    expect(result.received).toBeLessThan(big.length);
    // Back-pressure: the server did not read the file into memory while the client stalled.
    expect(peakRss(c.proc.pid!) - before).toBeLessThan(32 * 1024 * 1024);
    expect(await getHash(c.port, token, up.body.file.id)).toEqual({ status: 200, sha256: big.sha256 });
    await c.stop();
  });
});
