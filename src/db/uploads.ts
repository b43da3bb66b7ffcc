/** Repository for resumable (tus) uploads: one row per upload, its lease taken by one statement. */
import type { Selectable } from 'kysely';
import type { Executor } from './database.js';
import type { UploadsTable } from './schema.js';

export type UploadRow = Selectable<UploadsTable>;

/**
 * Which uploads a caller may see: the owner's own (null), those of one upload request (its
 * id), or every upload of the owner ('any', account deletion). Why: an owner's bearer token
 * must not write into an outsider's upload to their request, nor the reverse.
 */
export type RequestScope = string | null | 'any';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function scoped<Q extends { where: (...a: any[]) => Q }>(q: Q, requestId: RequestScope): Q {
  if (requestId === 'any') return q;
  return requestId === null ? q.where('request_id', 'is', null) : q.where('request_id', '=', requestId);
}

export class UploadsRepo {
  constructor(private readonly db: Executor) {}

  async insert(
    r: Omit<UploadRow, 'committed' | 'hash_state' | 'store_state' | 'lease_id' | 'lease_expires_at' | 'file_id' | 'sha256' | 'request_id' | 'uploader_name' | 'uploader_email'> &
      Partial<Pick<UploadRow, 'request_id' | 'uploader_name' | 'uploader_email'>>,
  ): Promise<void> {
    await this.db.insertInto('uploads').values(r).execute();
  }

  /** The owner's upload, or undefined (also for another user's: no existence oracle). */
  async byIdForOwner(id: string, ownerId: string, requestId: RequestScope = null): Promise<UploadRow | undefined> {
    return scoped(this.db.selectFrom('uploads').selectAll().where('id', '=', id).where('owner_id', '=', ownerId), requestId).executeTakeFirst();
  }

  /** Open (not completed, not expired) uploads of a user: how many and how many bytes they declared. */
  async openOf(ownerId: string, now: number): Promise<{ count: number; bytes: number }> {
    const r = await this.db
      .selectFrom('uploads')
      .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.coalesce(eb.fn.sum<number>('length'), eb.lit(0)).as('bytes')])
      .where('owner_id', '=', ownerId)
      .where('request_id', 'is', null)
      .where('file_id', 'is', null)
      .where('expires_at', '>', now)
      .executeTakeFirstOrThrow();
    return { count: Number(r.n), bytes: Number(r.bytes) };
  }

  /**
   * Takes the upload's lease for one PATCH, in one statement: only when the row is the
   * owner's, open, not expired, and no live lease (of any instance) holds it. True when taken.
   */
  async acquire(id: string, ownerId: string, leaseId: string, now: number, until: number, requestId: RequestScope = null): Promise<boolean> {
    const r = await scoped(this.db.updateTable('uploads'), requestId)
      .set({ lease_id: leaseId, lease_expires_at: until })
      .where('id', '=', id)
      .where('owner_id', '=', ownerId)
      .where('file_id', 'is', null)
      .where('expires_at', '>', now)
      .where((eb) => eb.or([eb('lease_id', 'is', null), eb('lease_expires_at', '<=', now)]))
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Moves a held lease's expiry on; false when the lease is no longer ours (terminated, or lapsed and taken). */
  async renew(id: string, leaseId: string, until: number): Promise<boolean> {
    const r = await this.db.updateTable('uploads').set({ lease_expires_at: until }).where('id', '=', id).where('lease_id', '=', leaseId).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Records a durable point under our lease (one statement); false when the lease is gone. */
  async checkpoint(id: string, leaseId: string, c: { committed: number; hashState: Buffer; storeState: string | null; leaseUntil: number; expiresAt: number; release?: boolean }): Promise<boolean> {
    // The last checkpoint of a request gives the lease back in the same statement, so a client
    // that sees the new offset (HEAD) can PATCH from it at once.
    const lease = c.release ? { lease_id: null, lease_expires_at: null } : { lease_expires_at: c.leaseUntil };
    const r = await this.db
      .updateTable('uploads')
      .set({ committed: c.committed, hash_state: c.hashState, store_state: c.storeState, expires_at: c.expiresAt, ...lease })
      .where('id', '=', id)
      .where('lease_id', '=', leaseId)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Gives a lease back (never another holder's). */
  async release(id: string, leaseId: string): Promise<void> {
    await this.db.updateTable('uploads').set({ lease_id: null, lease_expires_at: null }).where('id', '=', id).where('lease_id', '=', leaseId).execute();
  }

  /**
   * Marks the upload complete under our lease (inside the transaction that inserts the file
   * row): the wrapped DEK and hash state are overwritten, so only the file row holds a key.
   */
  async complete(id: string, leaseId: string, fileId: string, sha256: Buffer, length: number): Promise<boolean> {
    const r = await this.db
      .updateTable('uploads')
      .set({ file_id: fileId, sha256, committed: length, wrapped_dek: Buffer.alloc(0), hash_state: null, store_state: null, lease_id: null, lease_expires_at: null })
      .where('id', '=', id)
      .where('lease_id', '=', leaseId)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Deletes the owner's upload (termination); returns the row as it was, or undefined. */
  async deleteForOwner(id: string, ownerId: string, requestId: RequestScope = null): Promise<UploadRow | undefined> {
    const row = await this.byIdForOwner(id, ownerId, requestId);
    if (!row) return undefined;
    const r = await this.db.deleteFrom('uploads').where('id', '=', id).where('owner_id', '=', ownerId).executeTakeFirst();
    return Number(r.numDeletedRows) === 1 ? row : undefined;
  }

  /** Uploads past their expiry with no live lease (the sweep's work list). */
  async expired(now: number, limit = 500): Promise<UploadRow[]> {
    return this.db
      .selectFrom('uploads')
      .selectAll()
      .where('expires_at', '<=', now)
      .where((eb) => eb.or([eb('lease_id', 'is', null), eb('lease_expires_at', '<=', now)]))
      .limit(limit)
      .execute();
  }

  /** Deletes one expired upload, re-checking expiry and lease in the same statement. */
  async deleteExpired(id: string, now: number): Promise<boolean> {
    const r = await this.db
      .deleteFrom('uploads')
      .where('id', '=', id)
      .where('expires_at', '<=', now)
      .where((eb) => eb.or([eb('lease_id', 'is', null), eb('lease_expires_at', '<=', now)]))
      .executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }

  /** Ids of every upload not yet complete (their multipart uploads are not crash leftovers). */
  async openIds(): Promise<string[]> {
    return (await this.db.selectFrom('uploads').select('id').where('file_id', 'is', null).execute()).map((r) => r.id);
  }

  /** Whether the row exists at all (any owner). */
  async exists(id: string): Promise<boolean> {
    return (await this.db.selectFrom('uploads').select('id').where('id', '=', id).executeTakeFirst()) !== undefined;
  }
}
