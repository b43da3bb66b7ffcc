/**
 * Shared helpers for the benchmark: the deterministic test-data generator, process
 * accounting from /proc, and small formatting utilities. No dependencies beyond node:*.
 */
import { createCipheriv, createHash } from 'node:crypto';
import fs from 'node:fs';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** Size of the pieces the client writes and the generator produces. */
export const PIECE = 256 * KiB;
const ZEROS = Buffer.alloc(PIECE);

/**
 * Pseudo-random, seekable test data: the AES-128-CTR keystream of a seed. Any byte range
 * can be regenerated on its own (to check a range read) and nothing is ever held whole
 * in memory. With AES-NI it runs at several GB/s, far above what the server moves.
 */
export class TestData {
  constructor(seed, size) {
    this.key = createHash('sha256').update(`sfs-bench:${seed}`).digest().subarray(0, 16);
    this.size = size;
  }

  /** Yields the bytes [start, end) in pieces of at most PIECE bytes. */
  *pieces(start = 0, end = this.size) {
    const block = Math.floor(start / 16);
    const iv = Buffer.alloc(16);
    // 128-bit big-endian counter; files here stay far below 2^53 bytes.
    iv.writeUInt32BE(Math.floor(block / 2 ** 32), 8);
    iv.writeUInt32BE(block % 2 ** 32, 12);
    const cipher = createCipheriv('aes-128-ctr', this.key, iv);
    let skip = start - block * 16;
    let pos = start;
    while (pos < end) {
      const want = Math.min(PIECE, end - pos + skip);
      let out = cipher.update(want === PIECE ? ZEROS : ZEROS.subarray(0, want));
      if (skip) {
        out = out.subarray(skip);
        skip = 0;
      }
      pos += out.length;
      yield out;
    }
  }

  /** SHA-256 (hex) of bytes [start, end). */
  sha256(start = 0, end = this.size) {
    const h = createHash('sha256');
    for (const p of this.pieces(start, end)) h.update(p);
    return h.digest('hex');
  }
}

/** Peak and current resident set of a process, in bytes, from /proc/PID/status. */
export function memoryOf(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024;
    return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
  } catch {
    return { hwm: NaN, rss: NaN };
  }
}

/**
 * Resets the kernel's peak-RSS counter of a process (echo 5 > /proc/PID/clear_refs), so
 * VmHWM then measures one scenario. Returns false where the kernel refuses.
 */
export function resetPeak(pid) {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

const TICKS = 100; // USER_HZ on Linux
/** CPU seconds a process (all its threads) has used so far in user and kernel mode, from /proc/PID/stat. */
export function cpuOf(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { user: Number(f[11]) / TICKS, sys: Number(f[12]) / TICKS };
  } catch {
    return { user: NaN, sys: NaN };
  }
}

/** Busy CPU seconds of the whole machine so far (all cores, from /proc/stat; idle and iowait excluded). */
export function machineBusy() {
  try {
    const f = /^cpu\s+(.+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'))[1].split(/\s+/).map(Number);
    // user nice system idle iowait irq softirq steal
    return (f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] ?? 0)) / TICKS;
  } catch {
    return NaN;
  }
}

/** CPU seconds used so far by a set of processes (and their threads). */
export function cpuOfAll(pids) {
  let t = 0;
  for (const pid of pids) {
    const c = cpuOf(pid);
    t += c.user + c.sys;
  }
  return t;
}

export function median(xs) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function fmtBytes(n) {
  if (!Number.isFinite(n)) return 'n/a';
  if (n >= GiB) return `${+(n / GiB).toFixed(2)} GiB`;
  if (n >= MiB) return `${+(n / MiB).toFixed(1)} MiB`;
  if (n >= KiB) return `${+(n / KiB).toFixed(1)} KiB`;
  return `${n} B`;
}

export const mibps = (bytes, seconds) => bytes / MiB / seconds;

/**
 * Starts a baseline server on PORT (0: any) and prints "<label> listening on <port>"; the same
 * socket settings as the product's server, so neither side gets an edge from them. Stops on
 * SIGTERM, SIGINT or when the parent goes away.
 */
export function serveBaseline(app, host, label) {
  const server = app.listen(Number(process.env.PORT ?? 0), host, () => {
    process.stdout.write(`${label} listening on ${server.address().port}\n`);
  });
  server.requestTimeout = 0;
  server.keepAliveTimeout = 5_000;
  const stop = () => server.close(() => process.exit(0)).closeAllConnections();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('disconnect', () => process.exit(0));
  return server;
}
