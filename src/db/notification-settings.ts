/** Repository for per-user notification settings (address and channels per event). */
import type { Executor } from './database.js';

export interface NotificationSettingsRow {
  userId: string;
  email: string | null;
  /** Event kind -> channels. */
  prefs: Record<string, string[]>;
  updatedAt: number;
}

export class NotificationSettingsRepo {
  constructor(private readonly db: Executor) {}

  /** The user's settings, or the default (no address, nothing chosen). */
  async get(userId: string): Promise<NotificationSettingsRow> {
    const r = await this.db.selectFrom('notification_settings').selectAll().where('user_id', '=', userId).executeTakeFirst();
    if (!r) return { userId, email: null, prefs: {}, updatedAt: 0 };
    let prefs: Record<string, string[]> = {};
    try {
      prefs = JSON.parse(r.prefs) as Record<string, string[]>;
    } catch {
      prefs = {};
    }
    return { userId, email: r.email, prefs, updatedAt: Number(r.updated_at) };
  }

  /** Stores the user's settings (insert or replace). */
  async put(row: NotificationSettingsRow): Promise<void> {
    const prefs = JSON.stringify(row.prefs);
    await this.db
      .insertInto('notification_settings')
      .values({ user_id: row.userId, email: row.email, prefs, updated_at: row.updatedAt })
      .onConflict((oc) => oc.column('user_id').doUpdateSet({ email: row.email, prefs, updated_at: row.updatedAt }))
      .execute();
  }
}
