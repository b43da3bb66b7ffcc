/**
 * The README's curl commands, run for real: test/cli/curl-walkthrough.sh drives the built
 * server with curl and fails on any unexpected status or checksum. This file keeps the README
 * and the script in step (every curl command in a README code block appears verbatim in the
 * script) and runs the script against a live server.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { API } from '../src/http/api-table.js';
import { childEnv, startChild, tempDir, type Child } from './child.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const SCRIPT = path.join(ROOT, 'test', 'cli', 'curl-walkthrough.sh');
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');

const dirs: string[] = [];
const children: Child[] = [];
afterAll(async () => {
  for (const c of children) await c.stop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** Shell text as one command per line: continuations joined, comments and blank lines dropped, spaces squeezed. */
function commands(text: string): string[] {
  return text
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .map((l) => l.replace(/\s+#\s.*$/, '').replace(/\s+/g, ' ').trim())
    .filter((l) => l && !l.startsWith('#'));
}

/** The README's shell code blocks, with the heading of the section each is in. */
function readmeBlocks(): { section: string; code: string }[] {
  const out: { section: string; code: string }[] = [];
  let section = '';
  const re = /^## (.+)$|^```(?:sh|bash|shell)\n([\s\S]*?)^```$/gm;
  for (const m of README.matchAll(re)) {
    if (m[1]) section = m[1];
    else out.push({ section, code: m[2]! });
  }
  return out;
}

/** Runs the walkthrough against a server; resolves with its exit code and output. */
function walkthrough(c: Child): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', [SCRIPT], { env: { PATH: process.env.PATH ?? '', BASE: `http://127.0.0.1:${c.port}`, SFS_DATA_DIR: path.join(c.dir, 'data') } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Starts the built server on a temp dir (stopped after the file's tests). */
async function server(extra: Record<string, string> = {}): Promise<Child> {
  const d = tempDir();
  dirs.push(d);
  const c = await startChild(childEnv(d, extra));
  children.push(c);
  return c;
}

describe('README and walkthrough script stay in step', () => {
  const script = commands(fs.readFileSync(SCRIPT, 'utf8')).map((l) => l.replace(/\bcheck \d{3} /g, '')).join('\n');

  it('the "Using curl" section covers every common task', () => {
    const using = readmeBlocks().filter((b) => b.section === 'Using curl').flatMap((b) => commands(b.code));
    const text = using.join('\n');
    for (const needle of [' -F file=@', ' -T ', '/api/v1/auth/tokens', '?limit=', '&cursor=', ' -OJ ', ' -C - ', '--range ', 'sha256sum -c', 'repr-digest', '/shares', "-u ':", '-X DELETE "$BASE/api/v1/shares/', '-X DELETE "$BASE/api/v1/files/']) {
      expect(text, needle).toContain(needle);
    }
    expect(using.length).toBeGreaterThanOrEqual(35);
  });

  it('"Using curl" has a command for every operation of the API', () => {
    const using = readmeBlocks().filter((b) => b.section === 'Using curl').flatMap((b) => commands(b.code));
    // How curl expresses each method in these commands.
    const method: Record<string, RegExp> = { get: /^(?!.* -X )(?!.* --json )(?!.* -[FTI] )/, head: / -I /, post: / --json | -F /, put: / -T | -X PUT /, patch: / -X PATCH /, delete: / -X DELETE / };
    for (const [id, op] of Object.entries(API)) {
      // The path with each :param written as a shell variable; PUT /uploads/:name as curl -T's trailing slash.
      const p = op.path.replace(/:name$/, '').replace(/:\w+/g, '\\$[A-Z_]+').replace(/\./g, '\\.');
      const url = new RegExp(`"\\$BASE/api/v1${p}(\\?[^"]*)?"`);
      expect(using.some((c) => /\bcurl\b/.test(c) && url.test(c) && method[op.method]!.test(` ${c.replace(/^.*?\bcurl\b/, 'curl')} `)), id).toBe(true);
    }
  });

  it('every curl command in a README code block appears verbatim in the script', () => {
    const blocks = readmeBlocks();
    const all = blocks.flatMap((b) => commands(b.code).map((c) => ({ section: b.section, c })));
    // curl commands anywhere, and the variable assignments of "Using curl" the later commands rely on.
    const checked = all
      .filter(({ section, c }) => /\bcurl\b/.test(c) || (section === 'Using curl' && /^[A-Z_]+=/.test(c)))
      .filter(({ c }) => !c.startsWith('BASE='));
    expect(checked.length).toBeGreaterThanOrEqual(40);
    for (const { section, c } of checked) expect(script.includes(c), `README "${section}": ${c}`).toBe(true);
  });
});

describe('the walkthrough against a live server', () => {
  it('runs every command with the expected statuses and checksums', async () => {
    // Loopback webhooks allowed: the walkthrough sets one to a local port.
    const c = await server({ WEBHOOK_ALLOW_PRIVATE: '1' });
    const r = await walkthrough(c);
    expect(r.stderr, r.stdout).toBe('');
    expect(r.code).toBe(0);
    const oks = r.stdout.split('\n').filter((l) => /^ok \d+ - /.test(l));
    expect(oks.length).toBeGreaterThanOrEqual(30);
    expect(r.stdout).toContain(`# ${oks.length} checks passed`);
  });

  it('fails, naming the step, when the server answers differently (a 100 KB upload limit)', async () => {
    const c = await server({ MAX_FILE_SIZE: '100KB' });
    const r = await walkthrough(c);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('ok 3 - the token works');
    expect(r.stdout).not.toContain('ok 4');
    expect(r.stderr).toMatch(/^not ok - expected HTTP 201, got 413: curl -sS -H Authorization: Bearer \$TOKEN -F file=@report.pdf -F file=@scan.png/m);
    expect(r.stderr).not.toMatch(/sfs_/);
  });
});
