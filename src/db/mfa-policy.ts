/** Repository for `mfa_policy`: the admin page's REQUIRE_2FA switch. */
import type { Executor } from './database.js';

export type TwoFactorPolicy = 'off' | 'admins' | 'all';

export class MfaPolicyRepo {
  constructor(private readonly db: Executor) {}

  /** The switch as an admin set it, or undefined when nobody has (the setting applies). */
  async get(): Promise<TwoFactorPolicy | undefined> {
    const r = await this.db.selectFrom('mfa_policy').select('require_2fa').where('id', '=', 1).executeTakeFirst();
    return r?.require_2fa;
  }

  /** Sets the switch (one statement). */
  async set(value: TwoFactorPolicy, now: number): Promise<void> {
    await this.db
      .insertInto('mfa_policy')
      .values({ id: 1, require_2fa: value, updated_at: now })
      .onConflict((oc) => oc.column('id').doUpdateSet({ require_2fa: value, updated_at: now }))
      .execute();
  }
}
