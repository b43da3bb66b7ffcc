/** Repository for the addresses a link was sent to by email. */
import type { Executor } from './database.js';

export interface ShareRecipientRow {
  shareId: string;
  address: string;
  eventId: string;
  message: string | null;
  createdAt: number;
}

export class ShareRecipientsRepo {
  constructor(private readonly db: Executor) {}

  /** Records that `address` was sent the link (inside the link's creating transaction). */
  async insert(row: ShareRecipientRow): Promise<void> {
    await this.db
      .insertInto('share_recipients')
      .values({ share_id: row.shareId, address: row.address, event_id: row.eventId, message: row.message, created_at: row.createdAt })
      .onConflict((oc) => oc.columns(['share_id', 'address']).doNothing())
      .execute();
  }

  /** Recipients of these links, oldest first. */
  async forShares(shareIds: string[]): Promise<ShareRecipientRow[]> {
    if (shareIds.length === 0) return [];
    const rows = await this.db.selectFrom('share_recipients').selectAll().where('share_id', 'in', shareIds).orderBy('created_at').orderBy('address').execute();
    return rows.map((r) => ({ shareId: r.share_id, address: r.address, eventId: r.event_id, message: r.message, createdAt: Number(r.created_at) }));
  }
}
