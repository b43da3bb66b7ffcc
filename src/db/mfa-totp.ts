/** Repository for `mfa_totp`: one sealed TOTP secret per user and its replay guard. */
import type { Executor } from './database.js';

export interface TotpRow {
  userId: string;
  keyId: string;
  sealed: Buffer;
  confirmedAt: number | null;
  lastStep: number;
  createdAt: number;
}

const toRow = (r: { user_id: string; key_id: string; sealed: Buffer; confirmed_at: number | null; last_step: number; created_at: number }): TotpRow => ({
  userId: r.user_id,
  keyId: r.key_id,
  sealed: r.sealed,
  confirmedAt: r.confirmed_at === null ? null : Number(r.confirmed_at),
  lastStep: Number(r.last_step),
  createdAt: Number(r.created_at),
});

export class TotpRepo {
  constructor(private readonly db: Executor) {}

  /** The user's TOTP row (confirmed or still being enrolled), if any. */
  async get(userId: string): Promise<TotpRow | undefined> {
    const r = await this.db.selectFrom('mfa_totp').selectAll().where('user_id', '=', userId).executeTakeFirst();
    return r && toRow(r);
  }

  /** Starts (or restarts) an enrolment: an unconfirmed secret replaces any earlier unconfirmed one, never a confirmed one. */
  async putPending(userId: string, keyId: string, sealed: Buffer, now: number): Promise<boolean> {
    await this.db.deleteFrom('mfa_totp').where('user_id', '=', userId).where('confirmed_at', 'is', null).execute();
    const r = await this.db
      .insertInto('mfa_totp')
      .values({ user_id: userId, key_id: keyId, sealed, confirmed_at: null, last_step: 0, created_at: now })
      .onConflict((oc) => oc.column('user_id').doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0) === 1;
  }

  /**
   * Accepts time step `step` for the user: one statement that raises last_step only if `step`
   * is newer, so the same code (or an older one) is refused on every instance (replay guard).
   * With `confirm`, the pending secret becomes the user's factor in the same statement.
   */
  async acceptStep(userId: string, step: number, now: number, confirm: boolean): Promise<boolean> {
    let q = this.db.updateTable('mfa_totp').set(confirm ? { last_step: step, confirmed_at: now } : { last_step: step }).where('user_id', '=', userId).where('last_step', '<', step);
    q = confirm ? q.where('confirmed_at', 'is', null) : q.where('confirmed_at', 'is not', null);
    const r = await q.executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Removes the user's TOTP factor; true when there was one. */
  async remove(userId: string): Promise<boolean> {
    const r = await this.db.deleteFrom('mfa_totp').where('user_id', '=', userId).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  /** Every row sealed under a key other than `keyId` (for key rotation). */
  async notUnder(keyId: string): Promise<TotpRow[]> {
    return (await this.db.selectFrom('mfa_totp').selectAll().where('key_id', '!=', keyId).execute()).map(toRow);
  }

  /** Replaces a row's seal only if it is still the one read (compare-and-swap). */
  async rewrap(userId: string, oldKeyId: string, oldSealed: Buffer, newKeyId: string, sealed: Buffer): Promise<boolean> {
    const r = await this.db
      .updateTable('mfa_totp')
      .set({ key_id: newKeyId, sealed })
      .where('user_id', '=', userId)
      .where('key_id', '=', oldKeyId)
      .where('sealed', '=', oldSealed)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Number of TOTP secrets sealed under a key. */
  async countUnderKey(keyId: string): Promise<number> {
    const r = await this.db.selectFrom('mfa_totp').select((eb) => eb.fn.countAll<number>().as('n')).where('key_id', '=', keyId).executeTakeFirstOrThrow();
    return Number(r.n);
  }
}
