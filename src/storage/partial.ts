/**
 * Where the ciphertext of an incomplete resumable (tus) upload lives until it is complete.
 * Only sealed chunks are ever handed to a partial writer, so, like a blob store, it only
 * ever sees ciphertext. What "durable" means per backend is in docs/format.md.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { BLOB_ID_PATTERN } from './blob-store.js';
import { syncDir, writeAll } from './fs-io.js';

/** A durable point of an incomplete upload: this many ciphertext bytes survive a crash. */
export interface Checkpoint {
  /** Ciphertext bytes (header included) that are durable now. */
  cipherBytes: number;
  /** Backend state to store in the uploads row with the offset (null on disk). */
  state: string | null;
}

/** One request's writer on an incomplete upload; only whole sealed chunks are appended. */
export interface PartialWriter {
  /** Appends ciphertext; may make some of it durable and say so (else null). */
  append(pieces: Buffer[]): Promise<Checkpoint | null>;
  /** Makes everything appended so far durable (disk: fsync; S3: a staging object). */
  flush(): Promise<Checkpoint>;
  /** Makes the whole ciphertext the committed blob `id` of the blob store. */
  finish(): Promise<void>;
  /** Lets go of files and buffers without making anything more durable. */
  close(): Promise<void>;
}

/** The incomplete uploads of a blob store. */
export interface PartialStore {
  /**
   * Opens upload `id` for appending after its first `cipherBytes` durable bytes (anything past
   * them, from a request that died before its checkpoint, is dropped); `header` starts a
   * fresh upload. Throws when fewer durable bytes exist than the row says.
   */
  open(id: string, state: string | null, cipherBytes: number, header: Buffer): Promise<PartialWriter>;
  /** Removes everything an upload left (never an error when there is nothing). */
  remove(id: string, state: string | null): Promise<void>;
  /** Where an upload's bytes are, for messages and tests. */
  describe(id: string): string;
  /** Whether anything of upload `id` is stored (checks that termination and the sweep left nothing). */
  has(id: string): Promise<boolean>;
}

/** Thrown when the stored incomplete ciphertext is shorter than its row says (lost or cut). */
export class PartialMissingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PartialMissingError';
  }
}

/** Directory (under the uploads root) of incomplete uploads; blob listings skip it. */
export const PARTIAL_DIR = '.tus';
/** Disk: fsync (and so checkpoint) after this many appended bytes. */
const DISK_CHECKPOINT_BYTES = 4 * 1024 * 1024;

/**
 * Disk: `uploads/.tus/<id>.part`, an append-only ciphertext file. A checkpoint is an fsync;
 * the uploads row then records the offset, so the file may be longer than the row says (a
 * crash between write and checkpoint) but never shorter; open() cuts it back to the row.
 */
export class DiskPartials implements PartialStore {
  private readonly dir: string;

  constructor(
    private readonly root: string,
    /** The final path of a blob (DiskBlobStore.pathOf). */
    private readonly finalPath: (id: string) => string,
  ) {
    this.dir = path.join(root, PARTIAL_DIR);
  }

  /** Path of an upload's part file; ids are validated so no path leaves the directory. */
  pathOf(id: string): string {
    if (!BLOB_ID_PATTERN.test(id) || id.includes('.')) throw new Error('invalid upload id');
    return path.join(this.dir, `${id}.part`);
  }

  describe(id: string): string {
    return this.pathOf(id);
  }

  async open(id: string, _state: string | null, cipherBytes: number, header: Buffer): Promise<PartialWriter> {
    const file = this.pathOf(id);
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const fh = await fsp.open(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    try {
      const size = (await fh.stat()).size;
      let pos = cipherBytes;
      if (cipherBytes <= header.length) {
        // Nothing durable yet past the header: start the file afresh.
        await fh.truncate(0);
        await writeAll(fh, [header], 0);
        pos = header.length;
      } else {
        if (size < cipherBytes) throw new PartialMissingError(`incomplete upload ${id} holds ${size} bytes, its row says ${cipherBytes}`);
        // Bytes past the last checkpoint belong to a request that died before committing them.
        if (size > cipherBytes) await fh.truncate(cipherBytes);
      }
      return new DiskPartialWriter(fh, pos, file, this.finalPath(id));
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
  }

  async remove(id: string): Promise<void> {
    await fsp.rm(this.pathOf(id), { force: true });
  }

  async has(id: string): Promise<boolean> {
    return fs.existsSync(this.pathOf(id));
  }
}

class DiskPartialWriter implements PartialWriter {
  private sinceSync = 0;
  private closed = false;

  constructor(
    private readonly fh: fsp.FileHandle,
    private pos: number,
    private readonly file: string,
    private readonly target: string,
  ) {}

  async append(pieces: Buffer[]): Promise<Checkpoint | null> {
    const n = await writeAll(this.fh, pieces, this.pos);
    this.pos += n;
    this.sinceSync += n;
    if (this.sinceSync < DISK_CHECKPOINT_BYTES) return null;
    return this.flush();
  }

  async flush(): Promise<Checkpoint> {
    await this.fh.sync();
    this.sinceSync = 0;
    return { cipherBytes: this.pos, state: null };
  }

  async finish(): Promise<void> {
    await this.fh.sync();
    await this.close();
    const dir = path.dirname(this.target);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    // The complete ciphertext becomes the blob in one rename, as DiskBlobStore.put does.
    await fsp.rename(this.file, this.target);
    await syncDir(dir);
    await syncDir(path.dirname(this.file));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close().catch(() => {});
  }
}
