/**
 * Garbage collection of the upload store: temp files and orphan ciphertext older than a
 * safety age are deleted (younger ones may belong to uploads in flight); rows whose
 * ciphertext is missing are reported, never deleted (that is for a person to decide).
 */
import type { FilesRepo } from '../db/files.js';
import type { BlobStore, StoreEntry } from '../storage/blob-store.js';

export const DEFAULT_GC_AGE_MS = 60 * 60 * 1000;

export interface GcResult {
  removed: { path: string; kind: StoreEntry['kind'] | 'orphan'; size: number }[];
  keptYoung: number;
  missingRows: string[];
  bytesFreed: number;
  dryRun: boolean;
}

/** Collects garbage; with `dryRun` nothing is deleted and the result says what would be. */
export async function gc(files: FilesRepo, store: BlobStore, opts: { dryRun?: boolean; minAgeMs?: number; now?: number; keep?: ReadonlySet<string> } = {}): Promise<GcResult> {
  const minAge = opts.minAgeMs ?? DEFAULT_GC_AGE_MS;
  const now = opts.now ?? Date.now();
  const ids = new Set(await files.allBlobIds());
  const seen = new Set<string>();
  const result: GcResult = { removed: [], keptYoung: 0, missingRows: [], bytesFreed: 0, dryRun: opts.dryRun ?? false };
  for await (const e of store.entries()) {
    if (e.kind === 'blob' && e.id && ids.has(e.id)) {
      seen.add(e.id);
      continue;
    }
    // An open resumable upload's multipart upload (S3) is not garbage: the upload resumes later.
    if (e.kind === 'temp' && e.id && opts.keep?.has(e.id)) continue;
    // Temp files, orphan blobs and strays: garbage once old enough. An object store's clock
    // (and its whole-second timestamps) may be ahead of ours, so age 0 means "any age".
    if (minAge > 0 && now - e.mtimeMs < minAge) {
      result.keptYoung++;
      continue;
    }
    if (!result.dryRun) await store.removeEntry(e);
    result.removed.push({ path: e.path, kind: e.kind === 'blob' ? 'orphan' : e.kind, size: e.size });
    result.bytesFreed += e.size;
  }
  // Reported by file id (a blob id may carry a generation suffix).
  for (const id of ids) if (!seen.has(id)) result.missingRows.push(id.slice(0, 32));
  return result;
}
