/** Repository for master-key check values and the key ids files reference. */
import { stmt, type Db } from './database.js';

export interface MasterKeyRow {
  keyId: string;
  checkValue: Buffer;
  createdAt: number;
  retiredAt: number | null;
}

export class MasterKeysRepo {
  constructor(private readonly db: Db) {}

  list(): MasterKeyRow[] {
    return (
      stmt(this.db, 'SELECT key_id, check_value, created_at, retired_at FROM master_keys ORDER BY created_at').all() as {
        key_id: string;
        check_value: Buffer;
        created_at: number;
        retired_at: number | null;
      }[]
    ).map((r) => ({ keyId: r.key_id, checkValue: r.check_value, createdAt: r.created_at, retiredAt: r.retired_at }));
  }

  /** Records a key's check value the first time it is used; a no-op afterwards. */
  insertIfMissing(keyId: string, checkValue: Buffer, now: number): void {
    stmt(this.db, 'INSERT OR IGNORE INTO master_keys (key_id, check_value, created_at) VALUES (?, ?, ?)').run(keyId, checkValue, now);
  }

  /** Key ids referenced by files, with counts. */
  fileCounts(): Map<string, number> {
    const rows = stmt(this.db, 'SELECT key_id, count(*) AS n FROM files GROUP BY key_id').all() as { key_id: string; n: number }[];
    return new Map(rows.map((r) => [r.key_id, r.n]));
  }
}
