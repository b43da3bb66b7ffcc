/** Repository for the (keyed-hash) client addresses each user has signed in from. */
import type { Executor } from './database.js';

export class SignInAddressesRepo {
  constructor(private readonly db: Executor) {}

  /**
   * Records a sign-in from `hash`. Returns 'new' for an address the user never signed in from
   * while they had signed in from another, 'first' for their very first sign-in, 'known' otherwise.
   */
  async record(userId: string, hash: Buffer, now: number): Promise<'new' | 'first' | 'known'> {
    const known = await this.db.selectFrom('sign_in_addresses').select('last_seen_at').where('user_id', '=', userId).where('address_hash', '=', hash).executeTakeFirst();
    if (known) {
      await this.db.updateTable('sign_in_addresses').set({ last_seen_at: now }).where('user_id', '=', userId).where('address_hash', '=', hash).execute();
      return 'known';
    }
    const any = await this.db.selectFrom('sign_in_addresses').select('user_id').where('user_id', '=', userId).limit(1).executeTakeFirst();
    await this.db
      .insertInto('sign_in_addresses')
      .values({ user_id: userId, address_hash: hash, first_seen_at: now, last_seen_at: now })
      .onConflict((oc) => oc.columns(['user_id', 'address_hash']).doNothing())
      .execute();
    return any ? 'new' : 'first';
  }
}
