/** Repository for webhooks: one per scope (a user id, or ADMIN_SCOPE for the audit stream). */
import type { Executor } from './database.js';

/** The scope of the admin-wide webhook (the audit stream). */
export const ADMIN_SCOPE = '*admin';

export interface WebhookRow {
  id: string;
  scope: string;
  url: string;
  /** The signing secret, sealed (services/notify/notifier.ts); never returned to a client after creation. */
  sealed: Buffer;
  createdAt: number;
}

export class WebhooksRepo {
  constructor(private readonly db: Executor) {}

  /** The scope's webhook, if any. */
  async forScope(scope: string): Promise<WebhookRow | undefined> {
    const r = await this.db.selectFrom('webhooks').selectAll().where('scope', '=', scope).executeTakeFirst();
    return r && { id: r.id, scope: r.scope, url: r.url, sealed: Buffer.from(r.sealed), createdAt: Number(r.created_at) };
  }

  /** The webhook with this id, if any. */
  async byId(id: string): Promise<WebhookRow | undefined> {
    const r = await this.db.selectFrom('webhooks').selectAll().where('id', '=', id).executeTakeFirst();
    return r && { id: r.id, scope: r.scope, url: r.url, sealed: Buffer.from(r.sealed), createdAt: Number(r.created_at) };
  }

  /** Sets the scope's webhook, replacing any previous one (a new id: old deliveries keep naming the old one). */
  async replace(row: WebhookRow): Promise<void> {
    await this.db.deleteFrom('webhooks').where('scope', '=', row.scope).execute();
    await this.db.insertInto('webhooks').values({ id: row.id, scope: row.scope, url: row.url, sealed: row.sealed, created_at: row.createdAt }).execute();
  }

  /** Removes the scope's webhook; true when there was one. */
  async remove(scope: string): Promise<boolean> {
    const r = await this.db.deleteFrom('webhooks').where('scope', '=', scope).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
}
