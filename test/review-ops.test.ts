/**
 * Issue 11, operations items: quota usage after a restart (13), `sfs --json` output and
 * rebuild-only-when-stale (16), one server per data directory (17), and where `sfs restore`
 * leaves the previous state (18, part).
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { childAdminToken, childEnv, runToExit, startChild, tempDir, type Child } from './child.js';
import { binaryParser, makeHarness, makeUser, pattern, setupAdmin, type Harness } from './helpers.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const SFS = path.join(ROOT, 'dist', 'cli', 'sfs.js');
const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });

const harnesses: Harness[] = [];
const temps: string[] = [];
const children: Child[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) await c.stop('SIGKILL');
  for (const h of harnesses.splice(0)) h.cleanup();
  for (const d of temps.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tmp(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  temps.push(d);
  return d;
}

function dbSum(h: Harness, userId: string): number {
  return (h.db.prepare('SELECT coalesce(sum(size), 0) AS n FROM files WHERE owner_id = ?').get(userId) as { n: number }).n;
}

describe('13: quota usage is the database sum plus bytes in flight, also after a restart', () => {
  it('the first upload after a restart counts once; a quota set afterwards lets the user upload up to it; parallel uploads do not overshoot', async () => {
    const key = randomBytes(32);
    const first = await makeHarness({}, { masterKey: key });
    const admin = await setupAdmin(first);
    const user = await makeUser(first, admin, 'gus');
    expect((await first.request.put('/api/v1/uploads/a.bin').set(bearer(user)).send(pattern(300_000, 1))).status).toBe(201);
    await first.app.services.audit.flush();
    first.db.close();
    expect(first.contractViolations).toEqual([]);

    // A restart: a new app on the same data directory, nothing cached.
    const h = await makeHarness({}, { masterKey: key, dir: first.dir });
    harnesses.push(h);
    // The upload comes first: nothing has asked for this user's usage since the restart.
    const up = await h.request.put('/api/v1/uploads/b.bin').set(bearer(user)).send(pattern(100_000, 2));
    expect(up.status).toBe(201);
    const me = (await h.request.get('/api/v1/me').set(bearer(user))).body;
    expect(me.quotaBytes).toBeNull();
    expect(dbSum(h, me.id)).toBe(400_000);
    expect(me.usageBytes).toBe(400_000);

    // The admin sets a quota the user is under: an upload that fits is accepted (it was
    // refused when the restart's first upload had been counted twice).
    const quota = 550_000;
    expect((await h.request.patch(`/api/v1/users/${me.id}`).set(bearer(admin)).send({ quotaBytes: quota })).status).toBe(200);
    expect((await h.request.put('/api/v1/uploads/c.bin').set(bearer(user)).send(pattern(100_000, 3))).status).toBe(201);
    expect((await h.request.get('/api/v1/me').set(bearer(user))).body).toMatchObject({ usageBytes: 500_000, quotaBytes: quota });

    // 50 000 bytes left: of five parallel 40 000-byte uploads at most one fits.
    const results = await Promise.all(
      [0, 1, 2, 3, 4].map((i) =>
        i % 2
          ? h.request.put(`/api/v1/uploads/p${i}.bin`).set(bearer(user)).send(pattern(40_000, 10 + i))
          : h.request.post('/api/v1/files').set(bearer(user)).attach('file', pattern(40_000, 10 + i), `p${i}.bin`),
      ),
    );
    const ok = results.filter((r) => r.status === 201).length;
    for (const r of results) if (r.status !== 201) expect(r.body.code).toBe('quota_exceeded');
    expect(ok).toBeLessThanOrEqual(1);
    expect(dbSum(h, me.id)).toBe(500_000 + ok * 40_000);
    expect(dbSum(h, me.id)).toBeLessThanOrEqual(quota);
    expect((await h.request.get('/api/v1/me').set(bearer(user))).body.usageBytes).toBe(dbSum(h, me.id));
    expect(await h.app.services.vault.quota.inFlightOf(me.id)).toBe(0);
    // Nothing stays held by the refused ones: exactly the room left fits, one byte more does not.
    const room = quota - dbSum(h, me.id);
    expect((await h.request.put('/api/v1/uploads/over.bin').set(bearer(user)).send(pattern(room + 1, 20))).status).toBe(413);
    expect((await h.request.put('/api/v1/uploads/fit.bin').set(bearer(user)).send(pattern(room, 21))).status).toBe(201);
    expect(dbSum(h, me.id)).toBe(quota);

    // A delete frees exactly its bytes.
    const list = (await h.request.get('/api/v1/files').set(bearer(user))).body.files as { id: string; size: number }[];
    const a = list.find((f) => f.size === 300_000)!;
    expect((await h.request.delete(`/api/v1/files/${a.id}`).set(bearer(user))).status).toBe(204);
    expect((await h.request.get('/api/v1/me').set(bearer(user))).body.usageBytes).toBe(dbSum(h, me.id));
  });

  it('rows written by another connection (e.g. the CLI) are counted at once', async () => {
    const h = await makeHarness({ USER_QUOTA_BYTES: '500000' });
    harnesses.push(h);
    const t = await setupAdmin(h);
    const me = (await h.request.get('/api/v1/me').set(bearer(t))).body;
    expect((await h.request.put('/api/v1/uploads/a.bin').set(bearer(t)).send(pattern(100_000, 1))).status).toBe(201);
    expect((await h.request.get('/api/v1/me').set(bearer(t))).body.usageBytes).toBe(100_000);
    // Another process deletes the row (as a restore or an admin tool might): usage follows.
    const other = new (await import('better-sqlite3')).default(h.config.dbFile);
    other.prepare('DELETE FROM files WHERE owner_id = ?').run(me.id);
    other.close();
    expect((await h.request.get('/api/v1/me').set(bearer(t))).body.usageBytes).toBe(0);
    expect((await h.request.put('/api/v1/uploads/b.bin').set(bearer(t)).send(pattern(450_000, 2))).status).toBe(201);
  });
});

/** Runs the built CLI with a child server's environment. */
function sfsIn(env: Record<string, string>, args: string[]) {
  const r = spawnSync(process.execPath, [SFS, ...args], { env, cwd: path.dirname(env.DATA_DIR!), encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('17: one process owns a data directory, by an OS lock', () => {
  it('a second server is refused and leaves the first one alone; restore is refused while it runs; after SIGKILL the lock is free', async () => {
    const dir = tempDir();
    temps.push(dir);
    const env = childEnv(dir);
    const first = await startChild(env);
    children.push(first);
    const token = await childAdminToken(first);
    const pidFile = path.join(env.DATA_DIR!, 'server.pid');
    expect(fs.readFileSync(pidFile, 'utf8')).toBe(String(first.proc.pid));

    // A second server on the same DATA_DIR (another port) refuses to start, naming the holder.
    const second = await runToExit(env);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(`sfs: cannot start: the data directory ${env.DATA_DIR} is in use: the server is running (pid ${first.proc.pid}`);
    expect(second.stderr).not.toContain('listening');
    // ... and on its way out it did not remove the first server's pid file.
    expect(fs.readFileSync(pidFile, 'utf8')).toBe(String(first.proc.pid));
    const health = await fetch(`http://127.0.0.1:${first.port}/api/v1/me`, { headers: bearer(token) });
    expect(health.status).toBe(200);

    // Backup is made while serving (as the README says); restore is refused, changing nothing.
    const backupDir = path.join(dir, 'backup');
    const b = sfsIn(env, ['backup', backupDir]);
    expect(b.status, b.stderr).toBe(0);
    const dbBefore = fs.readFileSync(path.join(env.DATA_DIR!, 'sfs.db'));
    const live = sfsIn(env, ['restore', backupDir]);
    expect(live.status).toBe(2);
    expect(live.stderr).toContain(`the server is running (pid ${first.proc.pid}`);
    expect(fs.readFileSync(path.join(env.DATA_DIR!, 'sfs.db')).equals(dbBefore)).toBe(true);
    expect(fs.readdirSync(dir).filter((n) => n.includes('before-restore'))).toEqual([]);

    // SIGKILL: no exit handler runs, the pid file stays behind, but the OS drops the lock.
    await first.stop('SIGKILL');
    expect(fs.existsSync(pidFile)).toBe(true);
    const restored = sfsIn(env, ['restore', backupDir]);
    expect(restored.status, restored.stderr).toBe(0);
    const again = await startChild(env);
    children.push(again);
    expect(fs.readFileSync(pidFile, 'utf8')).toBe(String(again.proc.pid));
    expect((await fetch(`http://127.0.0.1:${again.port}/api/v1/me`, { headers: bearer(token) })).status).toBe(200);
  });
});

describe('16: sfs output is safe to redirect, and dist/ is rebuilt only when stale', () => {
  const BUILD = path.join(ROOT, 'scripts', 'build-if-stale.mjs');
  /** The environment of a shell, without what an outer `npm test` put there. */
  function shellEnv(h: Harness, key: Buffer): NodeJS.ProcessEnv {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')));
    return { ...env, DATA_DIR: h.config.dataDir, UPLOADS_DIR: h.config.uploadsDir, MASTER_KEY: key.toString('base64'), NODE_ENV: 'development' };
  }

  it('`npm run -s sfs -- audit export` is JSON lines; `npx sfs … --json` runs the package bin and prints only JSON', async () => {
    const key = randomBytes(32);
    const h = await makeHarness({}, { masterKey: key });
    harnesses.push(h);
    const t = await setupAdmin(h);
    expect((await h.request.put('/api/v1/uploads/a.txt').set(bearer(t)).send('hello')).status).toBe(201);
    await h.app.services.audit.flush();

    const exp = spawnSync('npm', ['run', '-s', 'sfs', '--', 'audit', 'export'], { cwd: ROOT, env: shellEnv(h, key), encoding: 'utf8' });
    expect(exp.status, exp.stderr).toBe(0);
    const lines = exp.stdout.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(2);
    const events = lines.map((l) => JSON.parse(l) as { action: string });
    expect(events.map((e) => e.action)).toContain('file.upload');

    // The bin is an executable file with a node shebang, and npx finds it in this repository.
    const bin = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).bin.sfs as string;
    expect(fs.readFileSync(path.join(ROOT, bin), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    expect(spawnSync(process.execPath, [BUILD], { cwd: ROOT, encoding: 'utf8' }).status).toBe(0);
    expect(fs.statSync(path.join(ROOT, bin)).mode & 0o111).toBe(0o111);
    const npx = spawnSync('npx', ['--no-install', 'sfs', 'key', 'status', '--json'], { cwd: ROOT, env: shellEnv(h, key), encoding: 'utf8' });
    expect(npx.status, npx.stderr).toBe(0);
    expect(JSON.parse(npx.stdout).keys[0]).toMatchObject({ keyId: h.keyring.active.id, active: true });
  });

  it('the stale check builds once, then not again until a source or tsconfig.json changes; a failed build is retried', () => {
    const dir = tmp('sfs-build-');
    fs.mkdirSync(path.join(dir, 'src', 'sub'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'src', 'a.ts'), "#!/usr/bin/env node\nimport { b } from './sub/b.js';\nexport const a = b + 1;\n");
    fs.writeFileSync(path.join(dir, 'src', 'sub', 'b.ts'), 'export const b: number = 1;\n');
    fs.writeFileSync(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', outDir: 'dist', rootDir: 'src', strict: true, types: [], lib: ['es5'], skipLibCheck: true }, include: ['src'] }),
    );
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module', bin: { a: 'dist/a.js' } }));
    const run = (...args: string[]) => spawnSync(process.execPath, [BUILD, ...args], { cwd: dir, encoding: 'utf8' });
    const outB = path.join(dir, 'dist', 'sub', 'b.js');
    // Time passing, without waiting: after each build the sources are moved two minutes and
    // the outputs one minute into the past; an edit stamps a source with the present.
    const age = () => {
      const back = (sub: string, ms: number) => {
        const at = new Date(Date.now() - ms);
        for (const f of fs.readdirSync(path.join(dir, sub), { recursive: true, withFileTypes: true })) {
          if (f.isFile()) fs.utimesSync(path.join(f.parentPath, f.name), at, at);
        }
      };
      back('src', 120_000);
      fs.utimesSync(path.join(dir, 'tsconfig.json'), new Date(Date.now() - 120_000), new Date(Date.now() - 120_000));
      back('dist', 60_000);
    };
    const touch = (file: string) => fs.utimesSync(file, new Date(), new Date());

    expect(run('--check').status).toBe(1);
    const first = run();
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toBe('');
    expect(first.stderr).toContain('building');
    expect(fs.statSync(path.join(dir, 'dist', 'a.js')).mode & 0o111).toBe(0o111);
    age();
    const built = fs.statSync(outB).mtimeMs;

    const second = run();
    expect(second.status).toBe(0);
    expect(second.stderr).toBe('');
    expect(fs.statSync(outB).mtimeMs).toBe(built);
    expect(run('--check').status).toBe(0);

    touch(path.join(dir, 'src', 'sub', 'b.ts'));
    expect(run('--check').stderr).toContain('src/sub/b.ts changed');
    expect(run().status).toBe(0);
    expect(fs.statSync(outB).mtimeMs).not.toBe(built);
    expect(run('--check').status).toBe(0);
    age();

    touch(path.join(dir, 'tsconfig.json'));
    expect(run('--check').stderr).toContain('tsconfig.json changed');
    expect(run().status).toBe(0);
    age();

    // A type error: tsc still emits, but the next run must not call that fresh. Its errors go
    // to stderr, never stdout. (A small lib keeps each fixture build well under a second.)
    fs.writeFileSync(path.join(dir, 'src', 'sub', 'b.ts'), "export const b: number = 'one';\n");
    const failed = run();
    expect(failed.status).toBe(1);
    expect(failed.stdout).toBe('');
    expect(failed.stderr).toContain('TS2322');
    expect(run('--check').stderr).toContain('the last build failed');
    fs.writeFileSync(path.join(dir, 'src', 'sub', 'b.ts'), 'export const b: number = 2;\n');
    expect(run().status).toBe(0);
    expect(run('--check').status).toBe(0);
  });
});

describe('18: the README backup and restore procedure, as written, leaves nothing git would pick up', () => {
  it('npm run sfs -- backup while serving, restore stopped; the moved-aside state is ignored by .gitignore', async () => {
    const key = randomBytes(32);
    const h = await makeHarness({}, { masterKey: key });
    harnesses.push(h);
    // The harness directory stands for a clone: data/ and uploads/ in it, our .gitignore.
    fs.copyFileSync(path.join(ROOT, '.gitignore'), path.join(h.dir, '.gitignore'));
    const git = (...args: string[]) => spawnSync('git', ['-c', 'init.defaultBranch=main', ...args], { cwd: h.dir, encoding: 'utf8' });
    expect(git('init', '-q').status).toBe(0);
    const t = await setupAdmin(h);
    const kept = pattern(70_000, 3);
    const up = await h.request.put('/api/v1/uploads/kept.bin').set(bearer(t)).send(kept);
    expect(up.status).toBe(201);

    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')));
    const sfsEnv = { ...env, DATA_DIR: h.config.dataDir, UPLOADS_DIR: h.config.uploadsDir, MASTER_KEY: key.toString('base64') };
    const npmSfs = (...args: string[]) => spawnSync('npm', ['run', 'sfs', '--', ...args], { cwd: ROOT, env: sfsEnv, encoding: 'utf8' });
    const backupDir = path.join(tmp('sfs-backups-'), 'sfs-2026-11-26');
    const b = npmSfs('backup', backupDir);
    expect(b.status, b.stderr).toBe(0);
    expect(b.stdout).toContain('Backed up 1 file(s)');
    // A change after the backup, then the server stops.
    expect((await h.request.put('/api/v1/uploads/later.bin').set(bearer(t)).send('later')).status).toBe(201);
    await h.app.services.audit.flush();
    h.db.close();

    const r = spawnSync('npm', ['run', '-s', 'sfs', '--', 'restore', backupDir, '--json'], { cwd: ROOT, env: sfsEnv, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { files: number; previousDatabase: string; previousUploads: string };
    expect(result.files).toBe(1);
    expect(path.dirname(result.previousDatabase)).toBe(h.config.dataDir);
    expect(path.dirname(result.previousUploads)).toBe(path.dirname(h.config.uploadsDir));
    expect(fs.readdirSync(result.previousUploads).length).toBeGreaterThan(0);

    // Every path the server and the restore left is ignored; nothing is left for "git add".
    const leftovers = [result.previousDatabase, result.previousUploads, ...fs.readdirSync(result.previousUploads, { recursive: true }).map((f) => path.join(result.previousUploads, String(f)))];
    for (const p of leftovers) expect(git('check-ignore', '-q', path.relative(h.dir, p)).status, p).toBe(0);
    expect(git('status', '--porcelain', '--untracked-files=all').stdout.trim()).toBe('?? .gitignore');

    // The restored state is the backup's: the later file is gone, the kept one reads back.
    const h2 = await makeHarness({}, { masterKey: key, dir: h.dir });
    harnesses.push(h2);
    const files = (await h2.request.get('/api/v1/files').set(bearer(t))).body.files as { id: string; name: string }[];
    expect(files.map((f) => f.name)).toEqual(['kept.bin']);
    const got = await h2.request.get(`/api/v1/files/${files[0]!.id}/content`).set(bearer(t)).buffer(true).parse(binaryParser);
    expect((got.body as Buffer).equals(kept)).toBe(true);
  });
});
