/** Repository for master-key check values and the key ids files reference. */
import type { Executor } from './database.js';

export interface MasterKeyRow {
  keyId: string;
  checkValue: Buffer;
  createdAt: number;
  retiredAt: number | null;
}

export class MasterKeysRepo {
  constructor(private readonly db: Executor) {}

  async list(): Promise<MasterKeyRow[]> {
    const rows = await this.db.selectFrom('master_keys').select(['key_id', 'check_value', 'created_at', 'retired_at']).orderBy('created_at').execute();
    return rows.map((r) => ({ keyId: r.key_id, checkValue: r.check_value, createdAt: r.created_at, retiredAt: r.retired_at }));
  }

  /** Records a key's check value the first time it is used; a no-op afterwards. */
  async insertIfMissing(keyId: string, checkValue: Buffer, now: number): Promise<void> {
    await this.db
      .insertInto('master_keys')
      .values({ key_id: keyId, check_value: checkValue, created_at: now })
      .onConflict((oc) => oc.column('key_id').doNothing())
      .execute();
  }

  /** Key ids referenced by files, with counts. */
  async fileCounts(): Promise<Map<string, number>> {
    const rows = await this.db.selectFrom('files').select(['key_id', (eb) => eb.fn.countAll<number>().as('n')]).groupBy('key_id').execute();
    return new Map(rows.map((r) => [r.key_id, Number(r.n)]));
  }

  /** Deletes a key's record; false when there is none. */
  async delete(keyId: string): Promise<boolean> {
    const r = await this.db.deleteFrom('master_keys').where('key_id', '=', keyId).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }
}
