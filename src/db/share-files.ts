/**
 * Repository for the files of a bundle link (share_files). Each row is sealed with a MAC
 * over link, position and file, so a database writer cannot slip another file into a
 * bundle; a deleted file leaves its row with file_id NULL (shown as withdrawn).
 */
import type { IntegrityKeys } from '../services/integrity.js';
import type { Executor } from './database.js';
import type { FileRow } from './files.js';
import { FilesRepo } from './files.js';

/** What a bundle holds now: its files in order, and how many were withdrawn (deleted). */
export interface BundleMembers {
  files: FileRow[];
  withdrawn: number;
}

export class ShareFilesRepo {
  constructor(
    private readonly db: Executor,
    private readonly keys: IntegrityKeys,
  ) {}

  private mac(shareId: string, position: number, fileId: string): Buffer {
    return this.keys.rowMac('share_files', [shareId, position, fileId]);
  }

  /** Records the bundle's files in this order (call inside the link's insert transaction). */
  async insert(shareId: string, fileIds: string[]): Promise<void> {
    await this.db
      .insertInto('share_files')
      .values(fileIds.map((fileId, position) => ({ share_id: shareId, position, file_id: fileId, row_mac: this.mac(shareId, position, fileId) })))
      .execute();
  }

  /**
   * The bundle's current files, in order: only rows whose MAC holds and whose file still
   * belongs to the link's owner (a file transferred to someone else leaves the bundle).
   * Rows of deleted files, and rows that fail their MAC, count as withdrawn.
   */
  async members(shareId: string, ownerId: string): Promise<BundleMembers> {
    const rows = await this.db.selectFrom('share_files').selectAll().where('share_id', '=', shareId).orderBy('position').execute();
    const files = new FilesRepo(this.db);
    const out: FileRow[] = [];
    let withdrawn = 0;
    for (const r of rows) {
      const ok = r.file_id !== null && this.keys.rowMacMatches('share_files', [shareId, r.position, r.file_id], r.row_mac);
      const file = ok ? await files.byIdForOwner(r.file_id!, ownerId) : undefined;
      if (file) out.push(file);
      else withdrawn += 1;
    }
    return { files: out, withdrawn };
  }

  /** The ids of the files each of these links held at creation (for the owner's listing), by link id. */
  async fileIdsOf(shareIds: string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    if (shareIds.length === 0) return out;
    const rows = await this.db.selectFrom('share_files').select(['share_id', 'file_id']).where('share_id', 'in', shareIds).orderBy('share_id').orderBy('position').execute();
    for (const r of rows) {
      if (r.file_id === null) continue;
      const list = out.get(r.share_id) ?? [];
      list.push(r.file_id);
      out.set(r.share_id, list);
    }
    return out;
  }
}
