/**
 * Repository for `sso_policy`: the administrator's switch for local passwords of users linked
 * to single sign-on (one row at most). The row is sealed (row MAC over the value), so a
 * database writer without the key cannot flip it: a row that fails its MAC counts as the
 * stricter choice (local passwords disabled). Deleting the row brings back the setting.
 */
import type { Executor } from './database.js';
import type { IntegrityKeys } from '../services/integrity.js';

export class SsoPolicyRepo {
  constructor(
    private readonly db: Executor,
    private readonly keys: IntegrityKeys,
  ) {}

  /** The stored switch, or null when none is stored; true (stricter) for a row that fails its MAC. */
  async localPasswordsDisabled(): Promise<boolean | null> {
    const r = await this.db.selectFrom('sso_policy').selectAll().where('id', '=', 1).executeTakeFirst();
    if (!r) return null;
    const value = r.disable_local_passwords === 1;
    return this.keys.rowMacMatches('sso_policy', [value], r.row_mac) ? value : true;
  }

  /** Stores the switch (one upsert). */
  async set(disable: boolean, now: number): Promise<void> {
    const row = { id: 1, disable_local_passwords: disable ? 1 : 0, updated_at: now, row_mac: this.keys.rowMac('sso_policy', [disable]) };
    await this.db
      .insertInto('sso_policy')
      .values(row)
      .onConflict((oc) => oc.column('id').doUpdateSet({ disable_local_passwords: row.disable_local_passwords, updated_at: now, row_mac: row.row_mac }))
      .execute();
  }
}
