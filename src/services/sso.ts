/**
 * Single sign-on with an OpenID Connect provider, through openid-client (a maintained,
 * certified relying-party library): authorization code flow with PKCE, state and nonce, and
 * the ID token validated by the library (issuer, audience, expiry, nonce, and its signature
 * against the provider's JWKS: enableNonRepudiationChecks, since the library skips the
 * signature of a token-endpoint ID token by default).
 *
 * Accounts are linked by (issuer, subject) in `oidc_identities`, never by email: an
 * identity nobody linked yet either gets a new user (OIDC_AUTO_CREATE) or is refused. A local
 * user links an identity only while signed in (from /account), so knowing someone's email at
 * the provider gives no way into their account here.
 */
import { randomBytes } from 'node:crypto';
import * as oidc from 'openid-client';
import type { Config, OidcConfig } from '../config.js';
import type { Database } from '../db/database.js';
import { OidcIdentitiesRepo, type IdentityRow } from '../db/oidc-identities.js';
import { SsoPolicyRepo } from '../db/sso-policy.js';
import { UsersRepo, type Role, type UserRow } from '../db/users.js';
import { AppError } from '../errors.js';
import type { AccountsService, IntegrityFailure } from './accounts.js';
import { newId } from './ids.js';
import type { IntegrityKeys } from './integrity.js';
import type { PasswordHasher } from './passwords.js';

/** What the browser's session keeps between the redirect to the provider and the callback (single use). */
export interface PendingSso {
  state: string;
  nonce: string;
  verifier: string;
  /** 'login': sign in; 'link': link to the signed-in user `uid`. */
  mode: 'login' | 'link';
  uid?: string;
  next: string;
  startedAt: number;
}

/** The validated facts of one provider sign-in. */
export interface SsoIdentity {
  issuer: string;
  subject: string;
  email: string | null;
  /** The ID token's claims (validated), for the admin claim and the username. */
  claims: Record<string, unknown>;
}

/** Why an SSO sign-in was refused: a stable reason for the audit log and the page's text. */
export type SsoRefusal = 'state' | 'provider_error' | 'token_invalid' | 'domain' | 'not_linked' | 'disabled' | 'unavailable' | 'integrity' | 'already_linked';

/** An SSO sign-in refused for `reason`; `detail` is safe to log (no token, no code). */
export class SsoError extends Error {
  constructor(
    readonly reason: SsoRefusal,
    readonly detail: string,
  ) {
    super(detail);
    this.name = 'SsoError';
  }
}

export interface SsoDeps {
  oidc: OidcConfig;
  publicUrl: string;
  db: Database;
  integrity: IntegrityKeys;
  accounts: AccountsService;
  hasher: PasswordHasher;
  onIntegrityFailure?: (f: IntegrityFailure) => unknown;
  now?: () => number;
}

/** How long a started sign-in may take at the provider before its state is refused. */
export const PENDING_MAX_MS = 10 * 60 * 1000;

/** RFC 8176 amr values that mean a second factor was used (mfa itself, a one-time code, a hardware or software key). */
const MFA_AMR = new Set(['mfa', 'otp', 'hwk', 'swk']);

const USERNAME_CHARS = /[^A-Za-z0-9._-]+/g;

export class SsoService {
  private discovered: Promise<oidc.Configuration> | undefined;
  private readonly now: () => number;
  readonly identities: OidcIdentitiesRepo;
  private readonly policy: SsoPolicyRepo;

  constructor(private readonly deps: SsoDeps) {
    this.now = deps.now ?? Date.now;
    this.identities = new OidcIdentitiesRepo(deps.db.kysely, deps.integrity);
    this.policy = new SsoPolicyRepo(deps.db.kysely, deps.integrity);
  }

  /** The admin's switch: the admin page's stored choice, else OIDC_DISABLE_LOCAL_PASSWORDS. */
  async localPasswordsDisabled(): Promise<boolean> {
    return (await this.policy.localPasswordsDisabled()) ?? this.deps.oidc.disableLocalPasswords;
  }

  /** Stores the admin page's choice (it then wins over the setting, on every instance). */
  setLocalPasswordsDisabled(disable: boolean): Promise<void> {
    return this.policy.set(disable, this.now());
  }

  /** The provider's name for the button. */
  get name(): string {
    return this.deps.oidc.name;
  }

  /**
   * The provider's configuration from its discovery document, fetched on first use (so a
   * provider that is down does not stop the server) and kept; a failed fetch is retried next time.
   */
  private configuration(): Promise<oidc.Configuration> {
    if (!this.discovered) {
      const o = this.deps.oidc;
      const insecure = new URL(o.issuer).protocol === 'http:';
      this.discovered = oidc
        .discovery(new URL(o.issuer), o.clientId, { client_secret: o.clientSecret, redirect_uris: [o.redirectUri], response_types: ['code'] }, oidc.ClientSecretBasic(o.clientSecret), {
          // Signature check of the ID token against the provider's JWKS (see the file comment);
          // plain HTTP only for a loopback issuer (config.ts refuses any other).
          execute: insecure ? [oidc.enableNonRepudiationChecks, oidc.allowInsecureRequests] : [oidc.enableNonRepudiationChecks],
          timeout: 10,
        })
        .catch((err: unknown) => {
          this.discovered = undefined;
          throw err;
        });
    }
    return this.discovered;
  }

  private async configured(): Promise<oidc.Configuration> {
    try {
      return await this.configuration();
    } catch (err) {
      throw new SsoError('unavailable', `discovery failed: ${errorCode(err)}`);
    }
  }

  /** Starts a sign-in: the provider URL to send the browser to and what the session must keep. */
  async start(mode: 'login' | 'link', next: string, uid?: string): Promise<{ url: string; pending: PendingSso }> {
    const config = await this.configured();
    const pending: PendingSso = {
      state: oidc.randomState(),
      nonce: oidc.randomNonce(),
      verifier: oidc.randomPKCECodeVerifier(),
      mode,
      ...(uid ? { uid } : {}),
      next,
      startedAt: this.now(),
    };
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: this.deps.oidc.redirectUri,
      scope: this.deps.oidc.scopes,
      response_type: 'code',
      state: pending.state,
      nonce: pending.nonce,
      code_challenge: await oidc.calculatePKCECodeChallenge(pending.verifier),
      code_challenge_method: 'S256',
    });
    return { url: url.href, pending };
  }

  /**
   * Completes a sign-in from the callback's query string: checks the state against the
   * pending one, exchanges the code (with the PKCE verifier) and validates the ID token.
   * The caller has already removed `pending` from the session (single use).
   */
  async finish(query: string, pending: PendingSso | undefined): Promise<SsoIdentity> {
    if (!pending || typeof pending.state !== 'string' || this.now() - pending.startedAt > PENDING_MAX_MS) {
      throw new SsoError('state', 'no sign-in in progress in this browser (expired, already used, or started elsewhere)');
    }
    const params = new URLSearchParams(query);
    if (params.get('state') !== pending.state) throw new SsoError('state', 'the state does not match the sign-in in progress');
    const config = await this.configured();
    const current = new URL(this.deps.oidc.redirectUri);
    current.search = params.toString();
    let tokens;
    try {
      tokens = await oidc.authorizationCodeGrant(config, current, { pkceCodeVerifier: pending.verifier, expectedState: pending.state, expectedNonce: pending.nonce, idTokenExpected: true });
    } catch (err) {
      // The provider's own refusal (error=access_denied, ...) versus a response that fails validation.
      if (err instanceof oidc.AuthorizationResponseError) throw new SsoError('provider_error', `the provider refused: ${err.error}`);
      throw new SsoError('token_invalid', `ID token or token response refused: ${errorCode(err)}`);
    }
    const claims = tokens.claims();
    if (!claims) throw new SsoError('token_invalid', 'no ID token');
    const email = typeof claims.email === 'string' ? claims.email.toLowerCase() : null;
    return { issuer: claims.iss, subject: claims.sub, email, claims: claims as Record<string, unknown> };
  }

  /**
   * True when nobody knows this user's local password: the account was created by a sign-in
   * here (its identity row is as old as the user, and a JIT password is random) and no admin
   * has set one since (passwordResetAt). The account page then offers no "current password" form.
   */
  async noKnownPassword(user: UserRow): Promise<boolean> {
    if (user.passwordResetAt !== null) return false;
    return (await this.identities.listForUser(user.id)).some((r) => r.createdAt === user.createdAt);
  }

  /**
   * True when this sign-in counts as both factors: only with OIDC_TRUST_PROVIDER_MFA on, and
   * only when the validated ID token says the provider checked a second factor (amr names one,
   * or acr is a configured OIDC_MFA_ACR value). Anything else gets the local second step.
   */
  providerProvedMfa(id: SsoIdentity): boolean {
    const c = this.deps.oidc;
    if (!c.trustProviderMfa) return false;
    const amr = Array.isArray(id.claims.amr) ? id.claims.amr.filter((v): v is string => typeof v === 'string') : [];
    if (amr.some((m) => MFA_AMR.has(m))) return true;
    return typeof id.claims.acr === 'string' && c.mfaAcr.includes(id.claims.acr);
  }

  /** True when `email` may sign in under OIDC_ALLOWED_DOMAINS (a verified email is needed when domains are set). */
  private domainAllowed(id: SsoIdentity): boolean {
    const domains = this.deps.oidc.allowedDomains;
    if (domains.length === 0) return true;
    // An email the provider says it has not verified proves nothing about the domain.
    if (!id.email || id.claims.email_verified === false) return false;
    const domain = id.email.slice(id.email.lastIndexOf('@') + 1);
    return domains.includes(domain);
  }

  /** The role the admin claim gives, or null when no admin claim is configured. */
  private claimedRole(id: SsoIdentity): Role | null {
    const c = this.deps.oidc.adminClaim;
    if (!c) return null;
    const v = id.claims[c.name];
    const has = Array.isArray(v) ? v.some((x) => String(x) === c.value) : v !== undefined && v !== null && String(v) === c.value;
    return has ? 'admin' : 'user';
  }

  /**
   * The user an identity signs in as: the linked one, or a new one (OIDC_AUTO_CREATE). Refuses
   * a disallowed domain, an unknown identity without JIT, a disabled user and a row that fails
   * its MAC. With an admin claim configured the role follows it at every sign-in (never
   * demoting the last active admin).
   */
  async signInAs(id: SsoIdentity): Promise<{ user: UserRow; created: boolean }> {
    if (!this.domainAllowed(id)) throw new SsoError('domain', 'the email domain is not allowed to sign in');
    let row = await this.identities.byIdentity(id.issuer, id.subject);
    let created = false;
    if (!row) {
      if (!this.deps.oidc.autoCreate) throw new SsoError('not_linked', 'no account is linked to this identity and creation on first sign-in is off');
      const made = await this.createFor(id);
      row = made.row;
      created = made.created;
    }
    if (!row.intact) {
      await this.deps.onIntegrityFailure?.({ table: 'oidc_identities', id: `${row.issuer} ${row.subject}`.slice(0, 200), userId: row.userId });
      throw new SsoError('integrity', 'the linked identity failed verification');
    }
    let user = await this.deps.accounts.users.byId(row.userId);
    if (!user || !this.deps.accounts.users.intact(user)) {
      if (user) await this.deps.onIntegrityFailure?.({ table: 'users', id: user.id, userId: user.id });
      throw new SsoError('integrity', 'the linked user is missing or failed verification');
    }
    if (user.disabled) throw new SsoError('disabled', 'the linked account is disabled');
    const role = this.claimedRole(id);
    if (role && role !== user.role) {
      try {
        user = (await this.deps.accounts.adminUpdate(user.id, { role })).user;
      } catch (err) {
        // The last active admin stays one (the provider cannot lock everyone out).
        if (!(err instanceof AppError && err.code === 'conflict')) throw err;
      }
    }
    await this.identities.touch(id.issuer, id.subject, id.email, this.now());
    return { user, created };
  }

  /**
   * Links an identity to the signed-in user. Refuses an identity linked to another user
   * (accounts are never merged) and a disallowed domain; linking the same one again is a no-op.
   */
  async link(user: UserRow, id: SsoIdentity): Promise<{ linked: boolean }> {
    if (!this.domainAllowed(id)) throw new SsoError('domain', 'the email domain is not allowed to sign in');
    const existing = await this.identities.byIdentity(id.issuer, id.subject);
    if (existing) {
      if (existing.userId === user.id && existing.intact) return { linked: false };
      throw new SsoError('already_linked', 'this identity is linked to another account');
    }
    try {
      await this.identities.insert({ issuer: id.issuer, subject: id.subject, userId: user.id, email: id.email, now: this.now() });
    } catch (err) {
      // Linked by a concurrent request (primary key): look again.
      const again = await this.identities.byIdentity(id.issuer, id.subject);
      if (again?.userId === user.id) return { linked: false };
      if (again) throw new SsoError('already_linked', 'this identity is linked to another account');
      throw err;
    }
    return { linked: true };
  }

  /** The identities linked to a user (for /account). */
  listFor(userId: string): Promise<IdentityRow[]> {
    return this.identities.listForUser(userId);
  }

  /**
   * Creates the user and its identity in one transaction. The username comes from the
   * provider's preferred_username or the email's local part, with a suffix when taken: an
   * existing local user of that name is never taken over. The password is a random one nobody
   * knows (the row keeps a real argon2id hash, so password checks cost the same as for anyone).
   */
  private async createFor(id: SsoIdentity): Promise<{ row: IdentityRow; created: boolean }> {
    const passwordHash = await this.deps.hasher.hash(randomBytes(32).toString('base64url'));
    const base = usernameBase(id);
    const role = this.claimedRole(id) ?? 'user';
    const now = this.now();
    try {
      await this.deps.db.transaction(async (trx) => {
        const users = new UsersRepo(trx, this.deps.integrity);
        const identities = new OidcIdentitiesRepo(trx, this.deps.integrity);
        // Another request (another instance) may have created it meanwhile.
        if (await identities.byIdentity(id.issuer, id.subject)) return;
        let username: string | null = null;
        for (let n = 1; n <= 100 && username === null; n++) {
          const candidate = n === 1 ? base : `${base.slice(0, 56)}-${n}`;
          if (!(await users.byUsername(candidate))) username = candidate;
        }
        if (username === null) username = `${base.slice(0, 40)}-${randomBytes(6).toString('hex')}`;
        const user: UserRow = { id: newId(), username, passwordHash, role, disabled: false, quotaBytes: null, passwordResetAt: null, createdAt: now, updatedAt: now };
        await users.insert(user);
        await identities.insert({ issuer: id.issuer, subject: id.subject, userId: user.id, email: id.email, now });
      });
    } catch (err) {
      // A concurrent first sign-in of the same identity won the primary key: use its row.
      const row = await this.identities.byIdentity(id.issuer, id.subject);
      if (row) return { row, created: false };
      throw err;
    }
    const row = await this.identities.byIdentity(id.issuer, id.subject);
    if (!row) throw new Error('identity row missing after creation');
    return { row, created: row.createdAt === now };
  }

  /**
   * The provider's RP-initiated logout URL (client_id and the post-logout redirect, no token
   * kept for an id_token_hint), or null when the provider has no end_session_endpoint or
   * cannot be reached.
   */
  async endSessionUrl(): Promise<string | null> {
    let config;
    try {
      config = await this.configuration();
    } catch {
      return null;
    }
    if (!config.serverMetadata().end_session_endpoint) return null;
    return oidc.buildEndSessionUrl(config, { post_logout_redirect_uri: `${this.deps.publicUrl}/login?msg=signed-out` }).href;
  }
}

/** A username from the provider's claims: 1-64 of the allowed characters, else "user". */
function usernameBase(id: SsoIdentity): string {
  const preferred = typeof id.claims.preferred_username === 'string' ? id.claims.preferred_username : '';
  const fromEmail = id.email ? id.email.slice(0, id.email.indexOf('@')) : '';
  const raw = (preferred.includes('@') ? preferred.slice(0, preferred.indexOf('@')) : preferred) || fromEmail;
  const clean = raw.replace(USERNAME_CHARS, '').replace(/^[.-]+/, '').slice(0, 60);
  return clean || 'user';
}

/** A library error's stable code (or its name), for logs: never its full message (it may quote a response). */
function errorCode(err: unknown): string {
  const e = err as { code?: unknown; name?: unknown; error?: unknown };
  if (typeof e?.code === 'string') return e.code;
  if (typeof e?.error === 'string') return e.error;
  return typeof e?.name === 'string' ? e.name : 'unknown';
}

/** Builds the SSO service when OIDC is configured. */
export function ssoFor(config: Config, deps: Omit<SsoDeps, 'oidc' | 'publicUrl'>): SsoService | null {
  if (!config.oidc || !config.publicUrl) return null;
  return new SsoService({ ...deps, oidc: config.oidc, publicUrl: config.publicUrl });
}
