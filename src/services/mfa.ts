/**
 * Second factors: TOTP (RFC 6238, otplib), single-use recovery codes and passkeys (WebAuthn,
 * @simplewebauthn/server), plus the REQUIRE_2FA policy and admin resets.
 *
 * What is stored how (docs/security.md):
 * - the TOTP secret sealed with AES-256-GCM under HKDF(master key, TOTP_LABEL) of the key named
 *   by key_id, bound to the user id (AAD), so it is never in the database in clear, cannot be
 *   moved to another user, and `sfs key rotate` rewraps it (rewrapTotpSecrets);
 * - the newest accepted time step, raised by one conditional UPDATE: a code works once, on
 *   whichever instance it arrives (replay guard);
 * - recovery codes as keyed hashes (HMAC under the integrity root's lookup key, which survives
 *   key rotation), each marked used by one conditional UPDATE;
 * - passkeys as public keys with a row MAC binding credential, user and key.
 *
 * The page flow that uses this ("password proven -> second factor -> full session") lives in
 * http/pages/second-step.ts, so a second sign-in method (OIDC) plugs into the same steps.
 */
import { createCipheriv, createDecipheriv, randomBytes, randomInt } from 'node:crypto';
import { generateSecret, generateURI, verify } from 'otplib';
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
  type AuthenticationResponseJSON,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
} from '@simplewebauthn/server';
import { deriveSubkey, type Keyring, type MasterKey } from '../crypto/keyring.js';
import type { Database } from '../db/database.js';
import { MfaNoticesRepo } from '../db/mfa-notices.js';
import { PasskeysRepo, type PasskeyRow } from '../db/mfa-passkeys.js';
import { MfaPolicyRepo, type TwoFactorPolicy } from '../db/mfa-policy.js';
import { RecoveryCodesRepo } from '../db/mfa-recovery-codes.js';
import { TotpRepo } from '../db/mfa-totp.js';
import type { UserRow } from '../db/users.js';
import { AppError } from '../errors.js';
import type { IntegrityKeys } from './integrity.js';

export type { TwoFactorPolicy } from '../db/mfa-policy.js';

const TOTP_LABEL = 'sfs/v1 totp secret';
const PERIOD = 30;
export const RECOVERY_CODE_COUNT = 10;
const RECOVERY_ALPHABET = 'abcdefghjkmnpqrstuvwxyz23456789';

/** Which factor proved a second step. */
export type FactorMethod = 'totp' | 'recovery' | 'passkey';

/** Where WebAuthn runs: the relying party id (a host name) and the page origin. */
export interface RelyingParty {
  id: string;
  origin: string;
}

/** The relying party for a public base URL (PUBLIC_URL, else the request's own origin). */
export function relyingPartyOf(base: string): RelyingParty {
  const u = new URL(base);
  return { id: u.hostname, origin: u.origin };
}

export interface MfaDeps {
  db: Database;
  keyring: Keyring;
  integrity: IntegrityKeys;
  /** REQUIRE_2FA from the configuration; the admin page's switch overrides it once set. */
  requireDefault: TwoFactorPolicy;
  /** Shown in authenticator apps and passkey prompts. */
  issuer?: string;
  now?: () => number;
}

/** A summary of the user's factors for the account page. */
export interface FactorSummary {
  totp: boolean;
  passkeys: PasskeyRow[];
  recoveryRemaining: number;
}

function totpKey(key: MasterKey): Buffer {
  return deriveSubkey(key.material, TOTP_LABEL);
}

function aad(userId: string, keyId: string): Buffer {
  return Buffer.from(`${TOTP_LABEL}|${userId}|${keyId}`, 'utf8');
}

/** Seals a TOTP secret for a user under a master key's TOTP sub-key: nonce || ciphertext || tag. */
export function sealTotp(key: MasterKey, userId: string, secret: string): Buffer {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', totpKey(key), nonce);
  c.setAAD(aad(userId, key.id));
  const ct = Buffer.concat([c.update(secret, 'utf8'), c.final()]);
  return Buffer.concat([nonce, ct, c.getAuthTag()]);
}

/** Opens a sealed TOTP secret; throws when the key is wrong or the row was altered or moved. */
export function openTotp(key: MasterKey, userId: string, sealed: Buffer): string {
  const d = createDecipheriv('aes-256-gcm', totpKey(key), sealed.subarray(0, 12));
  d.setAAD(aad(userId, key.id));
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]).toString('utf8');
}

/** Rewraps every TOTP secret not under the active key (for `sfs key rotate`); returns how many moved and which failed. */
export async function rewrapTotpSecrets(db: Database, keyring: Keyring): Promise<{ rewrapped: number; failed: { id: string; reason: string }[] }> {
  const repo = new TotpRepo(db.kysely);
  const active = keyring.active;
  const out = { rewrapped: 0, failed: [] as { id: string; reason: string }[] };
  for (const row of await repo.notUnder(active.id)) {
    const old = keyring.get(row.keyId);
    if (!old) {
      out.failed.push({ id: `totp:${row.userId}`, reason: `key ${row.keyId} is not loaded` });
      continue;
    }
    let secret: string;
    try {
      secret = openTotp(old, row.userId, row.sealed);
    } catch {
      out.failed.push({ id: `totp:${row.userId}`, reason: 'sealed TOTP secret does not open (row altered?)' });
      continue;
    }
    if (await repo.rewrap(row.userId, row.keyId, row.sealed, active.id, sealTotp(active, row.userId, secret))) out.rewrapped++;
  }
  return out;
}

/** Normalises a typed recovery code: case, spaces and hyphens do not matter. */
function normaliseRecovery(code: string): string {
  return code.toLowerCase().replace(/[\s-]/g, '');
}

/** TOTP, recovery codes, passkeys and the 2FA policy, over the shared database. */
export class MfaService {
  readonly totp: TotpRepo;
  readonly recovery: RecoveryCodesRepo;
  readonly passkeys: PasskeysRepo;
  readonly notices: MfaNoticesRepo;
  readonly policyRepo: MfaPolicyRepo;
  private readonly now: () => number;
  private readonly issuer: string;

  constructor(private readonly deps: MfaDeps) {
    const k = deps.db.kysely;
    this.totp = new TotpRepo(k);
    this.recovery = new RecoveryCodesRepo(k);
    this.passkeys = new PasskeysRepo(k, deps.integrity);
    this.notices = new MfaNoticesRepo(k);
    this.policyRepo = new MfaPolicyRepo(k);
    this.now = deps.now ?? Date.now;
    this.issuer = deps.issuer ?? 'Secure file sharing';
  }

  /** The policy in force: the admin page's switch when set, else REQUIRE_2FA. */
  async policy(): Promise<TwoFactorPolicy> {
    return (await this.policyRepo.get()) ?? this.deps.requireDefault;
  }

  /** True when the user has a factor that can sign in: a confirmed TOTP or a passkey. */
  async hasFactor(userId: string): Promise<boolean> {
    const t = await this.totp.get(userId);
    if (t?.confirmedAt != null) return true;
    return (await this.passkeys.listForUser(userId)).length > 0;
  }

  /** The user's factors, for the account page. */
  async summary(userId: string): Promise<FactorSummary> {
    const t = await this.totp.get(userId);
    return { totp: t?.confirmedAt != null, passkeys: await this.passkeys.listForUser(userId), recoveryRemaining: await this.recovery.remaining(userId) };
  }

  /** True when the policy covers this user and they have no factor yet: they may only enrol. */
  async mustEnrol(user: UserRow): Promise<boolean> {
    const p = await this.policy();
    if (p === 'off' || (p === 'admins' && user.role !== 'admin')) return false;
    return !(await this.hasFactor(user.id));
  }

  /** Starts a TOTP enrolment: a fresh secret stored sealed (unconfirmed), and its otpauth URI for the QR code. */
  async beginTotp(user: UserRow): Promise<{ secret: string; uri: string }> {
    const existing = await this.totp.get(user.id);
    if (existing?.confirmedAt != null) throw new AppError('conflict', 'an authenticator app is already set up; remove it first');
    const secret = generateSecret();
    const key = this.deps.keyring.active;
    if (!(await this.totp.putPending(user.id, key.id, sealTotp(key, user.id, secret), this.now()))) throw new AppError('conflict', 'an authenticator app is already set up; remove it first');
    return { secret, uri: generateURI({ issuer: this.issuer, label: user.username, secret }) };
  }

  /** The pending enrolment's secret and URI (to show the QR code again), or null. */
  async pendingTotp(user: UserRow): Promise<{ secret: string; uri: string } | null> {
    const row = await this.totp.get(user.id);
    if (!row || row.confirmedAt !== null) return null;
    const secret = await this.open(row.userId, row.keyId, row.sealed);
    return { secret, uri: generateURI({ issuer: this.issuer, label: user.username, secret }) };
  }

  private async open(userId: string, keyId: string, sealed: Buffer): Promise<string> {
    const key = await this.deps.keyring.resolve(keyId);
    if (!key) throw new AppError('key_unavailable', 'the key that protects this authenticator secret is not loaded');
    try {
      return openTotp(key, userId, sealed);
    } catch {
      throw new AppError('integrity_error', 'a stored authenticator secret failed verification');
    }
  }

  /** The time step a code matches within ±1 step of now, or null. */
  private async matchStep(secret: string, code: string): Promise<number | null> {
    if (!/^\d{6}$/.test(code)) return null;
    const epoch = Math.floor(this.now() / 1000);
    // epochTolerance of one period either side: the previous, current and next step (±1).
    const r = await verify({ secret, token: code, epoch, epochTolerance: PERIOD });
    return r.valid ? Math.floor(epoch / PERIOD) + r.delta : null;
  }

  /** Confirms a pending enrolment with one code; returns the ten recovery codes (shown once). */
  async confirmTotp(user: UserRow, code: string): Promise<string[] | null> {
    const row = await this.totp.get(user.id);
    if (!row || row.confirmedAt !== null) return null;
    const step = await this.matchStep(await this.open(row.userId, row.keyId, row.sealed), code.trim());
    if (step === null || !(await this.totp.acceptStep(user.id, step, this.now(), true))) return null;
    // Codes come with the first factor; a later factor keeps the ones the user has.
    if ((await this.recovery.remaining(user.id)) === 0) return this.regenerateRecoveryCodes(user.id);
    return [];
  }

  /** Checks a TOTP code of a confirmed authenticator; a code accepted once is refused after (replay), on every instance. */
  async verifyTotp(userId: string, code: string): Promise<boolean> {
    const row = await this.totp.get(userId);
    if (!row || row.confirmedAt === null) return false;
    const step = await this.matchStep(await this.open(row.userId, row.keyId, row.sealed), code.trim());
    return step !== null && (await this.totp.acceptStep(userId, step, this.now(), false));
  }

  /** Uses a recovery code (once). */
  async useRecoveryCode(userId: string, code: string): Promise<boolean> {
    const n = normaliseRecovery(code);
    if (!/^[a-z0-9]{10}$/.test(n)) return false;
    return this.recovery.use(userId, this.recoveryHash(userId, n), this.now());
  }

  /** A TOTP code (six digits) or a recovery code; returns which one worked, or null. */
  async verifyCode(userId: string, code: string): Promise<'totp' | 'recovery' | null> {
    const c = code.trim();
    if (/^\d{6}$/.test(c)) return (await this.verifyTotp(userId, c)) ? 'totp' : null;
    return (await this.useRecoveryCode(userId, c)) ? 'recovery' : null;
  }

  private recoveryHash(userId: string, normalised: string): Buffer {
    return this.deps.integrity.lookup(`sfs/v1 recovery code|${userId}|${normalised}`);
  }

  /** Ten new recovery codes (the old ones stop working); the database keeps keyed hashes only. */
  async regenerateRecoveryCodes(userId: string): Promise<string[]> {
    const codes: string[] = [];
    for (let i = 0; i < RECOVERY_CODE_COUNT; i++) {
      let c = '';
      for (let j = 0; j < 10; j++) c += RECOVERY_ALPHABET[randomInt(RECOVERY_ALPHABET.length)];
      codes.push(`${c.slice(0, 5)}-${c.slice(5)}`);
    }
    const hashes = codes.map((c) => this.recoveryHash(userId, normaliseRecovery(c)));
    await this.deps.db.transaction((trx) => new RecoveryCodesRepo(trx).replace(userId, hashes, this.now()));
    return codes;
  }

  /** Removes the authenticator app; the recovery codes go too when no passkey is left. */
  async removeTotp(userId: string): Promise<boolean> {
    const removed = await this.totp.remove(userId);
    if (!(await this.hasFactor(userId))) await this.recovery.removeAll(userId);
    return removed;
  }

  /** Removes one passkey; the recovery codes go too when no factor is left. */
  async removePasskey(userId: string, id: string): Promise<boolean> {
    const removed = await this.passkeys.remove(userId, id);
    if (!(await this.hasFactor(userId))) await this.recovery.removeAll(userId);
    return removed;
  }

  /** An admin (or the host) resets every factor of a user; the user is told at the next sign-in. */
  async resetAll(userId: string): Promise<{ totp: boolean; passkeys: number; recoveryCodes: number }> {
    const now = this.now();
    return this.deps.db.transaction(async (trx) => {
      const totp = await new TotpRepo(trx).remove(userId);
      const passkeys = await new PasskeysRepo(trx, this.deps.integrity).removeAll(userId);
      const recoveryCodes = await new RecoveryCodesRepo(trx).removeAll(userId);
      await new MfaNoticesRepo(trx).put(userId, now);
      return { totp, passkeys, recoveryCodes };
    });
  }

  /** Sets the admin page's REQUIRE_2FA switch. */
  setPolicy(value: TwoFactorPolicy): Promise<void> {
    return this.policyRepo.set(value, this.now());
  }

  // --- Passkeys ---

  /** Options for navigator.credentials.create(); the caller keeps `challenge` in the session. */
  async registrationOptions(user: UserRow, rp: RelyingParty): Promise<PublicKeyCredentialCreationOptionsJSON> {
    const existing = await this.passkeys.listForUser(user.id);
    return generateRegistrationOptions({
      rpName: this.issuer,
      rpID: rp.id,
      userName: user.username,
      // The user handle is the user id: a passwordless sign-in names its account by it.
      userID: Buffer.from(user.id, 'utf8'),
      attestationType: 'none',
      excludeCredentials: existing.map((p) => ({ id: p.id, transports: p.transports })),
      authenticatorSelection: { residentKey: 'preferred', userVerification: 'preferred' },
    });
  }

  /** Verifies a registration against the session's challenge and stores the credential. */
  async finishRegistration(user: UserRow, response: unknown, challenge: string, rp: RelyingParty, name: string): Promise<PasskeyRow> {
    let v;
    try {
      v = await verifyRegistrationResponse({ response: response as RegistrationResponseJSON, expectedChallenge: challenge, expectedOrigin: rp.origin, expectedRPID: rp.id, requireUserVerification: false });
    } catch {
      throw new AppError('validation_error', 'passkey: the registration could not be verified');
    }
    if (!v.verified) throw new AppError('validation_error', 'passkey: the registration could not be verified');
    const c = v.registrationInfo.credential;
    if (await this.passkeys.byId(c.id)) throw new AppError('conflict', 'this passkey is registered already');
    const row = { id: c.id, userId: user.id, name: name.trim().slice(0, 100) || 'Passkey', publicKey: Buffer.from(c.publicKey), counter: c.counter, transports: (c.transports ?? []).map(String), createdAt: this.now() };
    await this.passkeys.insert(row);
    return { ...row, lastUsedAt: null };
  }

  /** Options for navigator.credentials.get(): the user's passkeys, or any discoverable one (passwordless) when userId is null. */
  async authenticationOptions(userId: string | null, rp: RelyingParty): Promise<PublicKeyCredentialRequestOptionsJSON> {
    const allow = userId ? (await this.passkeys.listForUser(userId)).map((p) => ({ id: p.id, transports: p.transports })) : undefined;
    return generateAuthenticationOptions({ rpID: rp.id, userVerification: 'preferred', ...(allow ? { allowCredentials: allow } : {}) });
  }

  /**
   * Verifies an assertion against the session's challenge; returns the credential's owner.
   * With `expectedUserId` the credential must be theirs (second factor). The signature counter
   * must move forward (unless the authenticator keeps none) and is advanced by compare-and-swap.
   */
  async finishAuthentication(response: unknown, challenge: string, rp: RelyingParty, expectedUserId: string | null): Promise<PasskeyRow | null> {
    const r = response as AuthenticationResponseJSON;
    if (!r || typeof r.id !== 'string') return null;
    const cred = await this.passkeys.byId(r.id);
    if (!cred || (expectedUserId !== null && cred.userId !== expectedUserId)) return null;
    let v;
    try {
      v = await verifyAuthenticationResponse({
        response: r,
        expectedChallenge: challenge,
        expectedOrigin: rp.origin,
        expectedRPID: rp.id,
        credential: { id: cred.id, publicKey: new Uint8Array(cred.publicKey), counter: cred.counter, transports: cred.transports as never },
        requireUserVerification: false,
      });
    } catch {
      // Includes a counter that did not move forward (a cloned authenticator).
      return null;
    }
    if (!v.verified) return null;
    if (!(await this.passkeys.advance(cred.id, cred.counter, v.authenticationInfo.newCounter, this.now()))) return null;
    return cred;
  }
}
