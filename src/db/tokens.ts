/**
 * Repository for API tokens. Only keyed hashes of tokens are stored (services/integrity.ts:
 * HMAC(k_lookup, SHA-256(token))), and each row carries a MAC over its user and expiry.
 */
import { tokenMacFields, type IntegrityKeys } from '../services/integrity.js';
import { stmt, type Db } from './database.js';

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

const COLUMNS = 'id, user_id, name, created_at, expires_at, last_used_at, revoked_at';

export class TokensRepo {
  constructor(
    private readonly db: Db,
    private readonly keys: IntegrityKeys,
  ) {}

  /** Inserts a token row with its MAC; `tokenHash` is the keyed lookup value of the token. */
  insert(t: TokenRow & { tokenHash: Buffer }): void {
    stmt(this.db, 
        `INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at, row_mac)
         VALUES (@id, @userId, @name, @tokenHash, @createdAt, @expiresAt, @rowMac)`,
      )
      .run({ ...t, rowMac: this.keys.rowMac('api_tokens', tokenMacFields(t)) });
  }

  /**
   * The live (unrevoked, unexpired) token with this lookup value, or undefined; `intact` is
   * false when the row's user or expiry was changed without the key (the caller refuses it).
   */
  activeByHash(tokenHash: Buffer, now: number): { row: TokenRow; intact: boolean } | undefined {
    const r = stmt(this.db, `SELECT ${COLUMNS}, row_mac FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ?`)
      .get(tokenHash, now) as (RawToken & { row_mac: Buffer | null }) | undefined;
    if (!r) return undefined;
    const row = toRow(r);
    return { row, intact: this.keys.rowMacMatches('api_tokens', tokenMacFields({ ...row, tokenHash }), r.row_mac) };
  }

  /** Records use, at most once a minute per token to keep writes off the hot path. */
  touch(id: string, now: number): void {
    stmt(this.db, 'UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)')
      .run(now, id, now - 60_000);
  }

  /** The user's tokens that are not revoked, newest first. */
  listForUser(userId: string): TokenRow[] {
    return (
      stmt(this.db, `SELECT ${COLUMNS} FROM api_tokens WHERE user_id = ? AND revoked_at IS NULL ORDER BY created_at DESC, id`)
        .all(userId) as RawToken[]
    ).map(toRow);
  }

  /** Revokes one of the user's tokens; false if there is no such live token. */
  revoke(userId: string, id: string, now: number): boolean {
    return this.revokeWhere('id = ? AND user_id = ?', [id, userId], now) === 1;
  }

  /** Revokes all of a user's tokens except `keepId`; returns how many were revoked. */
  revokeAllExcept(userId: string, keepId: string | null, now: number): number {
    return this.revokeWhere('user_id = ? AND id IS NOT ?', [userId, keepId], now);
  }

  /**
   * Revokes live tokens matching `where`, re-sealing each row with its revocation time, so
   * clearing revoked_at by SQL makes the row fail its MAC (undoing it needs a saved copy of
   * the row from before the revocation).
   */
  private revokeWhere(where: string, params: unknown[], now: number): number {
    return this.db.transaction(() => {
      const rows = stmt(this.db, `SELECT id, user_id, token_hash, expires_at FROM api_tokens WHERE ${where} AND revoked_at IS NULL`).all(...params) as {
        id: string;
        user_id: string;
        token_hash: Buffer;
        expires_at: number;
      }[];
      const set = stmt(this.db, 'UPDATE api_tokens SET revoked_at = ?, row_mac = ? WHERE id = ? AND revoked_at IS NULL');
      let n = 0;
      for (const r of rows) {
        const mac = this.keys.rowMac('api_tokens', tokenMacFields({ id: r.id, userId: r.user_id, tokenHash: r.token_hash, expiresAt: r.expires_at, revokedAt: now }));
        n += set.run(now, mac, r.id).changes;
      }
      return n;
    })();
  }
}
