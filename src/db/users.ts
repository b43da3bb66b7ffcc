/**
 * Repository for the users table. Every write also writes the row's integrity MAC (over what
 * grants power: see services/integrity.ts userMacFields), and `intact()` checks a row read
 * here against the MAC read with it.
 */
import { userMacFields, type IntegrityKeys } from '../services/integrity.js';
import { AppError } from '../errors.js';
import { stmt, type Db } from './database.js';

export type Role = 'admin' | 'user';

export interface UserRow {
  id: string;
  username: string;
  passwordHash: string;
  role: Role;
  disabled: boolean;
  quotaBytes: number | null;
  /** When an administrator last set the password; null once the user set their own. */
  passwordResetAt: number | null;
  createdAt: number;
  updatedAt: number;
}

interface RawUser {
  id: string;
  username: string;
  password_hash: string;
  role: Role;
  disabled: number;
  quota_bytes: number | null;
  password_reset_at: number | null;
  created_at: number;
  updated_at: number;
  integrity_mac: Buffer | null;
}

const toRow = (r: RawUser | undefined): UserRow | undefined =>
  r && {
    id: r.id,
    username: r.username,
    passwordHash: r.password_hash,
    role: r.role,
    disabled: r.disabled === 1,
    quotaBytes: r.quota_bytes,
    passwordResetAt: r.password_reset_at ?? null,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };

export class UsersRepo {
  /** The MAC each row object was read with (rows built elsewhere have none, so are never intact). */
  private readonly macs = new WeakMap<UserRow, Buffer | null>();

  constructor(
    private readonly db: Db,
    private readonly keys: IntegrityKeys,
  ) {}

  private read(r: RawUser | undefined): UserRow | undefined {
    const row = toRow(r);
    if (row) this.macs.set(row, r!.integrity_mac);
    return row;
  }

  /** True when this row (as read by this repository) carries a valid MAC: nobody edited it without the key. */
  intact(u: UserRow): boolean {
    return this.keys.rowMacMatches('users', userMacFields(u), this.macs.get(u));
  }

  private macOf(u: UserRow): Buffer {
    return this.keys.rowMac('users', userMacFields(u));
  }

  /** Number of users; setup is open only while this is 0. */
  count(): number {
    return (stmt(this.db, 'SELECT count(*) AS n FROM users').get() as { n: number }).n;
  }

  byId(id: string): UserRow | undefined {
    return this.read(stmt(this.db, 'SELECT * FROM users WHERE id = ?').get(id) as RawUser | undefined);
  }

  byUsername(username: string): UserRow | undefined {
    return this.read(stmt(this.db, 'SELECT * FROM users WHERE username = ?').get(username) as RawUser | undefined);
  }

  /** Deletes the user row (tokens go with it); false when there is no such user. */
  delete(id: string): boolean {
    return stmt(this.db, 'DELETE FROM users WHERE id = ?').run(id).changes === 1;
  }

  list(): UserRow[] {
    return (stmt(this.db, 'SELECT * FROM users ORDER BY created_at, id').all() as RawUser[]).map((r) => this.read(r)!);
  }

  insert(u: UserRow): void {
    stmt(this.db, 
        `INSERT INTO users (id, username, password_hash, role, disabled, quota_bytes, created_at, updated_at, integrity_mac)
         VALUES (@id, @username, @passwordHash, @role, @disabled, @quotaBytes, @createdAt, @updatedAt, @mac)`,
      )
      .run({ ...u, disabled: u.disabled ? 1 : 0, mac: this.macOf(u) });
  }

  /**
   * Applies the given changes; returns false when the user does not exist. Refuses (AppError
   * integrity_error) to change a row whose MAC does not verify: re-sealing it would bless
   * whatever a database writer put there.
   */
  update(id: string, changes: Partial<Pick<UserRow, 'passwordHash' | 'role' | 'disabled' | 'quotaBytes' | 'passwordResetAt'>>, now: number): boolean {
    return this.db.transaction(() => {
      const current = this.byId(id);
      if (!current) return false;
      if (!this.intact(current)) throw new AppError('integrity_error', 'this account failed verification; restore it from a backup');
      const next: UserRow = {
        ...current,
        passwordHash: changes.passwordHash ?? current.passwordHash,
        role: changes.role ?? current.role,
        disabled: changes.disabled ?? current.disabled,
        quotaBytes: changes.quotaBytes !== undefined ? changes.quotaBytes : current.quotaBytes,
        passwordResetAt: changes.passwordResetAt !== undefined ? changes.passwordResetAt : current.passwordResetAt,
        updatedAt: now,
      };
      // Compare-and-swap on the MAC read above, so a concurrent writer cannot slip in between.
      return (
        stmt(
          this.db,
          `UPDATE users SET password_hash = @passwordHash, role = @role, disabled = @disabled, quota_bytes = @quotaBytes,
             password_reset_at = @passwordResetAt, updated_at = @updatedAt, integrity_mac = @mac WHERE id = @id AND integrity_mac = @oldMac`,
        ).run({ ...next, disabled: next.disabled ? 1 : 0, mac: this.macOf(next), oldMac: this.macs.get(current) }).changes === 1
      );
    })();
  }
}
