/** Repository for `mfa_passkeys`: WebAuthn public keys, each row MAC-sealed to its user. */
import type { IntegrityKeys } from '../services/integrity.js';
import type { Executor } from './database.js';

export interface PasskeyRow {
  id: string;
  userId: string;
  name: string;
  publicKey: Buffer;
  counter: number;
  transports: string[];
  createdAt: number;
  lastUsedAt: number | null;
}

type Raw = { id: string; user_id: string; name: string; public_key: Buffer; counter: number; transports: string; row_mac: Buffer; created_at: number; last_used_at: number | null };

export class PasskeysRepo {
  constructor(
    private readonly db: Executor,
    private readonly integrity: IntegrityKeys,
  ) {}

  // Binds the credential to its user: a row written without the key (a planted credential) never matches.
  private mac(id: string, userId: string, publicKey: Buffer): Buffer {
    return this.integrity.rowMac('mfa_passkeys', [id, userId, publicKey.toString('base64')]);
  }

  private toRow(r: Raw): PasskeyRow | undefined {
    if (!this.integrity.rowMacMatches('mfa_passkeys', [r.id, r.user_id, r.public_key.toString('base64')], r.row_mac)) return undefined;
    return {
      id: r.id,
      userId: r.user_id,
      name: r.name,
      publicKey: r.public_key,
      counter: Number(r.counter),
      transports: r.transports ? r.transports.split(',') : [],
      createdAt: Number(r.created_at),
      lastUsedAt: r.last_used_at === null ? null : Number(r.last_used_at),
    };
  }

  /** Stores a new credential. */
  async insert(p: Omit<PasskeyRow, 'lastUsedAt'>): Promise<void> {
    await this.db
      .insertInto('mfa_passkeys')
      .values({ id: p.id, user_id: p.userId, name: p.name, public_key: p.publicKey, counter: p.counter, transports: p.transports.join(','), row_mac: this.mac(p.id, p.userId, p.publicKey), created_at: p.createdAt, last_used_at: null })
      .execute();
  }

  /** The user's intact credentials, oldest first (rows failing their MAC are left out). */
  async listForUser(userId: string): Promise<PasskeyRow[]> {
    const rows = (await this.db.selectFrom('mfa_passkeys').selectAll().where('user_id', '=', userId).orderBy('created_at').execute()) as Raw[];
    return rows.map((r) => this.toRow(r)).filter((r): r is PasskeyRow => !!r);
  }

  /** A credential by id, only if its row is intact. */
  async byId(id: string): Promise<PasskeyRow | undefined> {
    const r = (await this.db.selectFrom('mfa_passkeys').selectAll().where('id', '=', id).executeTakeFirst()) as Raw | undefined;
    return r && this.toRow(r);
  }

  /** Moves the signature counter forward: only from the value read (compare-and-swap), so a cloned key racing the real one loses. */
  async advance(id: string, oldCounter: number, newCounter: number, now: number): Promise<boolean> {
    const r = await this.db.updateTable('mfa_passkeys').set({ counter: newCounter, last_used_at: now }).where('id', '=', id).where('counter', '=', oldCounter).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Renames one of the user's credentials. */
  async rename(userId: string, id: string, name: string): Promise<boolean> {
    const r = await this.db.updateTable('mfa_passkeys').set({ name }).where('id', '=', id).where('user_id', '=', userId).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Removes one of the user's credentials. */
  async remove(userId: string, id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('mfa_passkeys').where('id', '=', id).where('user_id', '=', userId).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }

  /** Removes every credential of the user. */
  async removeAll(userId: string): Promise<number> {
    return Number((await this.db.deleteFrom('mfa_passkeys').where('user_id', '=', userId).executeTakeFirst()).numDeletedRows);
  }
}
