/** The sfs command line (built), as an operator would run it. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/database.js';
import { tempDir } from './child.js';

const SFS = path.resolve(import.meta.dirname, '..', 'dist', 'cli', 'sfs.js');
const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function sfs(args: string[], input?: string) {
  const env = { PATH: process.env.PATH ?? '', DATA_DIR: path.join(dir, 'data'), UPLOADS_DIR: path.join(dir, 'uploads'), MASTER_KEY_FILE: path.join(dir, 'master.key') };
  return spawnSync(process.execPath, [SFS, ...args], { env, cwd: dir, input, encoding: 'utf8' });
}

describe('sfs key generate', () => {
  it('writes a 0600 key and refuses to overwrite it', () => {
    const r = sfs(['key', 'generate']);
    expect(r.status).toBe(0);
    const file = path.join(dir, 'master.key');
    const key = fs.readFileSync(file, 'utf8');
    expect(Buffer.from(key.trim(), 'base64').length).toBe(32);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(r.stdout).not.toContain(key.trim());
    const again = sfs(['key', 'generate']);
    expect(again.status).toBe(2);
    expect(again.stderr).toContain('refusing to overwrite');
    expect(fs.readFileSync(file, 'utf8')).toBe(key);
    const out = sfs(['key', 'generate', '--out', 'other.key']);
    expect(out.status).toBe(0);
    expect(fs.existsSync(path.join(dir, 'other.key'))).toBe(true);
  });

  it('has help and rejects unknown commands', () => {
    expect(sfs(['key', 'generate', '--help']).stdout).toContain('Usage: sfs key generate');
    const bad = sfs(['frobnicate', 'now']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('unknown command');
  });
});

describe('sfs user create', () => {
  it('creates an admin from stdin, closes setup, and refuses a short password', async () => {
    fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'data', 'setup-code'), 'abc');
    const r = sfs(['user', 'create', 'root', '--admin'], 'a long enough password\n');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Created admin "root"');
    expect(r.stdout + r.stderr).not.toContain('a long enough password');
    expect(fs.existsSync(path.join(dir, 'data', 'setup-code'))).toBe(false);
    const db = await openDatabase(path.join(dir, 'data', 'sfs.db'));
    const row = db.raw!.prepare('SELECT username, role, password_hash FROM users').get() as { username: string; role: string; password_hash: string };
    await db.close();
    expect(row).toMatchObject({ username: 'root', role: 'admin' });
    expect(row.password_hash).toMatch(/^\$argon2id\$/);
    const short = sfs(['user', 'create', 'bob'], 'short\n');
    // A short password is invalid input: a usage/validation error (2), as the help says.
    expect(short.status).toBe(2);
    expect(short.stderr).toContain('at least 10');
    const dup = sfs(['user', 'create', 'ROOT'], 'another long password\n');
    expect(dup.status).toBe(1);
    expect(dup.stderr).toContain('already exists');
  });
});
