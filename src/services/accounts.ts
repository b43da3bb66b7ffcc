/** Users, passwords, the first-run setup and API tokens. */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type { Database, Executor, Trx } from '../db/database.js';
import { deriveSubkey, type Keyring } from '../crypto/keyring.js';
import { SharesRepo } from '../db/shares.js';
import { TokensRepo, type TokenRow } from '../db/tokens.js';
import { UsersRepo, type Role, type UserRow } from '../db/users.js';
import { AppError } from '../errors.js';
import { newId } from './ids.js';
import type { Notifier } from './notify/notifier.js';
import type { IntegrityKeys } from './integrity.js';
import { MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, type PasswordHasher } from './passwords.js';

export const TOKEN_PREFIX = 'sfs_';

/**
 * The one canonical form of a username, used by the user lookup and by every rate-limit key
 * (API and pages): trimmed, Unicode NFC, then lower-cased.
 */
export function normalizeUsername(name: string): string {
  return name.trim().normalize('NFC').toLowerCase();
}

/** A stored row that failed its integrity check (ids only: never a secret). */
export interface IntegrityFailure {
  table: 'users' | 'api_tokens' | 'shares' | 'sessions' | 'oidc_identities';
  id: string;
  /** The user the row concerns, when known. */
  userId: string | null;
}

export interface AccountsDeps {
  db: Database;
  /** Keys for token lookups and user/token row MACs (services/integrity.ts openIntegrity). */
  integrity: IntegrityKeys;
  /** Told about every row refused for a failed MAC (the app logs a warning and audits it). */
  onIntegrityFailure?: (f: IntegrityFailure) => unknown;
  hasher: PasswordHasher;
  tokenDefaultTtl: number;
  tokenMaxTtl: number;
  /** Writes "an admin changed your account" into the outbox, in the change's transaction. */
  notifier?: Notifier;
  /**
   * True when this user may not use a local password at all (OIDC_DISABLE_LOCAL_PASSWORDS and
   * a linked single sign-on identity): verifyPassword then refuses with sso_required.
   */
  passwordRefused?: (user: UserRow) => Promise<boolean>;
  now?: () => number;
}

/** What a caller authenticated by a token (or, with tokenId null, by a page session) is. */
export interface Principal {
  user: UserRow;
  tokenId: string | null;
}

export class AccountsService {
  readonly users: UsersRepo;
  readonly tokens: TokensRepo;
  private readonly now: () => number;

  /** The integrity keys this service seals and checks with (for services that share the database). */
  readonly integrity: IntegrityKeys;

  constructor(private readonly deps: AccountsDeps) {
    this.integrity = deps.integrity;
    this.users = new UsersRepo(deps.db.kysely, deps.integrity);
    this.tokens = new TokensRepo(deps.db.kysely, deps.integrity);
    this.now = deps.now ?? Date.now;
  }

  /** True while no user exists and the first admin can still be created. */
  async setupOpen(): Promise<boolean> {
    return (await this.users.count()) === 0;
  }

  /**
   * Creates a user. With `onlyIfNoUsers`, the existence check, `claim` (the setup code's
   * consumption) and the insert happen in one transaction in the shared database, so two
   * racing setup requests, on one instance or several, cannot both create an admin.
   */
  async createUser(
    username: string,
    password: string,
    role: Role,
    opts: { onlyIfNoUsers?: boolean; claim?: (trx: Trx) => Promise<void> } = {},
  ): Promise<UserRow> {
    checkPassword(password, username);
    const passwordHash = await this.deps.hasher.hash(password);
    const now = this.now();
    const user: UserRow = { id: newId(), username, passwordHash, role, disabled: false, quotaBytes: null, passwordResetAt: null, createdAt: now, updatedAt: now };
    await this.deps.db.transaction(async (trx) => {
      const users = new UsersRepo(trx, this.deps.integrity);
      if (opts.onlyIfNoUsers && (await users.count()) > 0) throw new AppError('setup_closed', 'setup has already been completed');
      // E.g. the setup code: used up in the same transaction, or nothing is created.
      await opts.claim?.(trx);
      if (await users.byUsername(username)) throw new AppError('conflict', `a user named "${username}" already exists`);
      await users.insert(user);
    });
    return user;
  }

  /**
   * True when the user row is intact (its MAC verifies). A failure is reported through
   * onIntegrityFailure; callers then refuse exactly as for a wrong credential.
   */
  private async intact(user: UserRow): Promise<boolean> {
    if (this.users.intact(user)) return true;
    // Awaited: the failure is on record before the caller answers.
    await this.deps.onIntegrityFailure?.({ table: 'users', id: user.id, userId: user.id });
    return false;
  }

  /**
   * The user a page session names, or undefined when there is no such user, it is disabled,
   * or its row failed its integrity check (the session is then ended).
   */
  async sessionUser(uid: string): Promise<UserRow | undefined> {
    const user = await this.users.byId(uid);
    if (!user || !(await this.intact(user)) || user.disabled) return undefined;
    return user;
  }

  /**
   * Checks a username and password; unknown users cost the same time as known ones, and a row
   * that fails its MAC never signs in. A disabled account is named as such only after its
   * correct password and an intact row (account_disabled); with a wrong one the answer is the
   * same as for any wrong password.
   */
  async verifyPassword(username: string, password: string): Promise<UserRow> {
    const user = await this.users.byUsername(normalizeUsername(username));
    const ok = user ? await this.deps.hasher.verify(user.passwordHash, password) : await this.deps.hasher.verifyNothing(password);
    // The MAC is checked after the hash, so a tampered row costs the same time as any other.
    if (!ok || !user || !(await this.intact(user))) throw new AppError('unauthorized', 'invalid username or password');
    if (user.disabled) throw new AppError('account_disabled', 'this account is disabled; ask an administrator');
    // Named only after the correct password, like a disabled account.
    if (await this.deps.passwordRefused?.(user)) throw new AppError('sso_required', 'this account signs in through single sign-on only; local passwords are disabled for it');
    return user;
  }

  /**
   * True while the user read before a (slow) password check is still enabled, intact and has
   * the same password hash: an admin may have disabled them or reset the password meanwhile,
   * revoking their tokens and sessions, and nothing issued after that may outlive it.
   */
  async stillValid(user: UserRow, users: UsersRepo = this.users): Promise<boolean> {
    const fresh = await users.byId(user.id);
    return !!fresh && !fresh.disabled && fresh.passwordHash === user.passwordHash && users.intact(fresh);
  }

  /** Issues an API token; the secret is returned only here and stored as its keyed hash. */
  async issueToken(user: UserRow, name: string, expiresInSeconds?: number): Promise<{ row: TokenRow; token: string }> {
    const ttl = expiresInSeconds ?? this.deps.tokenDefaultTtl;
    if (ttl > this.deps.tokenMaxTtl) {
      throw new AppError('validation_error', `expiresInSeconds: must be at most ${this.deps.tokenMaxTtl}`);
    }
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const now = this.now();
    const row: TokenRow = { id: newId(), userId: user.id, name, createdAt: now, expiresAt: now + ttl * 1000, lastUsedAt: null, revokedAt: null };
    await this.deps.db.transaction(async (trx) => {
      // The password was checked against a row read before the (slow) hash: an admin may have
      // disabled the user or reset the password meanwhile, and revoked their tokens. Read it
      // again in the insert's transaction, so a token never outlives that revocation.
      if (!(await this.stillValid(user, new UsersRepo(trx, this.deps.integrity)))) throw new AppError('unauthorized', 'invalid username or password');
      await new TokensRepo(trx, this.deps.integrity).insert({ ...row, tokenHash: this.deps.integrity.lookup(token) });
    });
    return { row, token };
  }

  /**
   * Resolves a bearer token to its user; disabled users, revoked and expired tokens fail, and
   * so do a token row or user row that fails its MAC (same 401, no details to the client).
   */
  async authenticateToken(token: string): Promise<Principal> {
    if (!token.startsWith(TOKEN_PREFIX) || token.length > 200) throw new AppError('unauthorized', 'invalid or expired token');
    const now = this.now();
    const found = await this.tokens.activeByHash(this.deps.integrity.lookup(token), now);
    if (found && !found.intact) await this.deps.onIntegrityFailure?.({ table: 'api_tokens', id: found.row.id, userId: found.row.userId });
    const row = found?.intact ? found.row : undefined;
    const user = row && (await this.users.byId(row.userId));
    if (!row || !user || !(await this.intact(user)) || user.disabled) throw new AppError('unauthorized', 'invalid or expired token');
    await this.tokens.touch(row.id, now);
    return { user, tokenId: row.id };
  }

  /** Changes a user's own password after checking the current one, and revokes their other tokens (all of them from a page). */
  async changePassword(p: Principal, currentPassword: string, newPassword: string): Promise<{ revokedTokens: number }> {
    const ok = await this.deps.hasher.verify(p.user.passwordHash, currentPassword);
    if (!ok) throw new AppError('forbidden', 'current password is wrong');
    checkPassword(newPassword, p.user.username);
    const hash = await this.deps.hasher.hash(newPassword);
    const now = this.now();
    return this.deps.db.transaction(async (trx) => {
      // The password is the user's own again: the admin-reset notice goes away.
      await new UsersRepo(trx, this.deps.integrity).update(p.user.id, { passwordHash: hash, passwordResetAt: null }, now);
      return { revokedTokens: await new TokensRepo(trx, this.deps.integrity).revokeAllExcept(p.user.id, p.tokenId, now) };
    });
  }

  /**
   * Admin changes to a user. A new password is hashed, all the user's tokens are revoked and the
   * reset is stamped on the row (the user is told). Disabling revokes the user's tokens and share
   * links for good: enabling the account again brings neither back (the owner makes new ones).
   */
  async adminUpdate(
    id: string,
    changes: { disabled?: boolean; role?: Role; password?: string; quotaBytes?: number | null },
  ): Promise<AdminUpdateResult> {
    const before = await this.users.byId(id);
    if (!before) throw new AppError('not_found', 'no such user');
    let passwordHash: string | undefined;
    if (changes.password !== undefined) {
      checkPassword(changes.password, before.username);
      passwordHash = await this.deps.hasher.hash(changes.password);
    }
    const now = this.now();
    const effects = await this.deps.db.transaction(async (trx) => {
        const users = new UsersRepo(trx, this.deps.integrity);
        const current = await users.byId(id);
        if (!current) throw new AppError('not_found', 'no such user');
        // Never leave the server without an active admin.
        const losesAdmin = current.role === 'admin' && (changes.role === 'user' || changes.disabled === true);
        if (losesAdmin) {
          // A row that fails its MAC is no admin: it could be a database writer's forgery.
          const admins = (await users.list()).filter((u) => u.role === 'admin' && !u.disabled && u.id !== id && users.intact(u));
          if (admins.length === 0) throw new AppError('conflict', 'cannot demote or disable the last active admin');
        }
        await users.update(
          id,
          { passwordHash, role: changes.role, disabled: changes.disabled, quotaBytes: changes.quotaBytes, passwordResetAt: passwordHash === undefined ? undefined : now },
          now,
        );
        let revokedTokens = 0;
        let revokedShares = 0;
        if (passwordHash !== undefined || changes.disabled === true) revokedTokens = await new TokensRepo(trx, this.deps.integrity).revokeAllExcept(id, null, now);
        if (changes.disabled === true) revokedShares = await new SharesRepo(trx, this.deps.integrity).revokeAllForOwner(id, now);
        // What changed, never the new password itself.
        const summary = [
          changes.disabled === true ? 'account disabled' : changes.disabled === false ? 'account enabled' : null,
          changes.role !== undefined ? `role set to ${changes.role}` : null,
          passwordHash !== undefined ? 'password reset by an administrator' : null,
          changes.quotaBytes !== undefined ? `storage quota set to ${changes.quotaBytes === null ? 'the default' : `${changes.quotaBytes} bytes`}` : null,
        ].filter(Boolean).join(', ');
        await this.deps.notifier?.emitIn(trx, {
          kind: 'accountChanged',
          type: 'account.changed',
          userId: id,
          data: { at: new Date(now).toISOString(), summary, disabled: changes.disabled, role: changes.role, passwordReset: passwordHash !== undefined, quotaBytes: changes.quotaBytes },
        });
        return { revokedTokens, revokedShares };
      });
    return { user: (await this.users.byId(id))!, ...effects };
  }
}

/** What an admin change did besides the row itself (for the audit log). */
export interface AdminUpdateResult {
  user: UserRow;
  revokedTokens: number;
  revokedShares: number;
}

/** True while the database has no user (for start-up, before the app and its keys exist). */
export async function setupOpenIn(db: Executor): Promise<boolean> {
  const r = await db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(r.n) === 0;
}

let commonList: { test(password: string): boolean } | undefined;

/** True for a password on the bundled list of the commonest ones (fxa-common-password-list, loaded on first use). */
export function isCommonPassword(password: string): boolean {
  commonList ??= createRequire(import.meta.url)('fxa-common-password-list') as { test(password: string): boolean };
  return commonList.test(password) || commonList.test(password.toLowerCase());
}

/**
 * Enforces the password policy (NIST 800-63B): at least 10 characters, not one of the
 * commonest passwords, and not the username itself (in any case).
 */
export function checkPassword(password: string, username?: string): void {
  checkPasswordLength(password);
  if (username !== undefined && normalizeUsername(password) === normalizeUsername(username)) {
    throw new AppError('validation_error', 'password: must not be the username');
  }
  if (isCommonPassword(password)) {
    throw new AppError('validation_error', 'password: is one of the most common passwords; choose another');
  }
}

/** The length rule alone (share link passwords: the common-password list is for accounts). */
export function checkPasswordLength(password: string): void {
  if (password.length < MIN_PASSWORD_LENGTH) {
    throw new AppError('validation_error', `password: must be at least ${MIN_PASSWORD_LENGTH} characters`);
  }
  if (password.length > MAX_PASSWORD_LENGTH) {
    throw new AppError('validation_error', `password: must be at most ${MAX_PASSWORD_LENGTH} characters`);
  }
}

const SETUP_MAC_LABEL = 'sfs/v1 setup code check';
const SETUP_SEAL_LABEL = 'sfs/v1 setup code seal';

/**
 * The one-time setup code, one for every instance on the database. The database holds a keyed
 * hash of it (HMAC under a sub-key of the master key, to check against) and the code sealed
 * (AES-256-GCM under another sub-key), so any instance can print it and nobody without the
 * master key can read it there. It is created once (insert if absent, one statement), and the
 * first-admin setup deletes it in the transaction that creates the admin, so it works once.
 */
export class SetupCode {
  private code: string | null = null;
  private bound: { db: Executor; keyring: Keyring } | undefined;

  constructor(
    /** The code this process proposes; the one stored first (by any instance) wins. */
    private readonly proposed: string | null,
    /** The 0600 file the code is written to, deleted when the code is used. */
    private readonly file?: string,
  ) {}

  /** Proposes a code with 160 bits from the CSPRNG (base64url). */
  static generate(file?: string): SetupCode {
    return new SetupCode(randomBytes(20).toString('base64url'), file);
  }

  /**
   * Stores the proposed code unless one is stored already (one statement), then reads back the
   * stored one, so every instance holds the same code; writes the file. Only while no user
   * exists; a stored code this key cannot open (a key changed before setup) is replaced.
   */
  async establish(db: Executor, keyring: Keyring, now = Date.now()): Promise<string | null> {
    this.bound = { db, keyring };
    this.code = null;
    if (!(await setupOpenIn(db))) return null;
    for (let attempt = 0; attempt < 3; attempt++) {
      const row = await db.selectFrom('setup_code').selectAll().where('id', '=', 1).executeTakeFirst();
      if (row) {
        const code = openCode(keyring, row);
        if (code !== null) {
          this.code = code;
          break;
        }
        // Compare-and-swap: only the unreadable row goes, not one another instance just stored.
        await db.deleteFrom('setup_code').where('id', '=', 1).where('sealed', '=', row.sealed).execute();
        continue;
      }
      if (this.proposed === null) return null;
      const key = keyring.active;
      const k = setupKeys(key.material);
      await db
        .insertInto('setup_code')
        .values({ id: 1, key_id: key.id, code_mac: macOf(k.mac, this.proposed), sealed: sealCode(k.seal, key.id, this.proposed), created_at: now })
        .onConflict((oc) => oc.column('id').doNothing())
        .execute();
    }
    if (this.code !== null && this.file) fs.writeFileSync(this.file, this.code + '\n', { mode: 0o600 });
    return this.code;
  }

  /** The code, to print at start-up (only while setup is open and after establish()). */
  reveal(): string | null {
    return this.code;
  }

  /** True when `candidate` is the stored code (constant time over keyed hashes); false once used by any instance. */
  async matches(candidate: string): Promise<boolean> {
    if (!this.bound) return false;
    const row = await this.bound.db.selectFrom('setup_code').selectAll().where('id', '=', 1).executeTakeFirst();
    return !!row && macMatches(this.bound.keyring, row, candidate);
  }

  /**
   * Inside the first-admin transaction: deletes the stored code if `candidate` is it, else
   * throws forbidden. Of two racing setups (on any instances) only one can delete it.
   */
  async consumeIn(trx: Executor, candidate: string): Promise<void> {
    if (!this.bound) throw new AppError('forbidden', 'wrong setup code (see the server log or data/setup-code)');
    const row = await trx.selectFrom('setup_code').selectAll().where('id', '=', 1).executeTakeFirst();
    if (!row || !macMatches(this.bound.keyring, row, candidate)) throw new AppError('forbidden', 'wrong setup code (see the server log or data/setup-code)');
    const r = await trx.deleteFrom('setup_code').where('id', '=', 1).where('code_mac', '=', row.code_mac).executeTakeFirst();
    if (Number(r.numDeletedRows) !== 1) throw new AppError('forbidden', 'wrong setup code (see the server log or data/setup-code)');
  }

  /** Forgets the code and deletes this process's file (after the setup that used it committed). */
  forget(): void {
    this.code = null;
    if (this.file) fs.rmSync(this.file, { force: true });
  }
}

function setupKeys(material: Buffer): { mac: Buffer; seal: Buffer } {
  return { mac: deriveSubkey(material, SETUP_MAC_LABEL), seal: deriveSubkey(material, SETUP_SEAL_LABEL) };
}

function macOf(key: Buffer, code: string): Buffer {
  return createHmac('sha256', key).update(code, 'utf8').digest();
}

function macMatches(keyring: Keyring, row: { key_id: string; code_mac: Buffer }, candidate: string): boolean {
  const key = keyring.get(row.key_id);
  if (!key) return false;
  const expected = macOf(setupKeys(key.material).mac, candidate);
  return row.code_mac.length === expected.length && timingSafeEqual(row.code_mac, expected);
}

/** AES-256-GCM: nonce || ciphertext || tag, bound to the key id. */
function sealCode(key: Buffer, keyId: string, code: string): Buffer {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.from(`${SETUP_SEAL_LABEL}|${keyId}`, 'utf8'));
  const ct = Buffer.concat([c.update(code, 'utf8'), c.final()]);
  return Buffer.concat([nonce, ct, c.getAuthTag()]);
}

/** The stored code, or null when its key is not loaded or the seal does not open. */
function openCode(keyring: Keyring, row: { key_id: string; sealed: Buffer }): string | null {
  const key = keyring.get(row.key_id);
  if (!key || row.sealed.length < 28) return null;
  try {
    const d = createDecipheriv('aes-256-gcm', setupKeys(key.material).seal, row.sealed.subarray(0, 12));
    d.setAAD(Buffer.from(`${SETUP_SEAL_LABEL}|${row.key_id}`, 'utf8'));
    d.setAuthTag(row.sealed.subarray(row.sealed.length - 16));
    return Buffer.concat([d.update(row.sealed.subarray(12, row.sealed.length - 16)), d.final()]).toString('utf8');
  } catch {
    return null;
  }
}
