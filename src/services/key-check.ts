/**
 * Start-up check that the configured keyring matches the database. A wrong key must never
 * silently wrap new files, and files must never reference a key that is not loaded.
 */
import type { Executor } from '../db/database.js';
import { MasterKeysRepo } from '../db/master-keys.js';
import { Keyring } from '../crypto/keyring.js';

export class KeyMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyMismatchError';
  }
}

/**
 * Throws KeyMismatchError, with advice, unless every key the database knows is consistent with
 * the ring and the active key is one the database already knows. A new active key is accepted
 * only with `acceptNewKey` (or when the database has never used a key): otherwise a random
 * MASTER_KEY beside the right key in MASTER_KEYS_PREVIOUS would start, and wrap new files
 * under a key nobody kept.
 */
export async function checkKeyringAgainstDb(db: Executor, keyring: Keyring, opts: { acceptNewKey?: boolean } = {}): Promise<void> {
  const repo = new MasterKeysRepo(db);
  const known = await repo.list();
  const counts = await repo.fileCounts();
  for (const row of known) {
    const key = keyring.get(row.keyId);
    if (key && !Keyring.checkMatches(key, row.checkValue)) {
      throw new KeyMismatchError(`master key ${row.keyId} does not match its key check value in the database; refusing to start`);
    }
  }
  const missing = [...counts.entries()].filter(([id]) => !keyring.get(id));
  if (missing.length) {
    const list = missing.map(([id, n]) => `${id} (${n} file${n === 1 ? '' : 's'})`).join(', ');
    throw new KeyMismatchError(
      `the database has files wrapped under master key(s) that are not configured: ${list}. ` +
        `Configure the right MASTER_KEY / MASTER_KEY_FILE (older keys in MASTER_KEYS_PREVIOUS); refusing to start`,
    );
  }
  const live = known.filter((r) => r.retiredAt === null);
  if (live.length > 0 && !live.some((r) => keyring.get(r.keyId))) {
    throw new KeyMismatchError(
      `the configured master key (${keyring.active.id}) is not one this database has used (${live.map((r) => r.keyId).join(', ')}). ` +
        `If this is a key rotation, list the old key in MASTER_KEYS_PREVIOUS; refusing to start`,
    );
  }
  if (known.length > 0 && !known.some((r) => r.keyId === keyring.active.id) && !opts.acceptNewKey) {
    throw new KeyMismatchError(
      `the active master key (${keyring.active.id}) is new to this database (it knows ${known.map((r) => r.keyId).join(', ')}): ` +
        `to rotate to it, run "sfs key rotate" (registers it and rewraps every file under it) or start once with --accept-new-key ` +
        `(or MASTER_KEY_NEW=1); if you did not mean to change keys, fix MASTER_KEY / MASTER_KEY_FILE; refusing to start`,
    );
  }
}

/** Records the active key's check value, so a key accepted once with --accept-new-key is known from then on. */
export async function registerActiveKey(db: Executor, keyring: Keyring): Promise<void> {
  await new MasterKeysRepo(db).insertIfMissing(keyring.active.id, keyring.active.checkValue, Date.now());
}
