/**
 * Repository for the users table. Every write also writes the row's integrity MAC (over what
 * grants power: see services/integrity.ts userMacFields), and `intact()` checks a row read
 * here against the MAC read with it.
 */
import { userMacFields, type IntegrityKeys } from '../services/integrity.js';
import { AppError } from '../errors.js';
import { sql } from './kysely.js';
import { inTransaction, isPostgres, type Executor } from './database.js';

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

/**
 * The MAC each row object was read with (rows built elsewhere have none, so are never intact).
 * Shared by every repository instance: one on a transaction reads rows another checks.
 */
const macs = new WeakMap<UserRow, Buffer | null>();

export class UsersRepo {

  constructor(
    private readonly db: Executor,
    private readonly keys: IntegrityKeys,
  ) {}

  private read(r: RawUser | undefined): UserRow | undefined {
    const row = toRow(r);
    if (row) macs.set(row, r!.integrity_mac);
    return row;
  }

  /** True when this row (as read by this repository) carries a valid MAC: nobody edited it without the key. */
  intact(u: UserRow): boolean {
    return this.keys.rowMacMatches('users', userMacFields(u), macs.get(u));
  }

  private macOf(u: UserRow): Buffer {
    return this.keys.rowMac('users', userMacFields(u));
  }

  /** Number of users; setup is open only while this is 0. */
  async count(): Promise<number> {
    const r = await this.db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  async byId(id: string): Promise<UserRow | undefined> {
    return this.read(await this.db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst());
  }

  async byUsername(username: string): Promise<UserRow | undefined> {
    // SQLite's column is COLLATE NOCASE (ASCII case ignored); PostgreSQL's unique index is on lower(username).
    const q = this.db.selectFrom('users').selectAll();
    const r = isPostgres(this.db)
      ? await q.where(sql<string>`lower(username)`, '=', sql<string>`lower(${username})`).executeTakeFirst()
      : await q.where('username', '=', username).executeTakeFirst();
    return this.read(r);
  }

  /** Deletes the user row (tokens go with it); false when there is no such user. */
  async delete(id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('users').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }

  async list(): Promise<UserRow[]> {
    const rows = await this.db.selectFrom('users').selectAll().orderBy('created_at').orderBy('id').execute();
    return rows.map((r) => this.read(r)!);
  }

  async insert(u: UserRow): Promise<void> {
    await this.db
      .insertInto('users')
      .values({
        id: u.id,
        username: u.username,
        password_hash: u.passwordHash,
        role: u.role,
        disabled: u.disabled ? 1 : 0,
        quota_bytes: u.quotaBytes,
        created_at: u.createdAt,
        updated_at: u.updatedAt,
        integrity_mac: this.macOf(u),
      })
      .execute();
  }

  /**
   * Applies the given changes; returns false when the user does not exist. Refuses (AppError
   * integrity_error) to change a row whose MAC does not verify: re-sealing it would bless
   * whatever a database writer put there.
   */
  update(id: string, changes: Partial<Pick<UserRow, 'passwordHash' | 'role' | 'disabled' | 'quotaBytes' | 'passwordResetAt'>>, now: number): Promise<boolean> {
    return inTransaction(this.db, async (trx) => {
      const repo = new UsersRepo(trx, this.keys);
      const current = await repo.byId(id);
      if (!current) return false;
      if (!repo.intact(current)) throw new AppError('integrity_error', 'this account failed verification; restore it from a backup');
      const next: UserRow = {
        ...current,
        passwordHash: changes.passwordHash ?? current.passwordHash,
        role: changes.role ?? current.role,
        disabled: changes.disabled ?? current.disabled,
        quotaBytes: changes.quotaBytes !== undefined ? changes.quotaBytes : current.quotaBytes,
        passwordResetAt: changes.passwordResetAt !== undefined ? changes.passwordResetAt : current.passwordResetAt,
        updatedAt: now,
      };
      const oldMac = macs.get(current);
      // Compare-and-swap on the MAC read above, so a concurrent writer cannot slip in between.
      const r = await trx
        .updateTable('users')
        .set({
          password_hash: next.passwordHash,
          role: next.role,
          disabled: next.disabled ? 1 : 0,
          quota_bytes: next.quotaBytes,
          password_reset_at: next.passwordResetAt,
          updated_at: next.updatedAt,
          integrity_mac: this.macOf(next),
        })
        .where('id', '=', id)
        .where('integrity_mac', '=', oldMac as Buffer)
        .executeTakeFirst();
      return Number(r.numUpdatedRows) === 1;
    });
  }
}
