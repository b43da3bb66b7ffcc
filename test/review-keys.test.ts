/**
 * Issue 11, items 11 and 12 (key handling): a new active key must be introduced on purpose,
 * key files must be private, a rotation beside a live server is never reported as corruption,
 * rotation checkpoints the WAL, and `sfs key rotate --reencrypt` replaces DEKs and ciphertext.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { unwrapDek } from '../src/crypto/envelope.js';
import { DEFAULT_CHUNK_SIZE as C, HEADER_LENGTH, IntegrityError, TAG_LENGTH, chunkCount, chunkOffset, chunkPlainLength } from '../src/crypto/format.js';
import { Keyring } from '../src/crypto/keyring.js';
import { openDatabase } from '../src/db/database.js';
import { decryptRange } from '../src/crypto/stream.js';
import { rotate } from '../src/ops/keys.js';
import { MAIN, childAdminToken, childEnv, runToExit, tempDir, type Child } from './child.js';
import { TEST_DIALECT, binaryParser, makeHarness, pattern, setupAdmin, type Harness } from './helpers.js';

const SFS = path.resolve(import.meta.dirname, '..', 'dist', 'cli', 'sfs.js');
// Child servers and the CLI here run on their own SQLite + disk directories (whatever the vitest
// project), and the WAL and --reencrypt checks are about the SQLite file and the disk store: all
// of that runs once, in the "disk" project. What goes through a harness runs in both.
const SINGLE_NODE = TEST_DIALECT === 'sqlite';
const b64 = (k: Buffer) => k.toString('base64');

const dirs: string[] = [];
const children: Child[] = [];
const harnesses: Harness[] = [];
afterEach(() => {
  for (const h of harnesses.splice(0)) h.cleanup();
});
afterAll(async () => {
  for (const c of children) await c.stop('SIGKILL');
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
function dir(): string {
  const d = tempDir();
  dirs.push(d);
  return d;
}
async function harness(key: Buffer, reuse?: Harness): Promise<Harness> {
  const h = await makeHarness({}, { masterKey: key, dir: reuse?.dir });
  harnesses.push(h);
  return h;
}

/** Starts dist/main.js with extra argv and resolves once it listens. */
function startServer(env: Record<string, string>, args: string[] = []): Promise<Child> {
  const cwd = path.dirname(env.DATA_DIR!);
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [MAIN, ...args], { env, cwd });
    let stderr = '';
    let stdout = '';
    const t = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`server did not start: ${stderr}`));
    }, 20_000);
    proc.stdout.on('data', (c) => (stdout += c));
    proc.stderr.on('data', (c) => {
      stderr += c;
      const m = /listening on https?:\/\/[^:]+:(\d+)/.exec(stderr);
      if (!m) return;
      clearTimeout(t);
      const child: Child = {
        proc,
        port: Number(m[1]),
        dir: cwd,
        stderr: () => stderr,
        stdout: () => stdout,
        stop: (signal: NodeJS.Signals = 'SIGTERM') =>
          new Promise((res) => {
            if (proc.exitCode !== null || proc.signalCode !== null) return res(proc.exitCode);
            proc.once('exit', (code) => res(code));
            proc.kill(signal);
          }),
      };
      children.push(child);
      resolve(child);
    });
    proc.on('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`server exited with ${code}: ${stderr}`));
    });
  });
}

function request(port: number, method: string, p: string, token: string, body?: Buffer): Promise<{ status: number; body: Buffer; type: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers: { Authorization: `Bearer ${token}` } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(parts), type: String(res.headers['content-type'] ?? '') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function childUpload(c: Child, token: string, content: Buffer): Promise<string> {
  const r = await request(c.port, 'PUT', '/api/v1/uploads/f.bin', token, content);
  expect(r.status, r.body.toString()).toBe(201);
  return JSON.parse(r.body.toString()).file.id;
}

function sfs(env: Record<string, string>, args: string[], cwd: string) {
  const r = spawnSync(process.execPath, [SFS, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, cwd, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: () => JSON.parse(r.stdout) };
}

/** sfs against a harness's directories with the given keys in the environment (first = active). */
function sfsKeys(h: Harness, keys: Buffer[], args: string[], extra: Record<string, string> = {}) {
  return sfs(
    { DATA_DIR: h.config.dataDir, UPLOADS_DIR: h.config.uploadsDir, MASTER_KEY: b64(keys[0]!), MASTER_KEYS_PREVIOUS: keys.slice(1).map(b64).join(','), ...extra },
    args,
    h.dir,
  );
}

function writeKeyFile(file: string, keys: Buffer[], mode = 0o600): void {
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, keys.map(b64).join('\n') + '\n', { mode });
  fs.chmodSync(file, mode);
}

/** A child-server directory whose database knows `key` (setup done, one file stored). */
async function serverWithFile(key: Buffer): Promise<{ d: string; content: Buffer; id: string; token: string }> {
  const d = dir();
  const c = await startServer(childEnv(d, { MASTER_KEY: b64(key) }));
  const token = await childAdminToken(c);
  const content = pattern(3 * C + 17, 5);
  const id = await childUpload(c, token, content);
  expect(await c.stop()).toBe(0);
  return { d, content, id, token };
}

describe.runIf(SINGLE_NODE)('item 11: a new active key is introduced explicitly', () => {
  it('a random MASTER_KEY beside the right key in MASTER_KEYS_PREVIOUS is refused with a one-line message saying how', async () => {
    const right = randomBytes(32);
    const { d } = await serverWithFile(right);
    const r = await runToExit(childEnv(d, { MASTER_KEY: b64(randomBytes(32)), MASTER_KEYS_PREVIOUS: b64(right) }));
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^sfs: cannot start: the active master key \([0-9a-f]{16}\) is new to this database/);
    expect(lines[0]).toContain('sfs key rotate');
    expect(lines[0]).toContain('--accept-new-key');
    expect(lines[0]).toContain('MASTER_KEY_NEW=1');
  });

  it.each([
    ['the --accept-new-key flag', ['--accept-new-key'], {}],
    ['MASTER_KEY_NEW=1', [], { MASTER_KEY_NEW: '1' }],
  ] as [string, string[], Record<string, string>][])('%s accepts the new key once; later starts need nothing; old files still open', async (_n, args, env) => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const { d, content, id, token } = await serverWithFile(oldKey);
    const keys = { MASTER_KEY: b64(newKey), MASTER_KEYS_PREVIOUS: b64(oldKey) };
    const c = await startServer(childEnv(d, { ...keys, ...env }), args);
    const got = await request(c.port, 'GET', `/api/v1/files/${id}/content`, token);
    expect(got.status).toBe(200);
    expect(got.body.equals(content)).toBe(true);
    expect(await c.stop()).toBe(0);
    // Registered: a plain restart with the same keys starts.
    const again = await startServer(childEnv(d, keys));
    expect(await again.stop()).toBe(0);
  });

  it('a brand-new empty database still accepts its first key (with previous keys listed too)', async () => {
    const d = dir();
    const c = await startServer(childEnv(d, { MASTER_KEY: b64(randomBytes(32)), MASTER_KEYS_PREVIOUS: b64(randomBytes(32)) }));
    expect(await c.stop()).toBe(0);
  });

  it('the CLI refuses the unregistered key too; MASTER_KEY_NEW=1 or "sfs key rotate" (which registers it) introduce it', async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const { d, content, id, token } = await serverWithFile(oldKey);
    const env = { DATA_DIR: path.join(d, 'data'), UPLOADS_DIR: path.join(d, 'uploads'), MASTER_KEY: b64(newKey), MASTER_KEYS_PREVIOUS: b64(oldKey) };
    for (const cmd of [['verify'], ['backup', path.join(d, 'bk')]]) {
      const refused = sfs(env, cmd, d);
      expect(refused.status, refused.stderr).toBe(1);
      expect(refused.stderr).toMatch(/new to this database.*sfs key rotate/);
    }
    expect(sfs({ ...env, MASTER_KEY_NEW: '1' }, ['verify'], d).status).toBe(0);
    const rot = sfs(env, ['key', 'rotate', '--json'], d);
    expect(rot.status, rot.stderr).toBe(0);
    expect(rot.json()).toMatchObject({ rewrapped: 1, failed: [] });
    expect(sfs(env, ['verify'], d).status).toBe(0);
    const c = await startServer(childEnv(d, { MASTER_KEY: b64(newKey) }));
    const got = await request(c.port, 'GET', `/api/v1/files/${id}/content`, token);
    expect(got.body.equals(content)).toBe(true);
    await c.stop();
  });
});

describe.runIf(SINGLE_NODE)('item 12a: key files readable by group or others are refused', () => {
  it.each([
    [0o644, false],
    [0o640, false],
    [0o604, false],
    [0o660, false],
    [0o600, true],
    [0o400, true],
  ])('server start with a key file of mode %o: accepted %s', async (mode, ok) => {
    const d = dir();
    const keyFile = path.join(d, 'master.key');
    writeKeyFile(keyFile, [randomBytes(32)], mode);
    if (ok) {
      const c = await startServer(childEnv(d));
      expect(await c.stop()).toBe(0);
    } else {
      const r = await runToExit(childEnv(d));
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`MASTER_KEY_FILE: ${keyFile} is accessible to group or others (mode 0${mode.toString(8)})`);
      expect(r.stderr).toContain(`chmod 600 ${keyFile}`);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it('the CLI refuses a 0644 key file too, and accepts it after chmod 600', async () => {
    const d = dir();
    const c = await startServer(childEnv(d));
    await c.stop();
    const keyFile = path.join(d, 'master.key');
    fs.chmodSync(keyFile, 0o644);
    const env = { DATA_DIR: path.join(d, 'data'), UPLOADS_DIR: path.join(d, 'uploads'), MASTER_KEY_FILE: keyFile };
    for (const cmd of [['key', 'status'], ['key', 'rotate'], ['verify']]) {
      const r = sfs(env, cmd, d);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`${keyFile} is accessible to group or others`);
      expect(r.stderr).toContain(`chmod 600 ${keyFile}`);
    }
    fs.chmodSync(keyFile, 0o600);
    expect(sfs(env, ['key', 'status'], d).status).toBe(0);
  });

  it('the README way of combining keys (umask 077) gives a 0600 file the server accepts', async () => {
    const d = dir();
    const c = await startServer(childEnv(d));
    await c.stop();
    const env = { PATH: process.env.PATH ?? '', DATA_DIR: path.join(d, 'data'), UPLOADS_DIR: path.join(d, 'uploads'), MASTER_KEY_FILE: path.join(d, 'master.key') };
    expect(spawnSync(process.execPath, [SFS, 'key', 'generate', '--out', 'master.key.new'], { cwd: d, env }).status).toBe(0);
    // The exact line from the README's rotation procedure.
    const readme = fs.readFileSync(path.resolve(import.meta.dirname, '..', 'README.md'), 'utf8');
    const line = /`(\(umask 077 && cat master\.key\.new master\.key > master\.key\.both\))`/.exec(readme)?.[1];
    expect(line).toBeDefined();
    expect(spawnSync('sh', ['-c', `umask 022; ${line}`], { cwd: d }).status).toBe(0);
    expect(fs.statSync(path.join(d, 'master.key.both')).mode & 0o777).toBe(0o600);
    const rot = sfs({ DATA_DIR: path.join(d, 'data'), UPLOADS_DIR: path.join(d, 'uploads'), MASTER_KEY_FILE: path.join(d, 'master.key.both') }, ['key', 'rotate'], d);
    expect(rot.status, rot.stderr).toBe(0);
    const again = await startServer(childEnv(d, { MASTER_KEY_FILE: path.join(d, 'master.key.both') }));
    expect(await again.stop()).toBe(0);
  });
});

describe('item 12b: files wrapped under a key the server does not hold are not "corrupt"', () => {
  it.runIf(SINGLE_NODE)('after "sfs key rotate" behind a live server: 503 key_unavailable, then 200 once its key file holds the key', async () => {
    const d = dir();
    const keyFile = path.join(d, 'master.key');
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    writeKeyFile(keyFile, [oldKey]);
    const c = await startServer(childEnv(d));
    const token = await childAdminToken(c);
    const content = pattern(2 * C + 3, 9);
    const id = await childUpload(c, token, content);
    // The operator rotates with a combined key file the server was not pointed at.
    const both = path.join(d, 'master.key.both');
    writeKeyFile(both, [newKey, oldKey]);
    const rot = sfs({ DATA_DIR: path.join(d, 'data'), UPLOADS_DIR: path.join(d, 'uploads'), MASTER_KEY_FILE: both }, ['key', 'rotate', '--json'], d);
    expect(rot.status, rot.stderr).toBe(0);
    expect(rot.json()).toMatchObject({ rewrapped: 1 });

    const unavailable = await request(c.port, 'GET', `/api/v1/files/${id}/content`, token);
    expect(unavailable.status).toBe(503);
    expect(unavailable.type).toContain('application/problem+json');
    expect(JSON.parse(unavailable.body.toString())).toMatchObject({ status: 503, code: 'key_unavailable' });
    expect(unavailable.body.toString()).not.toContain(b64(newKey));

    // A key file that is not private is not read, even now.
    writeKeyFile(keyFile, [newKey, oldKey], 0o644);
    expect(JSON.parse((await request(c.port, 'GET', `/api/v1/files/${id}/content`, token)).body.toString()).code).toBe('key_unavailable');

    // The server's own key file now holds the new key: it is loaded (checked against the database) and the file is served.
    writeKeyFile(keyFile, [newKey, oldKey]);
    const ok = await request(c.port, 'GET', `/api/v1/files/${id}/content`, token);
    expect(ok.status).toBe(200);
    expect(ok.body.equals(content)).toBe(true);
    // New uploads are still wrapped under the key the server started with; they open too.
    const id2 = await childUpload(c, token, Buffer.from('after'));
    expect((await request(c.port, 'GET', `/api/v1/files/${id2}/content`, token)).body.toString()).toBe('after');
    expect(await c.stop()).toBe(0);
  });

  it.runIf(SINGLE_NODE)('a key in the key file that does not match the database check value is not loaded', async () => {
    const d = dir();
    const keyFile = path.join(d, 'master.key');
    const oldKey = randomBytes(32);
    writeKeyFile(keyFile, [oldKey]);
    const c = await startServer(childEnv(d));
    const token = await childAdminToken(c);
    const id = await childUpload(c, token, Buffer.from('x'));
    // A row pointing at a key id the database has a check value for, but not the one of the key in the key file.
    const db = await openDatabase(path.join(d, 'data', 'sfs.db'));
    const otherKey = randomBytes(32);
    const other = new Keyring(otherKey).active;
    db.raw!.prepare('INSERT INTO master_keys (key_id, check_value, created_at) VALUES (?, ?, 0)').run(other.id, randomBytes(32));
    db.raw!.prepare('UPDATE files SET key_id = ? WHERE id = ?').run(other.id, id);
    await db.close();
    writeKeyFile(keyFile, [oldKey, otherKey]);
    const r = await request(c.port, 'GET', `/api/v1/files/${id}/content`, token);
    expect(r.status).toBe(503);
    expect(JSON.parse(r.body.toString()).code).toBe('key_unavailable');
    await c.stop();
  });

  it('through the app: the status is declared in the API table and the body is problem+json key_unavailable', async () => {
    const oldKey = randomBytes(32);
    const h = await harness(oldKey);
    const token = await setupAdmin(h);
    const up = await h.request.put('/api/v1/uploads/a.bin').set('Authorization', `Bearer ${token}`).send(pattern(100, 2));
    await rotate(h.database, new Keyring(randomBytes(32), [oldKey]));
    const r = await h.request.get(`/api/v1/files/${up.body.file.id}/content`).set('Authorization', `Bearer ${token}`);
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ code: 'key_unavailable', status: 503 });
    // cleanup() (afterEach) throws if 503 is not declared for this route.
  });
});

describe.runIf(SINGLE_NODE)('item 12c: rotation checkpoints the WAL', () => {
  it('after "sfs key rotate" the -wal file is empty and neither it nor the database holds an old wrapped DEK', async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const h = await harness(oldKey);
    const token = await setupAdmin(h);
    for (let i = 0; i < 5; i++) await h.request.put(`/api/v1/uploads/f${i}.bin`).set('Authorization', `Bearer ${token}`).send(pattern(100 + i, i));
    const old = (h.db.prepare('SELECT wrapped_dek FROM files').all() as { wrapped_dek: Buffer }[]).map((r) => r.wrapped_dek);
    const wal = h.config.dbFile + '-wal';
    expect(old.some((w) => fs.readFileSync(wal).includes(w))).toBe(true); // the test can see them
    // The harness keeps its connection open, as a running server does.
    const r = sfsKeys(h, [newKey, oldKey], ['key', 'rotate', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.json().rewrapped).toBe(5);
    const walBytes = fs.existsSync(wal) ? fs.readFileSync(wal) : Buffer.alloc(0);
    expect(walBytes.length).toBe(0);
    const dbBytes = fs.readFileSync(h.config.dbFile);
    for (const w of old) {
      expect(walBytes.includes(w)).toBe(false);
      expect(dbBytes.includes(w)).toBe(false);
    }
  });
});

/** Ciphertext chunks (header, then each chunk body + tag) of a blob. */
function chunks(blob: Buffer, size: number): Buffer[] {
  const out = [blob.subarray(0, HEADER_LENGTH)];
  for (let i = 0; i < chunkCount(size, C); i++) {
    const from = chunkOffset(i, C);
    out.push(blob.subarray(from, from + chunkPlainLength(i, size, C) + TAG_LENGTH));
  }
  return out;
}

async function drain(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of gen) parts.push(p);
  return Buffer.concat(parts);
}

describe.runIf(SINGLE_NODE)('item 12d: sfs key rotate --reencrypt', () => {
  async function filesIn(h: Harness, sizes: number[]) {
    const token = await setupAdmin(h);
    const files: { id: string; content: Buffer }[] = [];
    for (const [i, size] of sizes.entries()) {
      const content = pattern(size, i + 3);
      const r = await h.request.put(`/api/v1/uploads/f${i}.bin`).set('Authorization', `Bearer ${token}`).send(content);
      files.push({ id: r.body.file.id, content });
    }
    return { token, files };
  }
  type Row = { id: string; owner_id: string; wrap_version: 1 | 2; wrapped_dek: Buffer; size: number; sha256: Buffer; format_version: number; chunk_size: number; key_id: string };
  const rowOf = (h: Harness, id: string) => h.db.prepare('SELECT * FROM files WHERE id = ?').get(id) as Row;

  it('every file gets a fresh DEK and entirely new ciphertext; downloads byte-exact; the old wrapped DEK no longer opens it; verify passes', async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const h = await harness(oldKey);
    const { token, files } = await filesIn(h, [0, 10, C, C + 5, 3 * C + 1]);
    const before = files.map((f) => ({ blob: fs.readFileSync(h.store.pathOf(f.id)), row: rowOf(h, f.id) }));
    const r = sfsKeys(h, [newKey, oldKey], ['key', 'rotate', '--reencrypt', '--json']);
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.json().reencrypt).toEqual({ reencrypted: 5, skipped: 0, repaired: 0, failed: [], interrupted: false });
    const oldMaster = new Keyring(oldKey).active;
    for (const [i, f] of files.entries()) {
      const blob = fs.readFileSync(h.store.pathOf(f.id));
      const { row: oldRow } = before[i]!;
      expect(rowOf(h, f.id).wrapped_dek.equals(oldRow.wrapped_dek)).toBe(false);
      const oldChunks = new Set(chunks(before[i]!.blob, f.content.length).map((c) => c.toString('hex')));
      for (const c of chunks(blob, f.content.length)) expect(oldChunks.has(c.toString('hex'))).toBe(false);
      // The old wrapped DEK (with the old key, e.g. from an old backup) does not open the new blob.
      const oldDek = unwrapDek(oldMaster, oldRow.wrapped_dek, { wrapVersion: oldRow.wrap_version, fileId: f.id, ownerId: oldRow.owner_id, size: oldRow.size, sha256: oldRow.sha256, formatVersion: oldRow.format_version, chunkSize: oldRow.chunk_size });
      const params = { dek: oldDek, fileId: Buffer.from(f.id, 'hex'), chunkSize: C, size: f.content.length, start: 0, end: f.content.length - 1, expectedSha256: oldRow.sha256 };
      await expect(drain(decryptRange((async function* () { yield blob; })(), params))).rejects.toThrow(IntegrityError);
    }
    // Nothing but committed blobs is left in the store, and the progress record is gone.
    const leftovers = fs.readdirSync(h.config.uploadsDir, { recursive: true }).map(String).filter((n) => /\.(tmp|prev)$/.test(n));
    expect(leftovers).toEqual([]);
    expect(fs.existsSync(path.join(h.config.dataDir, 'reencrypt-progress'))).toBe(false);
    expect(sfsKeys(h, [newKey], ['verify']).status).toBe(0);
    h.db.close();
    const h2 = await harness(newKey, h);
    for (const f of files) {
      const got = await h2.request.get(`/api/v1/files/${f.id}/content`).set('Authorization', `Bearer ${token}`).buffer(true).parse(binaryParser);
      expect(got.status).toBe(200);
      expect((got.body as Buffer).equals(f.content)).toBe(true);
    }
    expect(h2.db.prepare("SELECT outcome FROM audit_events WHERE action = 'key.reencrypt'").all()).toEqual([{ outcome: 'success' }]);
  });

  it('an interrupted run leaves every file readable; a rerun skips what was done and completes', async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const h = await harness(oldKey);
    const { token, files } = await filesIn(h, [1, 2, C + 3, 4, 5]);
    const first = sfsKeys(h, [newKey, oldKey], ['key', 'rotate', '--reencrypt', '--max-files', '2', '--json']);
    expect(first.status).toBe(1);
    expect(first.json().reencrypt).toMatchObject({ reencrypted: 2, interrupted: true, failed: [] });
    expect(fs.existsSync(path.join(h.config.dataDir, 'reencrypt-progress'))).toBe(true);
    const mid = files.map((f) => fs.readFileSync(h.store.pathOf(f.id)));
    // Every file still opens (an app holding both keys, as a server would after the key file changed).
    h.db.close();
    const hb = await harness(newKey, h);
    hb.keyring.setLoader((id) => (id === new Keyring(oldKey).active.id ? Buffer.from(oldKey) : undefined));
    for (const f of files) {
      const got = await hb.request.get(`/api/v1/files/${f.id}/content`).set('Authorization', `Bearer ${token}`).buffer(true).parse(binaryParser);
      expect((got.body as Buffer).equals(f.content)).toBe(true);
    }
    const second = sfsKeys(hb, [newKey, oldKey], ['key', 'rotate', '--reencrypt', '--json']);
    expect(second.status, second.stderr).toBe(0);
    expect(second.json().reencrypt).toMatchObject({ reencrypted: 3, skipped: 2, interrupted: false, failed: [] });
    const after = files.map((f) => fs.readFileSync(hb.store.pathOf(f.id)));
    // Exactly the two files done by the first run were not re-encrypted again.
    expect(after.filter((b, i) => b.equals(mid[i]!))).toHaveLength(2);
    expect(fs.existsSync(path.join(hb.config.dataDir, 'reencrypt-progress'))).toBe(false);
    expect(sfsKeys(hb, [newKey], ['verify']).status).toBe(0);
  });

  it.each([
    ['killed after the commit (new blob in place)', 'committed'],
    ['killed between the rename and the commit (row still old)', 'uncommitted'],
  ])('a rerun repairs a file %s', async (_name, state) => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const h = await harness(oldKey);
    const { files } = await filesIn(h, [C + 9, 7]);
    const victim = files[0]!;
    const final = h.store.pathOf(victim.id);
    fs.linkSync(final, h.store.pathOf(victim.id, '.prev'));
    if (state === 'uncommitted') {
      // The blob under the final name no longer matches the row: as after a rename whose commit was lost.
      fs.rmSync(final);
      fs.writeFileSync(final, fs.readFileSync(h.store.pathOf(files[1]!.id)));
    }
    const r = sfsKeys(h, [newKey, oldKey], ['key', 'rotate', '--reencrypt', '--json']);
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.json().reencrypt).toMatchObject({ reencrypted: 2, repaired: 1, failed: [] });
    expect(fs.existsSync(h.store.pathOf(victim.id, '.prev'))).toBe(false);
    expect(sfsKeys(h, [newKey], ['verify']).status).toBe(0);
  });

  it('a download that read the row just before the swap still gets the file (not integrity_error)', async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const h = await harness(oldKey);
    const { files } = await filesIn(h, [2 * C + 1]);
    const vault = h.app.services.vault;
    const stale = (await vault.files.byId(files[0]!.id))!;
    h.keyring.setLoader((id) => (id === new Keyring(newKey).active.id ? Buffer.from(newKey) : undefined));
    const r = sfsKeys(h, [newKey, oldKey], ['key', 'rotate', '--reencrypt', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const plain = await drain(await vault.open(stale, { start: 0, end: stale.size - 1 }));
    expect(plain.equals(files[0]!.content)).toBe(true);
  });
});
