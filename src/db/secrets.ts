/** Repository for named service secrets, stored wrapped under a master key. */
import { randomBytes } from 'node:crypto';
import { unwrapSecret, wrapSecret } from '../crypto/envelope.js';
import { IntegrityError } from '../crypto/format.js';
import type { Keyring } from '../crypto/keyring.js';
import { inTransaction, type Executor } from './database.js';
import { MasterKeysRepo } from './master-keys.js';

export interface SecretRow {
  name: string;
  keyId: string;
  wrapped: Buffer;
}

export class SecretsRepo {
  constructor(private readonly db: Executor) {}

  async get(name: string): Promise<SecretRow | undefined> {
    const r = await this.db.selectFrom('secrets').select(['name', 'key_id', 'wrapped']).where('name', '=', name).executeTakeFirst();
    return r && { name: r.name, keyId: r.key_id, wrapped: r.wrapped };
  }

  async list(): Promise<SecretRow[]> {
    const rows = await this.db.selectFrom('secrets').select(['name', 'key_id', 'wrapped']).orderBy('name').execute();
    return rows.map((r) => ({ name: r.name, keyId: r.key_id, wrapped: r.wrapped }));
  }

  /** Replaces a secret's wrapping only if it is still under `oldKeyId` (compare-and-swap). */
  async rewrap(name: string, oldKeyId: string, newKeyId: string, wrapped: Buffer): Promise<boolean> {
    const r = await this.db.updateTable('secrets').set({ key_id: newKeyId, wrapped }).where('name', '=', name).where('key_id', '=', oldKeyId).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Number of secrets wrapped under a key. */
  async countUnderKey(keyId: string): Promise<number> {
    const r = await this.db.selectFrom('secrets').select((eb) => eb.fn.countAll<number>().as('n')).where('key_id', '=', keyId).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  /**
   * The named 32-byte secret, created (random, wrapped under the active key) on first use.
   * Throws IntegrityError when it exists under a key that is not loaded or does not unwrap.
   */
  async obtain(name: string, keyring: Keyring, now = Date.now()): Promise<Buffer> {
    const existing = await this.get(name);
    if (existing) {
      const key = keyring.get(existing.keyId);
      if (!key) throw new IntegrityError(`secret "${name}" is wrapped under master key ${existing.keyId}, which is not loaded`);
      return unwrapSecret(key, name, existing.wrapped);
    }
    const secret = randomBytes(32);
    const active = keyring.active;
    const wrapped = wrapSecret(active, name, secret, randomBytes(12));
    secret.fill(0);
    await inTransaction(this.db, async (trx) => {
      await new MasterKeysRepo(trx).insertIfMissing(active.id, active.checkValue, now);
      // First writer wins: a racing creator's secret is dropped here and read back below.
      await trx.insertInto('secrets').values({ name, key_id: active.id, wrapped, created_at: now }).onConflict((oc) => oc.column('name').doNothing()).execute();
    });
    // Another writer may have won the race: read back what is stored.
    return this.obtain(name, keyring, now);
  }
}
