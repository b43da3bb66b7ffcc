/**
 * Repository for the purge queue: ciphertext whose file row and wrapped key are already gone.
 * A row is written in the purge's own transaction and deleted only once the blob is removed,
 * so a purge cut short (crash, SIGKILL, the store away) is finished by the next pass.
 */
import type { Executor } from './database.js';

export interface PurgeQueueRow {
  blobId: string;
  fileId: string;
  queuedAt: number;
}

export class PurgeQueueRepo {
  constructor(private readonly db: Executor) {}

  async add(r: PurgeQueueRow): Promise<void> {
    await this.db.insertInto('purge_queue').values({ blob_id: r.blobId, file_id: r.fileId, queued_at: r.queuedAt }).onConflict((oc) => oc.column('blob_id').doNothing()).execute();
  }

  /** Up to `limit` blobs still to remove, oldest first. */
  async pending(limit: number): Promise<PurgeQueueRow[]> {
    const rows = await this.db.selectFrom('purge_queue').selectAll().orderBy('queued_at').orderBy('blob_id').limit(limit).execute();
    return rows.map((r) => ({ blobId: r.blob_id, fileId: r.file_id, queuedAt: Number(r.queued_at) }));
  }

  async done(blobId: string): Promise<void> {
    await this.db.deleteFrom('purge_queue').where('blob_id', '=', blobId).execute();
  }
}
