/** Operations through the built `sfs` CLI: key rotation, scrub, gc, audit, backup and restore. */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_CHUNK_SIZE as C, chunkOffset } from '../src/crypto/format.js';
import { Keyring } from '../src/crypto/keyring.js';
import { openDatabase } from '../src/db/database.js';
import { acquireDataDirLock } from '../src/ops/dir-lock.js';
import { rotate } from '../src/ops/keys.js';
import { binaryParser, listFiles, makeHarness, pattern, setupAdmin, type Harness } from './helpers.js';

const SFS = path.resolve(import.meta.dirname, '..', 'dist', 'cli', 'sfs.js');
const harnesses: Harness[] = [];
afterEach(() => {
  for (const h of harnesses.splice(0)) h.cleanup();
});

async function harness(key: Buffer, dir?: Harness): Promise<Harness> {
  const h = await makeHarness({}, { masterKey: key, dir: dir?.dir });
  harnesses.push(h);
  return h;
}

/** Runs sfs against a harness's directories with the given keys (first = active). */
function sfs(h: Harness, keys: Buffer[], args: string[], input?: string) {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    DATA_DIR: h.config.dataDir,
    UPLOADS_DIR: h.config.uploadsDir,
    MASTER_KEY: keys[0]!.toString('base64'),
    MASTER_KEYS_PREVIOUS: keys
      .slice(1)
      .map((k) => k.toString('base64'))
      .join(','),
  };
  const r = spawnSync(process.execPath, [SFS, ...args], { env, cwd: h.dir, input, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: () => JSON.parse(r.stdout) };
}

async function uploads(h: Harness, token: string, sizes: number[]) {
  const out: { id: string; content: Buffer }[] = [];
  for (const [i, size] of sizes.entries()) {
    const content = pattern(size, i + 7);
    const r = await h.request.put(`/api/v1/uploads/f${i}.bin`).set('Authorization', `Bearer ${token}`).send(content);
    out.push({ id: r.body.file.id, content });
  }
  return out;
}

async function download(h: Harness, token: string, id: string): Promise<Buffer> {
  const r = await h.request.get(`/api/v1/files/${id}/content`).set('Authorization', `Bearer ${token}`).buffer(true).parse(binaryParser);
  expect(r.status).toBe(200);
  return r.body as Buffer;
}

describe('sfs key', () => {
  it('status, rotate (idempotent), retire; files and the audit chain survive removing the old key', async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const h = await harness(oldKey);
    const token = await setupAdmin(h);
    const files = await uploads(h, token, [0, 10, C + 5, 3 * C]);
    const oldId = new Keyring(oldKey).active.id;
    const newId = new Keyring(newKey).active.id;

    const st = sfs(h, [oldKey], ['key', 'status', '--json']);
    expect(st.status).toBe(0);
    expect(st.json().keys).toEqual([{ keyId: oldId, inKeyring: true, inDatabase: true, active: true, files: 4, checkValueMatches: true }]);

    // Retiring a key still in use is refused, with the count.
    const busy = sfs(h, [newKey, oldKey], ['key', 'retire', oldId]);
    expect(busy.status).toBe(1);
    expect(busy.stderr).toContain('4 file(s)');

    const ciphertextBefore = files.map((f) => fs.readFileSync(h.store.pathOf(f.id)));
    const rot = sfs(h, [newKey, oldKey], ['key', 'rotate', '--json', '--batch', '3']);
    expect(rot.status, rot.stderr).toBe(0);
    // Every wrapped service secret is carried: the audit MAC root, the integrity root (token, link
    // and session lookups, row MACs), the notification seal key; counted from the table.
    const secretNames = (h.db.prepare('SELECT name FROM secrets ORDER BY name').all() as { name: string }[]).map((r) => r.name);
    expect(secretNames).toEqual(expect.arrayContaining(['integrity-root', 'notify seal']));
    expect(rot.json()).toMatchObject({ activeKey: newId, rewrapped: 4, skipped: 0, failed: [], secrets: secretNames.length, interrupted: false });
    expect(h.db.prepare('SELECT DISTINCT key_id FROM secrets').all()).toEqual([{ key_id: newId }]);
    // Ciphertext is never touched.
    files.forEach((f, i) => expect(fs.readFileSync(h.store.pathOf(f.id)).equals(ciphertextBefore[i]!)).toBe(true));
    expect(sfs(h, [newKey, oldKey], ['key', 'rotate', '--json']).json()).toMatchObject({ rewrapped: 0, failed: [] });

    const retired = sfs(h, [newKey, oldKey], ['key', 'retire', oldId]);
    expect(retired.status, retired.stderr).toBe(0);
    const after = sfs(h, [newKey], ['key', 'status', '--json']).json().keys;
    expect(after).toEqual([{ keyId: newId, inKeyring: true, inDatabase: true, active: true, files: 4, checkValueMatches: true }]);

    // A server with only the new key serves every file and the audit chain still verifies.
    h.db.close();
    const h2 = await harness(newKey, h);
    for (const f of files) expect((await download(h2, token, f.id)).equals(f.content)).toBe(true);
    const audit = sfs(h2, [newKey], ['audit', 'verify', '--json']);
    expect(audit.status, audit.stdout).toBe(0);
    expect(h2.db.prepare("SELECT count(*) AS n FROM audit_events WHERE action IN ('key.rotate', 'key.retire')").get()).toEqual({ n: 3 });
    expect(sfs(h2, [newKey], ['verify']).status).toBe(0);
  });

  it('rotation is resumable after an interruption and refuses keys it does not have', async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const h = await harness(oldKey);
    const token = await setupAdmin(h);
    await uploads(h, token, [1, 2, 3, 4, 5]);
    const ring = new Keyring(newKey, [oldKey]);
    let batches = 0;
    const first = await rotate(h.database, ring, { batchSize: 2, onProgress: () => batches++, shouldStop: () => batches >= 1 });
    expect(first).toMatchObject({ rewrapped: 2, interrupted: true });
    const second = await rotate(h.database, ring, { batchSize: 2 });
    expect(second).toMatchObject({ rewrapped: 3, interrupted: false, failed: [] });
    // Without the old key loaded, nothing can be rewrapped and the CLI says so.
    const h2 = await harness(oldKey);
    const t2 = await setupAdmin(h2);
    await uploads(h2, t2, [1]);
    const r = sfs(h2, [newKey], ['key', 'rotate']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/not configured|not one this database/);
  });
});

describe('sfs verify and gc', () => {
  it('reports ok, corrupt (with the chunk), missing and orphan files, and exits 1', async () => {
    const key = randomBytes(32);
    const h = await harness(key);
    const token = await setupAdmin(h);
    const [good, bad, gone] = await uploads(h, token, [3 * C, 3 * C, 100]);
    const p = h.store.pathOf(bad!.id);
    const buf = fs.readFileSync(p);
    buf[chunkOffset(1, C) + 99]! ^= 4;
    fs.writeFileSync(p, buf);
    fs.rmSync(h.store.pathOf(gone!.id));
    const strayId = 'ee' + '0'.repeat(30);
    fs.mkdirSync(path.dirname(h.store.pathOf(strayId)), { recursive: true });
    fs.writeFileSync(h.store.pathOf(strayId), 'stray');
    const r = sfs(h, [key], ['verify', '--json']);
    expect(r.status).toBe(1);
    const report = r.json();
    const byId = Object.fromEntries(report.entries.map((e: { id: string }) => [e.id, e]));
    expect(byId[good!.id].status).toBe('ok');
    expect(byId[bad!.id]).toMatchObject({ status: 'corrupt', chunk: 1 });
    expect(byId[gone!.id].status).toBe('missing');
    expect(byId[strayId].status).toBe('orphan');
    expect(report.counts).toEqual({ ok: 1, corrupt: 1, missing: 1, orphan: 1 });
    const human = sfs(h, [key], ['verify']);
    expect(human.stdout).toMatch(new RegExp(`CORRUPT ${bad!.id}.*chunk 1`));
    const one = sfs(h, [key], ['verify', '--file', good!.id]);
    expect(one.status).toBe(0);
    expect(one.stdout).toContain('1 ok, 0 corrupt, 0 missing, 0 orphan');
  });

  it('gc deletes old temp files and orphans, keeps young ones, reports missing rows, and --dry-run deletes nothing', async () => {
    const key = randomBytes(32);
    const h = await harness(key);
    const token = await setupAdmin(h);
    const [kept, lost] = await uploads(h, token, [10, 10]);
    fs.rmSync(h.store.pathOf(lost!.id));
    const mk = (id: string, ext: string, ageS: number) => {
      const f = path.join(h.config.uploadsDir, id.slice(0, 2), id + ext);
      fs.mkdirSync(path.dirname(f), { recursive: true });
      fs.writeFileSync(f, 'x'.repeat(100));
      const t = (Date.now() - ageS * 1000) / 1000;
      fs.utimesSync(f, t, t);
      return f;
    };
    const oldTmp = mk('aa' + '1'.repeat(30), '.tmp', 7200);
    const oldOrphan = mk('bb' + '2'.repeat(30), '.enc', 7200);
    const youngTmp = mk('cc' + '3'.repeat(30), '.tmp', 10);
    const dry = sfs(h, [key], ['gc', '--dry-run', '--json']);
    expect(dry.json()).toMatchObject({ dryRun: true, keptYoung: 1, missingRows: [lost!.id] });
    expect(dry.json().removed.map((r: { path: string }) => r.path).sort()).toEqual([oldTmp, oldOrphan].sort());
    expect([oldTmp, oldOrphan, youngTmp].every((f) => fs.existsSync(f))).toBe(true);
    const real = sfs(h, [key], ['gc']);
    expect(real.status).toBe(1); // a row without ciphertext is a problem for a person to look at
    expect(real.stdout).toContain(`MISSING ciphertext for file ${lost!.id}`);
    expect(fs.existsSync(oldTmp)).toBe(false);
    expect(fs.existsSync(oldOrphan)).toBe(false);
    expect(fs.existsSync(youngTmp)).toBe(true);
    expect(fs.existsSync(h.store.pathOf(kept!.id))).toBe(true);
  });
});

describe('sfs audit', () => {
  it('verify passes on an intact chain and names the first broken row; export writes JSON lines', async () => {
    const key = randomBytes(32);
    const h = await harness(key);
    const token = await setupAdmin(h);
    await uploads(h, token, [1, 2]);
    const ok = sfs(h, [key], ['audit', 'verify']);
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/intact: \d+ event/);
    const lines = sfs(h, [key], ['audit', 'export']).stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.action)).toEqual(expect.arrayContaining(['setup', 'file.upload']));
    const future = sfs(h, [key], ['audit', 'export', '--since', '2999-01-01T00:00:00Z']);
    expect(future.stdout).toBe('');
    h.db.prepare("UPDATE audit_events SET outcome = 'failure' WHERE seq = 2").run();
    const broken = sfs(h, [key], ['audit', 'verify']);
    expect(broken.status).toBe(1);
    expect(broken.stdout).toContain('BROKEN at row 2');
  });
});

describe('sfs backup and restore', () => {
  it('backup while serving, more changes, restore: the restored state equals the backup and every file verifies', async () => {
    const key = randomBytes(32);
    const h = await harness(key);
    const token = await setupAdmin(h);
    const before = await uploads(h, token, [0, 1000, 2 * C + 3]);
    const dir = path.join(h.dir, 'backup-1');
    const b = sfs(h, [key], ['backup', dir, '--json']);
    expect(b.status, b.stderr).toBe(0);
    expect(b.json()).toMatchObject({ masterKeyIncluded: false, files: { count: 3 } });
    expect(b.stdout + b.stderr).not.toContain(key.toString('base64'));
    for (const f of listFiles(dir)) expect(fs.readFileSync(f).includes(key)).toBe(false);
    // After the backup: one more file, one deleted.
    const later = await uploads(h, token, [77]);
    await h.request.delete(`/api/v1/files/${before[0]!.id}`).set('Authorization', `Bearer ${token}`);
    const backedUpIds = before.map((f) => f.id).sort();

    // A stopped server has flushed its audit head (main.ts does on shutdown); do the same here.
    await h.app.services.audit.flush();
    // Restore refuses while the server runs, and with the wrong key, touching nothing.
    // (A running server holds the data directory's lock, as main.ts does.)
    const serverLock = acquireDataDirLock(h.config.dataDir, 'server');
    const live = sfs(h, [key], ['restore', dir]);
    expect(live.status).toBe(2);
    expect(live.stderr).toContain('server is running');
    serverLock.release();
    h.db.close();
    const dbBefore = fs.readFileSync(h.config.dbFile);
    const wrong = sfs(h, [randomBytes(32)], ['restore', dir]);
    expect(wrong.status).toBe(1);
    expect(wrong.stderr).toMatch(/needs master key .* not configured/);
    expect(fs.readFileSync(h.config.dbFile).equals(dbBefore)).toBe(true);

    const r = sfs(h, [key], ['restore', dir, '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.json().files).toBe(3);
    expect(fs.existsSync(r.json().previousDatabase)).toBe(true);

    const h2 = await harness(key, h);
    const ids = (h2.db.prepare('SELECT id FROM files ORDER BY id').all() as { id: string }[]).map((x) => x.id);
    expect(ids).toEqual(backedUpIds);
    expect(ids).not.toContain(later[0]!.id);
    for (const f of before) expect((await download(h2, token, f.id)).equals(f.content)).toBe(true);
    const verify = sfs(h2, [key], ['verify', '--json']);
    expect(verify.status, verify.stdout).toBe(0);
    expect(verify.json().counts).toEqual({ ok: 3, corrupt: 0, missing: 0, orphan: 0 });
    expect(sfs(h2, [key], ['audit', 'verify']).status).toBe(0);
  });

  it('a tampered backup is refused before anything is replaced', async () => {
    const key = randomBytes(32);
    const h = await harness(key);
    const token = await setupAdmin(h);
    const [f] = await uploads(h, token, [5000]);
    const dir = path.join(h.dir, 'backup-2');
    expect(sfs(h, [key], ['backup', dir]).status).toBe(0);
    const blob = path.join(dir, 'uploads', f!.id.slice(0, 2), `${f!.id}.enc`);
    const buf = fs.readFileSync(blob);
    buf[100]! ^= 1;
    fs.writeFileSync(blob, buf);
    h.db.close();
    const before = createHash('sha256').update(fs.readFileSync(h.config.dbFile)).digest('hex');
    const r = sfs(h, [key], ['restore', dir]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('does not match its checksum');
    expect(createHash('sha256').update(fs.readFileSync(h.config.dbFile)).digest('hex')).toBe(before);
    expect(fs.existsSync(h.store.pathOf(f!.id))).toBe(true);
  });
});

describe('sfs user', () => {
  it('list, disable and reset-password from the host', async () => {
    const key = randomBytes(32);
    const h = await harness(key);
    await setupAdmin(h);
    expect(sfs(h, [key], ['user', 'create', 'gina'], 'gina password 123\n').status).toBe(0);
    const list = sfs(h, [key], ['user', 'list', '--json']).json().users;
    expect(list.map((u: { username: string }) => u.username)).toEqual(['admin', 'gina']);
    const t = await h.request.post('/api/v1/auth/tokens').send({ username: 'gina', password: 'gina password 123' });
    const gina = list.find((u: { username: string }) => u.username === 'gina').id as string;
    const sessions = () => (h.db.prepare("SELECT count(*) AS n FROM sessions WHERE json_extract(sess, '$.uid') = ?").get(gina) as { n: number }).n;
    h.db.prepare('INSERT INTO sessions (sid, sess, expired) VALUES (?, ?, ?)').run('a'.repeat(64), JSON.stringify({ uid: gina, createdAt: Date.now() }), '2999-01-01T00:00:00.000Z');
    expect(sessions()).toBe(1);
    expect(sfs(h, [key], ['user', 'reset-password', 'gina'], 'a new password 456\n').status).toBe(0);
    // As from the API and the admin pages: a reset password ends the user's browser sessions too.
    expect(sessions()).toBe(0);
    expect((await h.request.get('/api/v1/me').set('Authorization', `Bearer ${t.body.token}`)).status).toBe(401);
    expect((await h.request.post('/api/v1/auth/tokens').send({ username: 'gina', password: 'a new password 456' })).status).toBe(201);
    expect(sfs(h, [key], ['user', 'disable', 'gina']).status).toBe(0);
    // Refused; with the right password the account is named as disabled (issue 11 item 18).
    expect((await h.request.post('/api/v1/auth/tokens').send({ username: 'gina', password: 'a new password 456' })).status).toBe(403);
    const missing = sfs(h, [key], ['user', 'disable', 'nobody']);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('no user named');
  });

  it('every command has --help, and a bad option is a usage error', async () => {
    const h = await harness(randomBytes(32));
    for (const cmd of [['key', 'status'], ['key', 'rotate'], ['verify'], ['gc'], ['audit', 'verify'], ['backup'], ['restore'], ['user', 'list']]) {
      const r = sfs(h, [randomBytes(32)], [...cmd, '--help']);
      expect(r.status, cmd.join(' ')).toBe(0);
      expect(r.stdout).toContain('Usage: sfs ' + cmd.join(' '));
    }
    const bad = sfs(h, [randomBytes(32)], ['gc', '--frobnicate']);
    expect(bad.status).toBe(2);
  });
});
