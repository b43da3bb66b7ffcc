/**
 * Repository for upload requests (services/requests.ts) and the leases of uploads to them
 * still streaming. A request is found by the keyed hash of its token, never by the token.
 */
import type { Selectable } from 'kysely';
import type { Executor } from './database.js';
import type { UploadRequestsTable } from './schema.js';

export interface UploadRequestRow {
  id: string;
  ownerId: string;
  title: string;
  message: string;
  passwordHash: string | null;
  maxFiles: number;
  maxBytes: number;
  maxFileBytes: number;
  /** Lowercase extensions without the dot; null = any type. */
  allowedTypes: string[] | null;
  requireName: boolean;
  requireEmail: boolean;
  createdAt: number;
  expiresAt: number;
  closedAt: number | null;
  filesReceived: number;
  bytesReceived: number;
  /** How long files that arrive through the request are kept (seconds); null: the retention default. */
  fileRetentionSeconds: number | null;
}

type Raw = Selectable<UploadRequestsTable>;

/** The row as the service sees it (the token hash stays in the database layer). */
export function toRequestRow(r: Omit<Raw, 'token_hash'>): UploadRequestRow {
  return {
    id: r.id,
    ownerId: r.owner_id,
    title: r.title,
    message: r.message,
    passwordHash: r.password_hash,
    maxFiles: Number(r.max_files),
    maxBytes: Number(r.max_bytes),
    maxFileBytes: Number(r.max_file_bytes),
    allowedTypes: r.allowed_types === null ? null : (JSON.parse(r.allowed_types) as string[]),
    requireName: Number(r.require_name) === 1,
    requireEmail: Number(r.require_email) === 1,
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
    closedAt: r.closed_at === null ? null : Number(r.closed_at),
    filesReceived: Number(r.files_received),
    bytesReceived: Number(r.bytes_received),
    fileRetentionSeconds: r.file_retention_seconds === null || r.file_retention_seconds === undefined ? null : Number(r.file_retention_seconds),
  };
}

const COLUMNS = [
  'id',
  'owner_id',
  'title',
  'message',
  'password_hash',
  'max_files',
  'max_bytes',
  'max_file_bytes',
  'allowed_types',
  'require_name',
  'require_email',
  'created_at',
  'expires_at',
  'closed_at',
  'files_received',
  'bytes_received',
  'file_retention_seconds',
] as const;

export class UploadRequestsRepo {
  constructor(private readonly db: Executor) {}

  /** Inserts a new request with its token's keyed hash. */
  async insert(r: UploadRequestRow, tokenHash: Buffer): Promise<void> {
    await this.db
      .insertInto('upload_requests')
      .values({
        id: r.id,
        owner_id: r.ownerId,
        token_hash: tokenHash,
        title: r.title,
        message: r.message,
        password_hash: r.passwordHash,
        max_files: r.maxFiles,
        max_bytes: r.maxBytes,
        max_file_bytes: r.maxFileBytes,
        allowed_types: r.allowedTypes === null ? null : JSON.stringify(r.allowedTypes),
        require_name: r.requireName ? 1 : 0,
        require_email: r.requireEmail ? 1 : 0,
        created_at: r.createdAt,
        expires_at: r.expiresAt,
        closed_at: null,
        file_retention_seconds: r.fileRetentionSeconds,
      })
      .execute();
  }

  /** The request whose token has this keyed hash, if any. */
  async byTokenHash(hash: Buffer): Promise<UploadRequestRow | undefined> {
    const r = await this.db.selectFrom('upload_requests').select(COLUMNS).where('token_hash', '=', hash).executeTakeFirst();
    return r && toRequestRow(r);
  }

  async byId(id: string): Promise<UploadRequestRow | undefined> {
    const r = await this.db.selectFrom('upload_requests').select(COLUMNS).where('id', '=', id).executeTakeFirst();
    return r && toRequestRow(r);
  }

  /** The owner's requests, newest first. */
  async listForOwner(ownerId: string): Promise<UploadRequestRow[]> {
    const rows = await this.db.selectFrom('upload_requests').select(COLUMNS).where('owner_id', '=', ownerId).orderBy('created_at', 'desc').orderBy('id', 'desc').execute();
    return rows.map(toRequestRow);
  }

  /** Sets the expiry, the arriving files' retention and/or closes; false when the row is not the owner's. */
  async update(id: string, ownerId: string, set: { expiresAt?: number; closedAt?: number | null; fileRetentionSeconds?: number | null }): Promise<boolean> {
    const values: { expires_at?: number; closed_at?: number | null; file_retention_seconds?: number | null } = {};
    if (set.expiresAt !== undefined) values.expires_at = set.expiresAt;
    if (set.fileRetentionSeconds !== undefined) values.file_retention_seconds = set.fileRetentionSeconds;
    if (set.closedAt !== undefined) values.closed_at = set.closedAt;
    if (Object.keys(values).length === 0) return (await this.byId(id))?.ownerId === ownerId;
    const r = await this.db.updateTable('upload_requests').set(values).where('id', '=', id).where('owner_id', '=', ownerId).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Deletes the request (its files stay the owner's; their request_id becomes null); false when not the owner's. */
  async delete(id: string, ownerId: string): Promise<boolean> {
    // Explicitly, not only by the foreign key: the files keep their uploader's name and email.
    await this.db.updateTable('files').set({ request_id: null }).where('request_id', '=', id).where('owner_id', '=', ownerId).execute();
    const r = await this.db.deleteFrom('upload_requests').where('id', '=', id).where('owner_id', '=', ownerId).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }

  /** Files and bytes held by live leases on the request, other than `except`. */
  async leased(requestId: string, now: number, except: string): Promise<{ files: number; bytes: number }> {
    const r = await this.db
      .selectFrom('upload_request_leases')
      .select((eb) => [eb.fn.coalesce(eb.fn.sum<number>('files'), eb.lit(0)).as('files'), eb.fn.coalesce(eb.fn.sum<number>('bytes'), eb.lit(0)).as('bytes')])
      .where('request_id', '=', requestId)
      .where('expires_at', '>', now)
      .where('id', '!=', except)
      .executeTakeFirstOrThrow();
    return { files: Number(r.files), bytes: Number(r.bytes) };
  }

  /** Creates or replaces a lease row. */
  async putLease(id: string, requestId: string, files: number, bytes: number, expiresAt: number): Promise<void> {
    await this.db
      .insertInto('upload_request_leases')
      .values({ id, request_id: requestId, files, bytes, expires_at: expiresAt })
      .onConflict((oc) => oc.column('id').doUpdateSet({ files, bytes, expires_at: expiresAt }))
      .execute();
  }

  async renewLease(id: string, expiresAt: number): Promise<void> {
    await this.db.updateTable('upload_request_leases').set({ expires_at: expiresAt }).where('id', '=', id).execute();
  }

  async deleteLease(id: string): Promise<void> {
    await this.db.deleteFrom('upload_request_leases').where('id', '=', id).execute();
  }

  /** Adds committed files and bytes to the request's counters. */
  async addReceived(id: string, files: number, bytes: number): Promise<void> {
    await this.db
      .updateTable('upload_requests')
      .set((eb) => ({ files_received: eb('files_received', '+', files), bytes_received: eb('bytes_received', '+', bytes) }))
      .where('id', '=', id)
      .execute();
  }

  /** Deletes leases past their expiry (housekeeping); returns how many. */
  async sweepLeases(now: number): Promise<number> {
    const r = await this.db.deleteFrom('upload_request_leases').where('expires_at', '<=', now).executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}
