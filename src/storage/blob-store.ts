/**
 * Where ciphertext lives. The interface is deliberately narrow (put a stream, read a
 * range, stat, delete) so an object-store backend can be added beside the disk one.
 * A blob store only ever sees ciphertext.
 */
import type { Readable } from 'node:stream';
import type { AuditHeadStore } from './audit-heads.js';
import type { PartialStore } from './partial.js';

/**
 * A blob id: the file id, then `.g<n>` for a later generation of its ciphertext (written by
 * re-encryption on a store without rename). Validated by every store before it names a path.
 */
export const BLOB_ID_PATTERN = /^[0-9a-f]{32}(?:\.g[1-9][0-9]{0,8})?$/;

/** The store id of a file row's current ciphertext. */
export function blobIdOf(row: { id: string; blobGen?: number }): string {
  return row.blobGen ? `${row.id}.g${row.blobGen}` : row.id;
}

export interface BlobStat {
  size: number;
}

/** Something found in a store: a committed blob, an unfinished write, or a stranger. */
export interface StoreEntry {
  /** The blob id, or null for an entry that is not named like one of ours. */
  id: string | null;
  /** 'temp' is an unfinished write: a disk temp file or an incomplete multipart upload. */
  kind: 'blob' | 'temp' | 'stray';
  /** Where it is: a file path (disk) or an object key (S3). */
  path: string;
  size: number;
  mtimeMs: number;
  /** S3 only: the multipart upload an unfinished write belongs to. */
  uploadId?: string;
}

export interface BlobStore {
  /**
   * Streams batches of buffers into a new blob. Only a complete, flushed blob becomes
   * visible under `id`; on any error nothing is left behind and the error is rethrown.
   */
  put(id: string, source: AsyncIterable<Buffer[]>): Promise<{ bytes: number }>;
  /** Streams bytes [start, end] (inclusive) of a blob. */
  getRange(id: string, start: number, end: number): Readable;
  /**
   * Reads a whole small blob in one go (for blobs up to a few hundred KiB: no stat, no
   * stream); returns up to `expected + 1` bytes so a longer blob shows, or null if missing.
   */
  readSmall(id: string, expected: number): Promise<Buffer | null>;
  /** Size of a blob, or null when it does not exist. */
  stat(id: string): Promise<BlobStat | null>;
  /** Removes a blob; removing a missing blob is not an error. */
  delete(id: string): Promise<void>;
  /** Checks the store can be written (for readiness probes). */
  checkWritable(): Promise<void>;
  /** Every entry in the store (blobs, unfinished writes, strays), for sweeps and gc. */
  entries(): AsyncGenerator<StoreEntry>;
  /** Removes one entry found by entries(). */
  removeEntry(e: StoreEntry): Promise<void>;
  /**
   * Removes unfinished writes older than `olderThanMs` left by a crash; returns how many.
   * Ids in `keep` are resumable uploads still open (their multipart upload is not a leftover).
   */
  sweepTemp(olderThanMs?: number, now?: number, keep?: ReadonlySet<string>): Promise<number>;
  /** The incomplete resumable (tus) uploads of this store (storage/partial.ts). */
  partials(): PartialStore;
  /**
   * A store shared by several instances (S3) keeps the audit heads beside the blobs, as small
   * objects its entries() never lists; a disk store leaves them to `DATA_DIR` (storage/index.ts).
   */
  auditHeads?(): AuditHeadStore;
}
