/**
 * The Postman collection, run by newman (the npm package, as its CLI) against the built server
 * on a free port with a temp data dir. `npm run test:postman` runs just this file; `npm test`
 * runs it with the rest. Reports land in test-results/newman/.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childEnv, startChild, tempDir, type Child } from './child.js';
import { listFiles } from './helpers.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const POSTMAN = path.join(ROOT, 'postman');
const COLLECTION = path.join(POSTMAN, 'secure-file-sharing.postman_collection.json');
const ENVIRONMENT = path.join(POSTMAN, 'secure-file-sharing.postman_environment.json');
const NEWMAN = path.join(ROOT, 'node_modules', 'newman', 'bin', 'newman.js');
const REPORTS = path.join(ROOT, 'test-results', 'newman');
const MAX_FILE_SIZE = 64 * 1024;

interface Item {
  name: string;
  item?: Item[];
  request?: unknown;
  event?: { listen: string; script: { exec: string[] } }[];
}

/** Every request of the collection, with its folder. */
function requests(items: Item[], folder = ''): { name: string; item: Item }[] {
  return items.flatMap((i) => (i.item ? requests(i.item, i.name) : [{ name: `${folder} / ${i.name}`, item: i }]));
}

/** Runs newman's CLI; resolves with its exit code, output and JSON report. */
function newman(args: string[], report: string): Promise<{ code: number | null; output: string; run: any }> {
  fs.mkdirSync(REPORTS, { recursive: true });
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [NEWMAN, 'run', COLLECTION, '-e', ENVIRONMENT, '--working-dir', POSTMAN, '--color', 'off', '--disable-unicode', '--reporters', 'cli,json', '--reporter-json-export', report, ...args]);
    let output = '';
    p.stdout.on('data', (c) => (output += c));
    p.stderr.on('data', (c) => (output += c));
    p.on('error', reject);
    p.on('exit', (code) => {
      fs.writeFileSync(report.replace(/\.json$/, '.txt'), output);
      resolve({ code, output, run: fs.existsSync(report) ? JSON.parse(fs.readFileSync(report, 'utf8')).run : null });
    });
  });
}

const collection = JSON.parse(fs.readFileSync(COLLECTION, 'utf8')) as { item: Item[] };
const all = requests(collection.item);

describe('the collection files', () => {
  it('the committed collection is what postman/build-collection.mjs generates', () => {
    const r = spawnSync(process.execPath, [path.join(POSTMAN, 'build-collection.mjs'), '--check'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('every request asserts on status, headers and body in its own test script', () => {
    expect(all.length).toBeGreaterThanOrEqual(30);
    for (const { name, item } of all) {
      const test = (item.event ?? []).filter((e) => e.listen === 'test').flatMap((e) => e.script.exec).join('\n');
      // sfs.problem() (collection script) checks status, Content-Type and the problem body.
      const problem = /sfs\.problem\(/.test(test);
      expect(problem || /to\.have\.status\(/.test(test), `${name}: status`).toBe(true);
      expect(problem || /headers\.(get|has)\(/.test(test), `${name}: headers`).toBe(true);
      expect(problem || /response\.(json|text)\(\)|response\.stream/.test(test), `${name}: body`).toBe(true);
      const assertions = (test.match(/pm\.test\(/g) ?? []).length + 3 * (test.match(/sfs\.problem\(/g) ?? []).length;
      expect(assertions, `${name}: more than a status check`).toBeGreaterThanOrEqual(3);
    }
  });

  it('the environment holds the SHA-256 of the fixture files the collection uploads', () => {
    const env = JSON.parse(fs.readFileSync(ENVIRONMENT, 'utf8')) as { values: { key: string; value: string }[] };
    const value = (k: string) => env.values.find((v) => v.key === k)?.value;
    const sha = (f: string) => createHash('sha256').update(fs.readFileSync(path.join(POSTMAN, 'files', f))).digest('hex');
    expect(value('sampleSha256')).toBe(sha('sample.bin'));
    expect(value('notesSha256')).toBe(sha('notes.txt'));
    expect(value('baseUrl')).toBe('http://localhost:3000');
    expect(value('setupCode')).toBe('');
  });
});

describe('newman against a live server', () => {
  let child: Child;
  let dir: string;
  beforeAll(async () => {
    dir = tempDir();
    child = await startChild(childEnv(dir, { MAX_FILE_SIZE: String(MAX_FILE_SIZE) }));
  });
  afterAll(async () => {
    await child?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('runs every request of the collection with every assertion passing', async () => {
    const setupCode = fs.readFileSync(path.join(dir, 'data', 'setup-code'), 'utf8').trim();
    const r = await newman(
      ['--env-var', `baseUrl=http://127.0.0.1:${child.port}`, '--env-var', `setupCode=${setupCode}`, '--env-var', `maxFileSize=${MAX_FILE_SIZE}`],
      path.join(REPORTS, 'run.json'),
    );
    expect(r.code, r.output).toBe(0);
    expect(r.run.failures, r.output).toEqual([]);
    // Nothing was skipped: every request in the file was sent and answered.
    expect(r.run.executions.map((e: any) => e.item.name)).toEqual(all.map((a) => a.item.name));
    expect(r.run.executions.every((e: any) => typeof e.response?.code === 'number')).toBe(true);
    expect(r.run.stats.assertions.failed).toBe(0);
    expect(r.run.stats.assertions.total).toBeGreaterThanOrEqual(all.length * 5);
    // Every request had its own assertions run (not only the collection-wide ones).
    for (const e of r.run.executions) expect(e.assertions.length, e.item.name).toBeGreaterThan(3);
    // Every request carried the header that skips ngrok's browser warning (collection pre-request script).
    for (const e of r.run.executions) expect(e.request.header.some((h: any) => h.key === 'ngrok-skip-browser-warning'), e.item.name).toBe(true);
    // The run cleaned up: both uploads deleted, nothing left in the store.
    expect(listFiles(path.join(dir, 'uploads'))).toEqual([]);
  });

  it('fails, naming the request, when the server answers differently (setup is now closed)', async () => {
    const r = await newman(
      ['--folder', '1. Setup and token', '--env-var', `baseUrl=http://127.0.0.1:${child.port}`, '--env-var', 'setupCode=anything'],
      path.join(REPORTS, 'expected-failure.json'),
    );
    expect(r.code).toBe(1);
    const failed = r.run.failures.map((f: any) => `${f.source.name}: ${f.error.test}`);
    expect(failed).toContain('Setup: create the first admin: status is 201 Created');
  });
});
