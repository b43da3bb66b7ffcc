/** Repository for `mfa_recovery_codes`: keyed hashes of single-use recovery codes. */
import type { Executor } from './database.js';

export class RecoveryCodesRepo {
  constructor(private readonly db: Executor) {}

  /** Replaces every code of the user (the old ones stop working in the same transaction's statements). */
  async replace(userId: string, hashes: Buffer[], now: number): Promise<void> {
    await this.db.deleteFrom('mfa_recovery_codes').where('user_id', '=', userId).execute();
    if (hashes.length) await this.db.insertInto('mfa_recovery_codes').values(hashes.map((h) => ({ user_id: userId, code_hash: h, created_at: now, used_at: null }))).execute();
  }

  /** Uses a code: one statement that marks it used only if it was unused, so it works once across instances. */
  async use(userId: string, hash: Buffer, now: number): Promise<boolean> {
    const r = await this.db.updateTable('mfa_recovery_codes').set({ used_at: now }).where('user_id', '=', userId).where('code_hash', '=', hash).where('used_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** How many unused codes the user has left. */
  async remaining(userId: string): Promise<number> {
    const r = await this.db
      .selectFrom('mfa_recovery_codes')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('user_id', '=', userId)
      .where('used_at', 'is', null)
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  /** Deletes every code of the user. */
  async removeAll(userId: string): Promise<number> {
    return Number((await this.db.deleteFrom('mfa_recovery_codes').where('user_id', '=', userId).executeTakeFirst()).numDeletedRows);
  }
}
