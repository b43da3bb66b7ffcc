/**
 * Repository for API tokens. Only keyed hashes of tokens are stored (services/integrity.ts:
 * HMAC(k_lookup, SHA-256(token))), and each row carries a MAC over its user and expiry.
 */
import { tokenMacFields, type IntegrityKeys } from '../services/integrity.js';
import { inTransaction, type Executor } from './database.js';

export interface TokenRow {
  id: string;
  userId: string;
  name: string;
  createdAt: number;
  expiresAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
}

interface RawToken {
  id: string;
  user_id: string;
  name: string;
  created_at: number;
  expires_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
}

const toRow = (r: RawToken): TokenRow => ({
  id: r.id,
  userId: r.user_id,
  name: r.name,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
  lastUsedAt: r.last_used_at,
  revokedAt: r.revoked_at,
});


const SELECTED = ['id', 'user_id', 'name', 'created_at', 'expires_at', 'last_used_at', 'revoked_at'] as const;

export class TokensRepo {
  constructor(
    private readonly db: Executor,
    private readonly keys: IntegrityKeys,
  ) {}

  /** Inserts a token row with its MAC; `tokenHash` is the keyed lookup value of the token. */
  async insert(t: TokenRow & { tokenHash: Buffer }): Promise<void> {
    await this.db
      .insertInto('api_tokens')
      .values({
        id: t.id,
        user_id: t.userId,
        name: t.name,
        token_hash: t.tokenHash,
        created_at: t.createdAt,
        expires_at: t.expiresAt,
        row_mac: this.keys.rowMac('api_tokens', tokenMacFields(t)),
      })
      .execute();
  }

  /**
   * The live (unrevoked, unexpired) token with this lookup value, or undefined; `intact` is
   * false when the row's user or expiry was changed without the key (the caller refuses it).
   */
  async activeByHash(tokenHash: Buffer, now: number): Promise<{ row: TokenRow; intact: boolean } | undefined> {
    const r = await this.db
      .selectFrom('api_tokens')
      .select([...SELECTED, 'row_mac'])
      .where('token_hash', '=', tokenHash)
      .where('revoked_at', 'is', null)
      .where('expires_at', '>', now)
      .executeTakeFirst();
    if (!r) return undefined;
    const row = toRow(r);
    return { row, intact: this.keys.rowMacMatches('api_tokens', tokenMacFields({ ...row, tokenHash }), r.row_mac) };
  }

  /** Records use, at most once a minute per token to keep writes off the hot path. */
  async touch(id: string, now: number): Promise<void> {
    await this.db
      .updateTable('api_tokens')
      .set({ last_used_at: now })
      .where('id', '=', id)
      .where((eb) => eb.or([eb('last_used_at', 'is', null), eb('last_used_at', '<', now - 60_000)]))
      .execute();
  }

  /** The user's tokens that are not revoked, newest first. */
  async listForUser(userId: string): Promise<TokenRow[]> {
    const rows = await this.db
      .selectFrom('api_tokens')
      .select(SELECTED)
      .where('user_id', '=', userId)
      .where('revoked_at', 'is', null)
      .orderBy('created_at', 'desc')
      .orderBy('id')
      .execute();
    return rows.map(toRow);
  }

  /** Revokes one of the user's tokens; false if there is no such live token. */
  async revoke(userId: string, id: string, now: number): Promise<boolean> {
    return (await this.revokeWhere(userId, { only: id }, now)) === 1;
  }

  /** Revokes all of a user's tokens except `keepId`; returns how many were revoked. */
  revokeAllExcept(userId: string, keepId: string | null, now: number): Promise<number> {
    return this.revokeWhere(userId, { except: keepId }, now);
  }

  /**
   * Revokes the user's live tokens (one, or all but one), re-sealing each row with its
   * revocation time, so clearing revoked_at by SQL makes the row fail its MAC (undoing it
   * needs a saved copy of the row from before the revocation).
   */
  private revokeWhere(userId: string, which: { only?: string; except?: string | null }, now: number): Promise<number> {
    return inTransaction(this.db, async (trx) => {
      let q = trx.selectFrom('api_tokens').select(['id', 'user_id', 'token_hash', 'expires_at']).where('user_id', '=', userId).where('revoked_at', 'is', null);
      if (which.only !== undefined) q = q.where('id', '=', which.only);
      if (which.except) q = q.where('id', '!=', which.except);
      const rows = await q.execute();
      let n = 0;
      for (const r of rows) {
        const mac = this.keys.rowMac('api_tokens', tokenMacFields({ id: r.id, userId: r.user_id, tokenHash: r.token_hash, expiresAt: r.expires_at, revokedAt: now }));
        const u = await trx.updateTable('api_tokens').set({ revoked_at: now, row_mac: mac }).where('id', '=', r.id).where('revoked_at', 'is', null).executeTakeFirst();
        n += Number(u.numUpdatedRows);
      }
      return n;
    });
  }
}
