/**
 * `npm run bench [-- --quick] [--profile] [--no-build] [--only a,b] [--write-docs]`
 *
 * Builds the project, starts the real server (production mode, temp data, loopback) and
 * the plaintext baseline, runs every scenario from a separate client process, prints a
 * table and writes bench/results/latest.json and latest.svg. Servers, client and temp
 * directories are removed however the run ends (error, Ctrl-C, or the time limit).
 *
 *   --quick       a small version for CI smoke checks (under a minute)
 *   --profile     run the sfs server under `node --cpu-prof` (profiles in bench/results/profiles)
 *   --no-build    skip `npm run build` (dist/ must be current)
 *   --only LIST   run only some of: format,memory,big,range,small,s3 (big includes the curl table)
 *                 (s3: the same big transfers through an S3 bucket on a local OpenStack Swift,
 *                 against the disk backend in the same run; needs root and Debian's swift packages)
 *   --write-docs  also refresh the generated parts of docs/benchmarks.md and bench/benchmarks.svg
 */
import { execFileSync, fork, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createHash } from 'node:crypto';
import { CURL, curlDownload, curlUpload, haveCurl, writeAuthHeader } from './curl.mjs';
import { GiB, MiB, TestData, cpuOf, cpuOfAll, machineBusy, memoryOf, mibps, resetPeak } from './lib.mjs';
import { evaluate, otherLoadSummary, printTable, renderSvg, writeDocs } from './report.mjs';

const BENCH = import.meta.dirname;
const ROOT = path.resolve(BENCH, '..');
const RESULTS = path.join(BENCH, 'results');

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const quick = flag('--quick');
const onlyArg = argv[argv.indexOf('--only') + 1];
const only = flag('--only') && onlyArg ? new Set(onlyArg.split(',')) : null;
const wants = (group) => !only || only.has(group);
for (const a of argv) {
  if (a.startsWith('--') && !['--quick', '--profile', '--no-build', '--only', '--write-docs'].includes(a)) {
    console.error(`bench: unknown option ${a}`);
    process.exit(2);
  }
}

const CONFIG = quick
  ? {
      bigSize: 64 * MiB,
      memorySmall: 16 * MiB,
      uploadReps: 1,
      downloadReps: 1,
      curlReps: 3,
      rangeLength: 1 * MiB,
      rangeReps: 3,
      smallSize: 4096,
      smallConnections: 32,
      smallSeconds: 1,
      smallReps: 3,
      // Without a warm-up, 1 s runs measure the JIT more than the server (the bare baseline went 1163 -> 4048 req/s over three runs).
      smallWarmupSeconds: 1,
      smallFiles: 16,
      hardLimitSeconds: 100,
    }
  : {
      bigSize: 1 * GiB,
      memorySmall: 100 * MiB,
      uploadReps: 3,
      downloadReps: 3,
      curlReps: 3,
      rangeLength: 1 * MiB,
      rangeReps: 15,
      smallSize: 4096,
      smallConnections: 32,
      smallSeconds: 8,
      smallReps: 3,
      smallWarmupSeconds: 2,
      smallFiles: 64,
      hardLimitSeconds: 14 * 60,
    };

const t0 = performance.now();
const log = (msg) => process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}\n`);

// ---------------------------------------------------------------- cleanup machinery
const children = new Set();
let tempRoot;
let cleaningUp = false;
let cleanupDone;

/** Stops every child and removes the temp dir; every caller waits for the same single run. */
function cleanup() {
  cleanupDone ??= doCleanup();
  return cleanupDone;
}

async function doCleanup() {
  cleaningUp = true;
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  }
  // Give servers a moment to exit cleanly (a --cpu-prof profile is written on exit).
  const deadline = Date.now() + 8000;
  for (const c of children) {
    while (c.exitCode === null && c.signalCode === null && Date.now() < deadline) await sleep(50);
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  for (const s of servers) {
    if (s.pid && alive(s.pid)) {
      try {
        process.kill(s.pid, 'SIGKILL');
      } catch {}
    }
  }
  try {
    stopSwift();
  } catch {}
  if (tempRoot) fs.rmSync(tempRoot, { recursive: true, force: true, maxRetries: 3 });
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    log(`${sig}: stopping`);
    cleanup().finally(() => process.exit(130));
  });
}
const hardLimit = setTimeout(() => {
  log(`time limit of ${CONFIG.hardLimitSeconds}s reached: stopping`);
  cleanup().finally(() => process.exit(1));
}, CONFIG.hardLimitSeconds * 1000);
hardLimit.unref();

/** Removes temp dirs of earlier runs whose orchestrator died without cleaning up (SIGKILL). */
function sweepStaleTemp() {
  for (const name of fs.readdirSync(os.tmpdir())) {
    if (!name.startsWith('sfs-bench-')) continue;
    const dir = path.join(os.tmpdir(), name);
    try {
      const owner = Number(fs.readFileSync(path.join(dir, 'owner.pid'), 'utf8'));
      if (owner && alive(owner)) continue;
      fs.rmSync(dir, { recursive: true, force: true });
      log(`removed stale ${dir}`);
    } catch {
      /* not ours, or being created right now */
    }
  }
}

// ---------------------------------------------------------------- processes
const servers = [];

function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts });
    children.add(p);
    p.on('error', reject);
    p.on('exit', (code) => {
      children.delete(p);
      code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}`));
    });
  });
}

function runJson(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    children.add(p);
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('exit', (code) => {
      children.delete(p);
      if (code !== 0) return reject(new Error(`${args.join(' ')} exited with ${code}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').at(-1)));
      } catch (err) {
        reject(err);
      }
    });
  });
}

/**
 * Starts a server under bench/keeper.mjs and waits until `ready` matches its output.
 * Resolves with { name, pid (the server itself, for /proc), port, base }.
 */
function startServer(name, nodeArgs, env, ready) {
  return new Promise((resolve, reject) => {
    const keeper = spawn(process.execPath, [path.join(BENCH, 'keeper.mjs'), ...nodeArgs], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    children.add(keeper);
    const server = { name, keeper, pid: undefined, port: undefined, base: undefined, output: '' };
    servers.push(server);
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 30 s:\n${server.output.slice(-2000)}`)), 30_000);
    const onData = (d) => {
      server.output = (server.output + d).slice(-20_000);
      const m = ready.exec(server.output);
      if (m && !server.port && server.pid) {
        server.port = Number(m[1]);
        server.base = `http://127.0.0.1:${server.port}`;
        clearTimeout(timer);
        resolve(server);
      }
    };
    keeper.stdout.on('data', onData);
    keeper.stderr.on('data', onData);
    keeper.on('message', (m) => {
      if (m.pid) {
        server.pid = m.pid;
        onData('');
      }
    });
    keeper.on('exit', (code) => {
      children.delete(keeper);
      clearTimeout(timer);
      if (!server.port) reject(new Error(`${name} exited with ${code} before listening:\n${server.output.slice(-2000)}`));
      else if (!cleaningUp) log(`${name} exited unexpectedly (${code}):\n${server.output.slice(-2000)}`);
    });
  });
}

class Client {
  constructor() {
    this.proc = fork(path.join(BENCH, 'client.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.add(this.proc);
    this.pending = new Map();
    this.next = 1;
    this.proc.on('message', (m) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      m.ok ? p.resolve(m.result) : p.reject(new Error(`client: ${m.error}`));
    });
    this.proc.on('exit', (code) => {
      children.delete(this.proc);
      for (const p of this.pending.values()) p.reject(new Error(`client exited with ${code}`));
      this.pending.clear();
    });
  }

  call(cmd, args, timeoutSeconds = 300) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`client: ${cmd} took longer than ${timeoutSeconds} s`));
      }, timeoutSeconds * 1000);
      this.pending.set(id, { resolve, reject, timer });
      this.proc.send({ id, cmd, args });
    });
  }
}

/** Every process of this benchmark (to tell its CPU use from other load on the machine). */
function ourPids() {
  const pids = [process.pid];
  for (const c of children) if (c.pid) pids.push(c.pid);
  for (const s of servers) if (s.pid) pids.push(s.pid);
  return pids;
}

/** Cores' worth of CPU used by other programs on the machine since `mark`. */
function otherLoadSince(mark) {
  const seconds = (performance.now() - mark.t) / 1000;
  const other = (machineBusy() - mark.busy - (cpuOfAll(mark.pids) - mark.ours)) / seconds;
  return Math.max(0, Math.round(other * 100) / 100);
}
function loadMark() {
  const pids = ourPids();
  return { t: performance.now(), busy: machineBusy(), pids, ours: cpuOfAll(pids) };
}

/** Runs one client command against a server, measuring the server's peak RSS and CPU time during it. */
function measured(client, server, cmd, args) {
  return measuredOp(server, () => client.call(cmd, { base: server.base, token: server.token, ...args }));
}

/** Runs `op` (any client: ours or curl), measuring the server's peak RSS and CPU time during it. */
async function measuredOp(server, op) {
  const reset = resetPeak(server.pid);
  const cpu0 = cpuOf(server.pid);
  const mark = loadMark();
  const r = await op();
  r.otherLoad = otherLoadSince(mark);
  const cpu1 = cpuOf(server.pid);
  r.serverUser = cpu1.user - cpu0.user;
  r.serverSys = cpu1.sys - cpu0.sys;
  r.serverCpu = r.serverUser + r.serverSys;
  // Where the kernel refuses the reset, VmHWM is the peak since the server started.
  r.serverPeak = memoryOf(server.pid).hwm;
  r.peakSinceStart = !reset;
  return r;
}

async function json(url, body, headers = {}) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${url} answered ${res.status}: ${text}`);
  return JSON.parse(text);
}

function machine() {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  const flags = (/^flags\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? '').split(' ');
  const virt = /hypervisor/.test(flags.join(' ')) ? 'virtual machine' : 'bare metal';
  let commit = 'unknown';
  let dirty = false;
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
  } catch {}
  return {
    cpu: model,
    cores: os.availableParallelism(),
    cryptoFlags: ['aes', 'vaes', 'pclmulqdq', 'vpclmulqdq', 'sha_ni', 'avx2', 'avx512f'].filter((f) => flags.includes(f)),
    kind: virt,
    memory: os.totalmem(),
    kernel: os.release(),
    node: process.version,
    openssl: process.versions.openssl,
    commit,
    srcDirty: dirty,
  };
}

// ---------------------------------------------------------------- object-store backend
const SWIFT_START = path.join(ROOT, 'test', 'services', 'start-swift-s3.sh');
const SWIFT_STOP = path.join(ROOT, 'test', 'services', 'stop-swift-s3.sh');

/**
 * The big transfers once more through a server on STORAGE=s3 (a bucket on a local Swift),
 * alternating with the disk-backed server in the same run, with the peak RSS of each.
 */
async function objectStoreRun({ client, sfs, base, big, upload, download, remove }) {
  if (process.getuid?.() !== 0 || !fs.existsSync('/usr/bin/swift-proxy-server')) {
    log('s3: skipped (needs root and the swift packages: apt-get install swift swift-proxy swift-account swift-container swift-object memcached)');
    return { skipped: 'no local Swift' };
  }
  // Swift runs as users swift and memcache, who cannot enter the private temp root.
  const swiftDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-bench-swift-'));
  fs.chmodSync(swiftDir, 0o755);
  log('s3: starting OpenStack Swift (s3api) on loopback');
  stopSwift = () => execFileSync(SWIFT_STOP, [swiftDir, '--purge'], { stdio: 'ignore' });
  const out = execFileSync(SWIFT_START, [swiftDir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, SWIFT_S3_PORT: '18180', SWIFT_BACKEND_PORT_BASE: '16300', SWIFT_MEMCACHED_PORT: '11411' } });
  stopSwift = () => execFileSync(SWIFT_STOP, [swiftDir, '--purge'], { stdio: 'ignore' });
  const vars = Object.fromEntries(out.split('\n').map((l) => /^([A-Z0-9_]+)=(.*)$/.exec(l.trim())).filter(Boolean).map((m) => [m[1], m[2]]));
  const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
  const s3c = new S3Client({
    region: vars.S3_REGION,
    endpoint: vars.S3_ENDPOINT,
    forcePathStyle: true,
    credentials: { accessKeyId: vars.S3_ACCESS_KEY_ID, secretAccessKey: vars.S3_SECRET_ACCESS_KEY },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  await s3c.send(new CreateBucketCommand({ Bucket: 'sfs-bench' }));
  const dataDir = path.join(tempRoot, 'sfs-s3-data');
  const s3 = await startServer(
    'sfs-s3',
    [path.join(ROOT, 'dist', 'main.js')],
    {
      ...base,
      NODE_ENV: 'production',
      DATA_DIR: dataDir,
      UPLOADS_DIR: path.join(tempRoot, 'sfs-s3-uploads'),
      MASTER_KEY: randomBytes(32).toString('base64'),
      MASTER_KEY_FILE: path.join(tempRoot, 'no-such-master.key'),
      LOG_LEVEL: 'warn',
      MAX_FILE_SIZE: '4GiB',
      STORAGE: 's3',
      S3_BUCKET: 'sfs-bench',
      S3_ENDPOINT: vars.S3_ENDPOINT,
      S3_REGION: vars.S3_REGION,
      S3_FORCE_PATH_STYLE: 'true',
      AWS_ACCESS_KEY_ID: vars.S3_ACCESS_KEY_ID,
      AWS_SECRET_ACCESS_KEY: vars.S3_SECRET_ACCESS_KEY,
    },
    /listening on https?:\/\/[^:\s]+:(\d+)/,
  );
  const setupCode = fs.readFileSync(path.join(dataDir, 'setup-code'), 'utf8').trim();
  const password = randomBytes(18).toString('base64url');
  await json(`${s3.base}/api/v1/setup`, { setupCode, username: 'bench', password });
  s3.token = (await json(`${s3.base}/api/v1/auth/tokens`, { username: 'bench', password, name: 'bench' })).token;
  const idleRss = memoryOf(s3.pid).rss;
  const w = await upload(s3, 'put', 'warmup', 8 * MiB);
  await download(s3, w.id, 'warmup', 8 * MiB);
  await remove(s3, w.id);

  const pair = { disk: sfs, s3 };
  const r = { size: big, idleRss, upload: { disk: [], s3: [] }, download: { disk: [], s3: [] } };
  const kept = {};
  log(`s3: ${big / MiB} MiB PUT uploads and downloads, disk and S3 backends alternating`);
  for (let rep = 0; rep < CONFIG.uploadReps; rep++) {
    for (const name of rep % 2 ? ['s3', 'disk'] : ['disk', 's3']) {
      const srv = pair[name];
      if (kept[name]) await remove(srv, kept[name]);
      const u = await upload(srv, 'put', 'big', big);
      r.upload[name].push(u);
      kept[name] = u.id;
      log(`  ${name.padEnd(5)} upload    ${mibps(big, u.seconds).toFixed(0).padStart(5)} MiB/s, peak RSS ${(u.serverPeak / MiB).toFixed(0)} MiB`);
    }
  }
  for (let rep = 0; rep < CONFIG.downloadReps; rep++) {
    for (const name of rep % 2 ? ['s3', 'disk'] : ['disk', 's3']) {
      const d = await download(pair[name], kept[name], 'big', big);
      r.download[name].push(d);
      log(`  ${name.padEnd(5)} download  ${mibps(big, d.seconds).toFixed(0).padStart(5)} MiB/s, peak RSS ${(d.serverPeak / MiB).toFixed(0)} MiB`);
    }
  }
  for (const name of ['disk', 's3']) if (kept[name]) await remove(pair[name], kept[name]);
  const best = (xs) => Math.min(...xs.map((x) => x.seconds));
  const peak = (xs) => Math.max(...xs.map((x) => x.serverPeak));
  r.summary = {
    uploadMiBps: { disk: mibps(big, best(r.upload.disk)), s3: mibps(big, best(r.upload.s3)) },
    downloadMiBps: { disk: mibps(big, best(r.download.disk)), s3: mibps(big, best(r.download.s3)) },
    peakRssMiB: { disk: peak([...r.upload.disk, ...r.download.disk]) / MiB, s3: peak([...r.upload.s3, ...r.download.s3]) / MiB },
  };
  const f = (x) => x.toFixed(0).padStart(6);
  process.stderr.write(
    `\nObject store (${big / MiB} MiB, best of ${CONFIG.uploadReps}/${CONFIG.downloadReps}; S3 = local Swift on the same two cores)\n` +
      `              disk      s3   s3/disk\n` +
      `  upload   ${f(r.summary.uploadMiBps.disk)}  ${f(r.summary.uploadMiBps.s3)}   ${(r.summary.uploadMiBps.s3 / r.summary.uploadMiBps.disk).toFixed(2)}   MiB/s\n` +
      `  download ${f(r.summary.downloadMiBps.disk)}  ${f(r.summary.downloadMiBps.s3)}   ${(r.summary.downloadMiBps.s3 / r.summary.downloadMiBps.disk).toFixed(2)}   MiB/s\n` +
      `  peak RSS ${f(r.summary.peakRssMiB.disk)}  ${f(r.summary.peakRssMiB.s3)}          MiB (s3 idle ${(idleRss / MiB).toFixed(0)} MiB)\n\n`,
  );
  return r;
}
let stopSwift = () => {};

// ---------------------------------------------------------------- the curl client (headline)
/**
 * The large transfers with real curl as the client (bench/curl.mjs): the file is generated
 * on disk before timing, downloads go to /dev/null, nothing hashes on the client while the
 * clock runs. Servers alternate; every figure is a median of CONFIG.curlReps. Verification
 * is untimed and can fail the run: each upload's recorded size (and sfs's SHA-256 of it),
 * and afterwards one download per server through the hashing client, which compares every
 * byte's SHA-256 with the generator's.
 */
async function curlRun({ client, both, big, download, remove }) {
  const file = path.join(tempRoot, 'curl-upload.bin');
  log(`curl: writing the ${big / MiB} MiB upload file (untimed)`);
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'w');
  for (const piece of new TestData('big', big).pieces()) {
    h.update(piece);
    fs.writeSync(fd, piece);
  }
  fs.closeSync(fd);
  const sha = h.digest('hex');
  const responseFile = path.join(tempRoot, 'curl-response.json');
  const r = { size: big, reps: CONFIG.curlReps, upload: { multipart: {}, put: {} }, download: {} };
  for (const s of both) {
    r.upload.multipart[s.name] = [];
    r.upload.put[s.name] = [];
    r.download[s.name] = [];
  }
  const kept = {};
  log(`curl: ${big / MiB} MiB uploads, ${CONFIG.curlReps} x (multipart, PUT) per server, alternating`);
  for (let rep = 0; rep < CONFIG.curlReps; rep++) {
    for (const s of rep % 2 ? [...both].reverse() : both) {
      for (const mode of ['multipart', 'put']) {
        if (kept[s.name]) await remove(s, kept[s.name]);
        const u = await measuredOp(s, () => curlUpload({ base: s.base, headerFile: s.headerFile, mode, file, name: 'big.bin', responseFile }, children));
        // Untimed check of what the server says it stored.
        if (u.file?.size !== big) throw new Error(`curl ${mode} upload to ${s.name}: server recorded size ${u.file?.size}, sent ${big}`);
        if (s.name === 'sfs' && u.file.sha256 !== sha) throw new Error(`curl ${mode} upload to sfs: server SHA-256 ${u.file.sha256} != sent ${sha}`);
        kept[s.name] = u.file.id;
        delete u.file;
        r.upload[mode][s.name].push(u);
        log(`  ${s.name.padEnd(8)} ${mode.padEnd(9)} ${mibps(big, u.seconds).toFixed(0).padStart(5)} MiB/s, server ${(u.serverCpu / (big / GiB)).toFixed(2)} CPU s/GiB`);
      }
    }
  }
  log(`curl: ${big / MiB} MiB downloads to /dev/null, ${CONFIG.curlReps} per server, alternating`);
  for (let rep = 0; rep < CONFIG.curlReps; rep++) {
    for (const s of rep % 2 ? [...both].reverse() : both) {
      const d = await measuredOp(s, () => curlDownload({ base: s.base, headerFile: s.headerFile, id: kept[s.name], size: big }, children));
      r.download[s.name].push(d);
      log(`  ${s.name.padEnd(8)} download  ${mibps(big, d.seconds).toFixed(0).padStart(5)} MiB/s, server ${(d.serverCpu / (big / GiB)).toFixed(2)} CPU s/GiB`);
    }
  }
  log('curl: verifying (untimed): the last curl-uploaded file of each server, downloaded and hashed');
  for (const s of both) {
    await download(s, kept[s.name], 'big', big);
    await remove(s, kept[s.name]);
  }
  fs.rmSync(file, { force: true });
  return r;
}

// ---------------------------------------------------------------- the run
async function main() {
  log(`${quick ? 'quick' : 'full'} run${only ? ` (only ${[...only].join(',')})` : ''}`);
  fs.mkdirSync(RESULTS, { recursive: true });
  sweepStaleTemp();

  if (!flag('--no-build')) {
    log('building (npm run build)');
    await run('npm', ['run', '--silent', 'build'], { cwd: ROOT });
  }
  if (!fs.existsSync(path.join(ROOT, 'dist', 'main.js'))) throw new Error('dist/main.js is missing: run npm run build');

  const results = { meta: { date: new Date().toISOString(), quick, config: CONFIG, machine: machine() } };

  if (wants('format')) {
    log('format alone vs raw node:crypto ceiling');
    const t = performance.now();
    const busy = machineBusy();
    results.format = await runJson([path.join(BENCH, 'format.mjs'), ...(quick ? ['--quick'] : [])]);
    // The format benchmark keeps one core busy; anything above that is someone else.
    results.format.seconds = (performance.now() - t) / 1000;
    results.format.otherLoad = Math.max(0, Math.round(((machineBusy() - busy) / results.format.seconds - 1) * 100) / 100);
  }

  const needServers = ['memory', 'big', 'range', 'small', 's3'].some(wants);
  if (needServers) {
    tempRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-bench-'));
    fs.writeFileSync(path.join(tempRoot, 'owner.pid'), String(process.pid));
    const base = { PATH: process.env.PATH, HOME: process.env.HOME, HOST: '127.0.0.1', PORT: '0' };

    const profileDir = path.join(RESULTS, 'profiles');
    if (flag('--profile')) fs.mkdirSync(profileDir, { recursive: true });
    const sfsDataDir = path.join(tempRoot, 'sfs-data');
    const sfs = await startServer(
      'sfs',
      [...(flag('--profile') ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), path.join(ROOT, 'dist', 'main.js')],
      {
        ...base,
        NODE_ENV: 'production',
        DATA_DIR: sfsDataDir,
        UPLOADS_DIR: path.join(tempRoot, 'sfs-uploads'),
        MASTER_KEY: randomBytes(32).toString('base64'),
        MASTER_KEY_FILE: path.join(tempRoot, 'no-such-master.key'),
        LOG_LEVEL: 'warn',
        MAX_FILE_SIZE: '4GiB',
      },
      /listening on https?:\/\/[^:\s]+:(\d+)/,
    );
    const baseline = await startServer(
      'baseline',
      [path.join(BENCH, 'baseline-server.mjs')],
      { ...base, NODE_ENV: 'production', UPLOADS_DIR: path.join(tempRoot, 'baseline-uploads') },
      /baseline listening on (\d+)/,
    );
    const honestToken = randomBytes(24).toString('base64url');
    const honest = await startServer(
      'honest',
      [path.join(BENCH, 'honest-baseline-server.mjs')],
      { ...base, NODE_ENV: 'production', UPLOADS_DIR: path.join(tempRoot, 'honest-uploads'), BASELINE_TOKEN: honestToken },
      /honest baseline listening on (\d+)/,
    );
    honest.token = honestToken;
    log(`sfs pid ${sfs.pid} on ${sfs.port}, baseline pid ${baseline.pid} on ${baseline.port}, honest baseline pid ${honest.pid} on ${honest.port}`);

    // One account and one token, reused for the whole run (token creation is rate limited).
    const setupCode = fs.readFileSync(path.join(sfsDataDir, 'setup-code'), 'utf8').trim();
    const password = randomBytes(18).toString('base64url');
    await json(`${sfs.base}/api/v1/setup`, { setupCode, username: 'bench', password });
    sfs.token = (await json(`${sfs.base}/api/v1/auth/tokens`, { username: 'bench', password, name: 'bench' })).token;
    baseline.token = 'baseline-ignores-this';
    results.meta.idleRss = { sfs: memoryOf(sfs.pid).rss, baseline: memoryOf(baseline.pid).rss, honest: memoryOf(honest.pid).rss };
    for (const s of [sfs, baseline, honest]) s.headerFile = writeAuthHeader(path.join(tempRoot, `${s.name}.headers`), s.token);

    const client = new Client();
    const both = [baseline, sfs];
    const checkSha = (s) => s === sfs;
    const upload = (s, mode, seed, size) => measured(client, s, 'upload', { mode, seed, size, checkSha: checkSha(s) });
    const download = (s, id, seed, size) => measured(client, s, 'download', { id, seed, size });
    const remove = (s, id) => client.call('remove', { base: s.base, token: s.token, id });

    // Warm-up: JIT, first-use allocations, the first file and directory creations.
    for (const s of both) {
      const u = await upload(s, 'put', 'warmup', 8 * MiB);
      await download(s, u.id, 'warmup', 8 * MiB);
      await remove(s, u.id);
    }

    const big = CONFIG.bigSize;
    if (wants('big') || wants('range') || wants('memory')) {
      log(`generating the SHA-256 of the ${big / MiB} MiB test file in the client`);
      await client.call('prepare', { seed: 'big', size: big });
    }

    if (wants('memory')) {
      const size = CONFIG.memorySmall;
      log(`memory: ${size / MiB} MiB file up (multipart, PUT) and down, peak RSS per operation`);
      results.memorySmall = {};
      for (const s of both) {
        const mp = await upload(s, 'multipart', 'small-mem', size);
        await remove(s, mp.id);
        const put = await upload(s, 'put', 'small-mem', size);
        const dl = await download(s, put.id, 'small-mem', size);
        await remove(s, put.id);
        results.memorySmall[s.name] = { size, multipart: mp, put, download: dl };
      }
    }

    const kept = {};
    if (wants('big') && haveCurl()) results.curl = await curlRun({ client, both, big, download, remove });
    else if (wants('big')) log(`curl: skipped (no ${CURL}; apt-get install curl)`);

    if (wants('big') || wants('range') || wants('memory')) {
      log(`${big / MiB} MiB uploads: ${CONFIG.uploadReps} x (multipart, PUT) per server, alternating`);
      results.upload = { size: big, multipart: { sfs: [], baseline: [] }, put: { sfs: [], baseline: [] } };
      for (let rep = 0; rep < CONFIG.uploadReps; rep++) {
        for (const s of rep % 2 ? [sfs, baseline] : [baseline, sfs]) {
          for (const mode of ['multipart', 'put']) {
            // Only one big file per server at a time: the page cache it frees is what the next upload reuses.
            if (kept[s.name]) await remove(s, kept[s.name]);
            const r = await upload(s, mode, 'big', big);
            results.upload[mode][s.name].push(r);
            log(`  ${s.name.padEnd(8)} ${mode.padEnd(9)} ${mibps(big, r.seconds).toFixed(0).padStart(5)} MiB/s, peak RSS ${(r.serverPeak / MiB).toFixed(0)} MiB`);
            kept[s.name] = r.id;
          }
        }
      }
      log(`${big / MiB} MiB downloads: ${CONFIG.downloadReps} per server, alternating`);
      results.download = { size: big, sfs: [], baseline: [] };
      for (let rep = 0; rep < CONFIG.downloadReps; rep++) {
        for (const s of rep % 2 ? [sfs, baseline] : [baseline, sfs]) {
          const r = await download(s, kept[s.name], 'big', big);
          results.download[s.name].push(r);
          log(`  ${s.name.padEnd(8)} download  ${mibps(big, r.seconds).toFixed(0).padStart(5)} MiB/s, peak RSS ${(r.serverPeak / MiB).toFixed(0)} MiB`);
        }
      }
    }

    if (wants('range')) {
      const len = CONFIG.rangeLength;
      const offsets = { start: 0, middle: Math.floor(big / 2), end: big - len };
      log(`range reads of ${len / MiB} MiB at start, middle, end: ${CONFIG.rangeReps} each per server`);
      results.range = { size: big, length: len, offsets, sfs: {}, baseline: {} };
      for (const s of both) for (const k of Object.keys(offsets)) results.range[s.name][k] = [];
      for (let rep = 0; rep < CONFIG.rangeReps; rep++) {
        for (const [k, start] of Object.entries(offsets)) {
          for (const s of rep % 2 ? [sfs, baseline] : [baseline, sfs]) {
            const r = await measured(client, s, 'download', { id: kept[s.name], seed: 'big', size: big, start, end: start + len - 1 });
            results.range[s.name][k].push(r);
          }
        }
      }
    }
    for (const s of both) if (kept[s.name]) await remove(s, kept[s.name]);

    if (wants('s3')) results.s3 = await objectStoreRun({ client, sfs, base, big, upload, download, remove });

    if (wants('small')) {
      const c = CONFIG;
      const trio = [sfs, baseline, honest];
      results.small = { size: c.smallSize, connections: c.smallConnections, seconds: c.smallSeconds, reps: c.smallReps, upload: {}, download: {} };
      const ids = {};
      for (const s of trio) {
        results.small.upload[s.name] = [];
        results.small.download[s.name] = [];
        ids[s.name] = (await client.call('smallPrepare', { base: s.base, token: s.token, count: c.smallFiles, size: c.smallSize })).ids;
      }
      const common = (s) => ({ connections: c.smallConnections, size: c.smallSize, checkSha: checkSha(s) });
      for (const [dir, cmd] of [['upload', 'smallUpload'], ['download', 'smallDownload']]) {
        log(`small files: ${c.smallSize} B ${dir}s${dir === 'upload' ? ' (multipart)' : ` over ${c.smallFiles} files`}, ${c.smallConnections} connections, ${c.smallReps} x ${c.smallSeconds} s per server, rotating the order`);
        if (c.smallWarmupSeconds) for (const s of trio) await measured(client, s, cmd, { ...common(s), ids: ids[s.name], duration: c.smallWarmupSeconds });
        for (let rep = 0; rep < c.smallReps; rep++) {
          for (const s of [...trio.slice(rep % 3), ...trio.slice(0, rep % 3)]) {
            const r = await measured(client, s, cmd, { ...common(s), ids: ids[s.name], duration: c.smallSeconds });
            results.small[dir][s.name].push(r);
            log(`  ${s.name.padEnd(8)} ${dir.padEnd(8)} ${r.rps.toFixed(0).padStart(6)} req/s, server ${((r.serverCpu / r.requests) * 1000).toFixed(2)} ms CPU per request`);
          }
        }
      }
    }
  }

  results.meta.seconds = (performance.now() - t0) / 1000;
  results.meta.otherLoad = otherLoadSummary(results);
  results.summary = evaluate(results);
  const json_ = JSON.stringify(results, null, 2);
  fs.writeFileSync(path.join(RESULTS, 'latest.json'), json_ + '\n');
  const svg = renderSvg(results);
  fs.writeFileSync(path.join(RESULTS, 'latest.svg'), svg);
  process.stdout.write(printTable(results));
  const ol = results.meta.otherLoad;
  if (ol.mean > 0.25) {
    log(`WARNING: other programs used ${ol.mean} cores on average (${ol.worst} in the worst operation) while measuring; absolute figures are disturbed, compare ratios`);
  }
  if (flag('--write-docs')) {
    writeDocs(results, svg, { docs: path.join(ROOT, 'docs', 'benchmarks.md'), svg: path.join(BENCH, 'benchmarks.svg') });
    log('refreshed docs/benchmarks.md and bench/benchmarks.svg');
  }
  log(`done in ${results.meta.seconds.toFixed(0)} s; results in bench/results/latest.json and latest.svg`);
}

let code = 0;
try {
  await main();
} catch (err) {
  if (cleaningUp) {
    // Interrupted: the signal handler reports and exits once cleanup is complete.
    await cleanup();
    await new Promise(() => {});
  }
  log(`FAILED: ${err?.stack ?? err}`);
  for (const s of servers) if (s.output.trim()) log(`last output of ${s.name}:\n${s.output.slice(-3000)}`);
  code = 1;
} finally {
  await cleanup();
}
process.exit(code);
