/** Repository for `mfa_notices`: "an administrator reset your second factors", shown once. */
import type { Executor } from './database.js';

export class MfaNoticesRepo {
  constructor(private readonly db: Executor) {}

  /** Records a reset to tell the user about. */
  async put(userId: string, at: number): Promise<void> {
    await this.db.insertInto('mfa_notices').values({ user_id: userId, reset_at: at }).onConflict((oc) => oc.column('user_id').doUpdateSet({ reset_at: at })).execute();
  }

  /** Takes the pending notice (deleting it in the same statement), or null. */
  async take(userId: string): Promise<number | null> {
    const r = await this.db.deleteFrom('mfa_notices').where('user_id', '=', userId).returning('reset_at').executeTakeFirst();
    return r ? Number(r.reset_at) : null;
  }
}
