/**
 * The two file-system steps every disk writer of ciphertext shares (the blob store, incomplete
 * tus uploads, re-encryption): a gathered write that survives short writes, and the directory
 * fsync that makes a rename durable.
 */
import fsp from 'node:fs/promises';

/** Writes every byte of `buffers` at `position` (or the file's current position); returns the bytes written. */
export async function writeAll(fh: fsp.FileHandle, buffers: Buffer[], position?: number): Promise<number> {
  let written = 0;
  let pending = buffers.filter((b) => b.length > 0);
  while (pending.length) {
    const { bytesWritten } = await fh.writev(pending, position === undefined ? undefined : position + written);
    written += bytesWritten;
    // writev may write short; drop what was written and retry the rest.
    let left = bytesWritten;
    const rest: Buffer[] = [];
    for (const b of pending) {
      if (left >= b.length) left -= b.length;
      else {
        rest.push(left > 0 ? b.subarray(left) : b);
        left = 0;
      }
    }
    pending = rest;
  }
  return written;
}

/** Makes renames in `dir` durable (fsync of the directory; best effort where a platform cannot). */
export async function syncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch {
    /* best effort: not all platforms allow fsync on a directory */
  } finally {
    await fh?.close().catch(() => {});
  }
}
