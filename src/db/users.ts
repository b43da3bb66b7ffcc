/** Repository for the users table. */
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
  constructor(private readonly db: Db) {}

  /** Number of users; setup is open only while this is 0. */
  count(): number {
    return (stmt(this.db, 'SELECT count(*) AS n FROM users').get() as { n: number }).n;
  }

  byId(id: string): UserRow | undefined {
    return toRow(stmt(this.db, 'SELECT * FROM users WHERE id = ?').get(id) as RawUser | undefined);
  }

  byUsername(username: string): UserRow | undefined {
    return toRow(stmt(this.db, 'SELECT * FROM users WHERE username = ?').get(username) as RawUser | undefined);
  }

  /** Deletes the user row (tokens go with it); false when there is no such user. */
  delete(id: string): boolean {
    return stmt(this.db, 'DELETE FROM users WHERE id = ?').run(id).changes === 1;
  }

  list(): UserRow[] {
    return (stmt(this.db, 'SELECT * FROM users ORDER BY created_at, id').all() as RawUser[]).map((r) => toRow(r)!);
  }

  insert(u: UserRow): void {
    stmt(this.db, 
        `INSERT INTO users (id, username, password_hash, role, disabled, quota_bytes, created_at, updated_at)
         VALUES (@id, @username, @passwordHash, @role, @disabled, @quotaBytes, @createdAt, @updatedAt)`,
      )
      .run({ ...u, disabled: u.disabled ? 1 : 0 });
  }

  /** Applies the given changes; returns false when the user does not exist. */
  update(id: string, changes: Partial<Pick<UserRow, 'passwordHash' | 'role' | 'disabled' | 'quotaBytes' | 'passwordResetAt'>>, now: number): boolean {
    const sets: string[] = [];
    const params: Record<string, unknown> = { id, now };
    if (changes.passwordHash !== undefined) (sets.push('password_hash = @passwordHash'), (params.passwordHash = changes.passwordHash));
    if (changes.role !== undefined) (sets.push('role = @role'), (params.role = changes.role));
    if (changes.disabled !== undefined) (sets.push('disabled = @disabled'), (params.disabled = changes.disabled ? 1 : 0));
    if (changes.quotaBytes !== undefined) (sets.push('quota_bytes = @quotaBytes'), (params.quotaBytes = changes.quotaBytes));
    if (changes.passwordResetAt !== undefined) (sets.push('password_reset_at = @passwordResetAt'), (params.passwordResetAt = changes.passwordResetAt));
    sets.push('updated_at = @now');
    return stmt(this.db, `UPDATE users SET ${sets.join(', ')} WHERE id = @id`).run(params).changes === 1;
  }
}
