/** Repository for named service secrets, stored wrapped under a master key. */
import { randomBytes } from 'node:crypto';
import { unwrapSecret, wrapSecret } from '../crypto/envelope.js';
import { IntegrityError } from '../crypto/format.js';
import type { Keyring } from '../crypto/keyring.js';
import { stmt, type Db } from './database.js';

export interface SecretRow {
  name: string;
  keyId: string;
  wrapped: Buffer;
}

export class SecretsRepo {
  constructor(private readonly db: Db) {}

  get(name: string): SecretRow | undefined {
    const r = stmt(this.db, 'SELECT name, key_id, wrapped FROM secrets WHERE name = ?').get(name) as
      | { name: string; key_id: string; wrapped: Buffer }
      | undefined;
    return r && { name: r.name, keyId: r.key_id, wrapped: r.wrapped };
  }

  list(): SecretRow[] {
    return (stmt(this.db, 'SELECT name, key_id, wrapped FROM secrets ORDER BY name').all() as { name: string; key_id: string; wrapped: Buffer }[]).map(
      (r) => ({ name: r.name, keyId: r.key_id, wrapped: r.wrapped }),
    );
  }

  /** Replaces a secret's wrapping only if it is still under `oldKeyId` (compare-and-swap). */
  rewrap(name: string, oldKeyId: string, newKeyId: string, wrapped: Buffer): boolean {
    return stmt(this.db, 'UPDATE secrets SET key_id = ?, wrapped = ? WHERE name = ? AND key_id = ?').run(newKeyId, wrapped, name, oldKeyId).changes === 1;
  }

  /**
   * The named 32-byte secret, created (random, wrapped under the active key) on first use.
   * Throws IntegrityError when it exists under a key that is not loaded or does not unwrap.
   */
  obtain(name: string, keyring: Keyring, now = Date.now()): Buffer {
    const existing = this.get(name);
    if (existing) {
      const key = keyring.get(existing.keyId);
      if (!key) throw new IntegrityError(`secret "${name}" is wrapped under master key ${existing.keyId}, which is not loaded`);
      return unwrapSecret(key, name, existing.wrapped);
    }
    const secret = randomBytes(32);
    const active = keyring.active;
    this.db
      .transaction(() => {
        stmt(this.db, 'INSERT OR IGNORE INTO master_keys (key_id, check_value, created_at) VALUES (?, ?, ?)').run(active.id, active.checkValue, now);
        stmt(this.db, 'INSERT OR IGNORE INTO secrets (name, key_id, wrapped, created_at) VALUES (?, ?, ?, ?)').run(
          name,
          active.id,
          wrapSecret(active, name, secret, randomBytes(12)),
          now,
        );
      })
      .immediate();
    secret.fill(0);
    // Another writer may have won the race: read back what is stored.
    return this.obtain(name, keyring, now);
  }
}
