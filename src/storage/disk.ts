/**
 * Local-disk blob store: uploads/<2-char prefix>/<id>.enc, written as <id>.tmp, fsynced,
 * then renamed, so a crash never leaves a partial blob under a final name.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { BLOB_ID_PATTERN, type BlobStat, type BlobStore, type StoreEntry } from './blob-store.js';
import { syncDir, writeAll } from './fs-io.js';
import { DiskPartials, PARTIAL_DIR, type PartialStore } from './partial.js';

const ID_PATTERN = BLOB_ID_PATTERN;

/** A file found in the store directory. */
export type DiskEntry = StoreEntry;
const FINAL_EXT = '.enc';
const TEMP_EXT = '.tmp';
/** Gather small pieces into writes of about this size to save system calls. */
const WRITE_BATCH_BYTES = 1024 * 1024;
const READ_BYTES = 256 * 1024;

export class DiskBlobStore implements BlobStore {
  /** Prefix directories known to exist, so most uploads skip a mkdir round trip. */
  private readonly dirs = new Set<string>();

  constructor(private readonly root: string) {
    fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  }

  /** Path of a blob; ids are validated so a path can never be steered outside the root. */
  pathOf(id: string, ext = FINAL_EXT): string {
    if (!ID_PATTERN.test(id)) throw new Error('invalid blob id');
    return path.join(this.root, id.slice(0, 2), id + ext);
  }

  async put(id: string, source: AsyncIterable<Buffer[]>): Promise<{ bytes: number }> {
    const finalPath = this.pathOf(id);
    const tempPath = this.pathOf(id, TEMP_EXT);
    const dir = path.dirname(finalPath);
    if (!this.dirs.has(dir)) {
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      this.dirs.add(dir);
    }
    const fh = await fsp.open(tempPath, 'wx', 0o600);
    let bytes = 0;
    let closed = false;
    try {
      let batch: Buffer[] = [];
      let batchBytes = 0;
      for await (const pieces of source) {
        for (const p of pieces) {
          if (p.length === 0) continue;
          batch.push(p);
          batchBytes += p.length;
        }
        if (batchBytes >= WRITE_BATCH_BYTES) {
          await writeAll(fh, batch);
          bytes += batchBytes;
          batch = [];
          batchBytes = 0;
        }
      }
      if (batch.length) {
        await writeAll(fh, batch);
        bytes += batchBytes;
      }
      await fh.sync();
      await fh.close();
      closed = true;
      await fsp.rename(tempPath, finalPath);
      await syncDir(dir);
      return { bytes };
    } catch (err) {
      if (!closed) await fh.close().catch(() => {});
      await fsp.rm(tempPath, { force: true }).catch(() => {});
      throw err;
    }
  }

  getRange(id: string, start: number, end: number): Readable {
    // 256 KiB reads: larger reads measured slower here (more page faults per buffer).
    return fs.createReadStream(this.pathOf(id), { start, end, highWaterMark: READ_BYTES });
  }

  async readSmall(id: string, expected: number): Promise<Buffer | null> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.pathOf(id), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      // One byte more than expected, so a longer (appended-to) blob shows.
      const buf = Buffer.allocUnsafe(expected + 1);
      let n = 0;
      while (n < buf.length) {
        const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
        if (bytesRead === 0) break;
        n += bytesRead;
      }
      return buf.subarray(0, n);
    } finally {
      await fh.close();
    }
  }

  async stat(id: string): Promise<BlobStat | null> {
    try {
      const st = await fsp.stat(this.pathOf(id));
      return { size: st.size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async delete(id: string): Promise<void> {
    await fsp.rm(this.pathOf(id), { force: true });
  }

  async checkWritable(): Promise<void> {
    const probe = path.join(this.root, `.probe-${process.pid}-${Date.now()}`);
    await fsp.writeFile(probe, '', { mode: 0o600 });
    await fsp.rm(probe, { force: true });
  }

  /** Incomplete resumable uploads, in `<root>/.tus/` (owned by the uploads table, not by gc). */
  partials(): PartialStore {
    return (this.partialStore ??= new DiskPartials(this.root, (id) => this.pathOf(id)));
  }

  private partialStore: PartialStore | undefined;

  /** Every file under the root: committed blobs, temp files and anything else (strays). */
  async *entries(): AsyncGenerator<DiskEntry> {
    for (const sub of await fsp.readdir(this.root, { withFileTypes: true })) {
      // Incomplete resumable uploads are the uploads table's, swept at their expiry.
      if (!sub.isDirectory() || sub.name === PARTIAL_DIR) continue;
      const dir = path.join(this.root, sub.name);
      for (const f of await fsp.readdir(dir, { withFileTypes: true })) {
        if (!f.isFile()) continue;
        const full = path.join(dir, f.name);
        const st = await fsp.stat(full).catch(() => null);
        if (!st) continue;
        const m = /^([0-9a-f]{32}(?:\.g[1-9][0-9]{0,8})?)(\.enc|\.tmp)$/.exec(f.name);
        const id = m && m[1]!.startsWith(sub.name) ? m[1]! : null;
        const kind = !id ? 'stray' : m![2] === FINAL_EXT ? 'blob' : 'temp';
        yield { id, kind, path: full, size: st.size, mtimeMs: st.mtimeMs };
      }
    }
  }

  /** Removes one entry found by entries() (gc). */
  async removeEntry(e: DiskEntry): Promise<void> {
    if (!e.path.startsWith(this.root + path.sep)) throw new Error('refusing to remove a path outside the store');
    await fsp.rm(e.path, { force: true });
  }

  /**
   * Removes temp files left by a crash (call at start-up, before serving). The data
   * directory lock means no other process writes here, so the age bound is optional.
   */
  async sweepTemp(olderThanMs = 0, now = Date.now(), _keep?: ReadonlySet<string>): Promise<number> {
    let removed = 0;
    for (const sub of await fsp.readdir(this.root, { withFileTypes: true })) {
      if (!sub.isDirectory()) continue;
      const dir = path.join(this.root, sub.name);
      for (const f of await fsp.readdir(dir)) {
        if (f.endsWith(TEMP_EXT)) {
          const full = path.join(dir, f);
          if (olderThanMs > 0) {
            const st = await fsp.stat(full).catch(() => null);
            if (!st || now - st.mtimeMs < olderThanMs) continue;
          }
          await fsp.rm(full, { force: true });
          removed++;
        }
      }
    }
    return removed;
  }
}
