#!/usr/bin/env node
/**
 * Compiles TypeScript only when dist/ is older than the sources, so `npm run -s sfs -- …`,
 * `npm start` and friends start in a fraction of a second when nothing changed.
 *
 *   node scripts/build-if-stale.mjs            build if stale
 *   node scripts/build-if-stale.mjs --force    always build (npm run build)
 *   node scripts/build-if-stale.mjs --check    exit 0 if fresh, 1 if stale; build nothing
 *   --root DIR                                 project root (default: the current directory)
 *
 * Stale means: a src/**\/*.ts has no dist/**\/*.js or is newer than it, tsconfig.json is
 * newer than the oldest output, or the last build through this script failed. Everything it
 * prints goes to stderr (tsc prints its errors to stdout), so a command's --json output on
 * stdout stays clean. After a build the package's bin files are made executable (tsc writes
 * new files 0644), so `npx sfs` runs.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const FAILED_MARK = '.build-failed';

function sources(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const mtime = (file) => {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return null;
  }
};

/** Why dist/ under `root` needs a build, or null when it is up to date. */
export function staleReason(root) {
  const src = path.join(root, 'src');
  const dist = path.join(root, 'dist');
  if (fs.existsSync(path.join(dist, FAILED_MARK))) return 'the last build failed';
  let oldestOutput = Infinity;
  for (const file of sources(src)) {
    const rel = path.relative(src, file).replace(/\.ts$/, '.js');
    const out = mtime(path.join(dist, rel));
    if (out === null) return `dist/${rel} is missing`;
    if (mtime(file) > out) return `${path.relative(root, file)} changed`;
    oldestOutput = Math.min(oldestOutput, out);
  }
  if (oldestOutput === Infinity) return 'no sources were built yet';
  if ((mtime(path.join(root, 'tsconfig.json')) ?? 0) > oldestOutput) return 'tsconfig.json changed';
  return null;
}

function makeBinsExecutable(root) {
  let bin;
  try {
    bin = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).bin;
  } catch {
    return;
  }
  const files = typeof bin === 'string' ? [bin] : Object.values(bin ?? {});
  for (const f of files) {
    const p = path.join(root, f);
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (st && (st.mode & 0o111) !== 0o111) fs.chmodSync(p, st.mode | 0o111);
  }
}

/** Runs tsc for `root`; true on success. A failure is remembered so the next run builds again. */
export function build(root) {
  // tsc from this repository's own dependencies, wherever `root` is.
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json')], { cwd: root, stdio: ['ignore', 2, 2] });
  const dist = path.join(root, 'dist');
  if (r.status !== 0) {
    // tsc emits even with type errors; without the mark the next run would call that fresh.
    fs.mkdirSync(dist, { recursive: true });
    fs.writeFileSync(path.join(dist, FAILED_MARK), '');
    return false;
  }
  fs.rmSync(path.join(dist, FAILED_MARK), { force: true });
  makeBinsExecutable(root);
  return true;
}

function main(argv) {
  const i = argv.indexOf('--root');
  const root = path.resolve(i >= 0 ? argv[i + 1] : process.cwd());
  const reason = argv.includes('--force') ? 'forced' : staleReason(root);
  if (argv.includes('--check')) {
    if (reason) process.stderr.write(`stale: ${reason}\n`);
    return reason ? 1 : 0;
  }
  if (!reason) {
    makeBinsExecutable(root);
    return 0;
  }
  if (reason !== 'forced') process.stderr.write(`building (${reason})…\n`);
  return build(root) ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) process.exitCode = main(process.argv.slice(2));
