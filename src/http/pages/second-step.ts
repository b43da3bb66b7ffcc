/**
 * The sign-in steps every sign-in method goes through, in one place:
 *
 *   first factor proven (a password, or a sign-in at the OpenID provider: method 'sso')
 *     -> the user has a second factor: a half-signed-in session (`pending`, no `uid`, so no page
 *        and no API treats it as signed in) that only /login/2fa and the passkey step accept,
 *        for at most PENDING_MS
 *     -> both proven (or no factor): completeSignIn, a fresh session id with `uid`, the sudo
 *        clock started, the sign-in audited with its method, and, when REQUIRE_2FA covers a
 *        user without a factor, straight to enrolment.
 *
 * Also here: sudo mode (requireSudo), the fresh proof sensitive actions need.
 */
import type { NextFunction, Request, Response } from 'express';
import type { UserRow } from '../../db/users.js';
import { AppError } from '../../errors.js';
import type { AccountsService } from '../../services/accounts.js';
import type { AuditLog } from '../../services/audit.js';
import type { MfaService } from '../../services/mfa.js';
import { clientOf } from '../context.js';
import { safeNext, signIn, wantsJson } from './auth.js';

declare module 'express-session' {
  interface SessionData {
    /** Half signed in: the first factor was proven for this user, the second is still due. */
    pending?: { uid: string; username: string; at: number; method: string; next: string };
    /** When the password or a factor was last proven in this session (sudo mode). */
    sudoAt?: number;
    /** How this session signed in (shown in the sign-in list through the audit log). */
    method?: string;
    /** This session signed in through the provider (sign-out then goes there too); survives the second step. */
    viaSso?: boolean;
    /** The provider's sign-in counted as both factors (OIDC_TRUST_PROVIDER_MFA): REQUIRE_2FA is met for this session. */
    providerMfa?: boolean;
    /** The WebAuthn challenge this session is answering, and what for. */
    webauthn?: { challenge: string; purpose: 'login' | 'register' | 'sudo'; at: number };
  }
}

/** The method name of a provider sign-in that counted as both factors (OIDC_TRUST_PROVIDER_MFA). */
export const SSO_PROVIDER_MFA = 'sso+provider-mfa';

/** True for every method that began at the OpenID provider ('sso', 'sso+totp', ...). */
export const viaProvider = (method: string): boolean => method === 'sso' || method.startsWith('sso+');

/** How long the second step may take after the password. */
export const PENDING_MS = 5 * 60 * 1000;
/** How long a WebAuthn challenge stays valid. */
export const CHALLENGE_MS = 5 * 60 * 1000;

export interface SecondStepDeps {
  accounts: AccountsService;
  audit: AuditLog;
  mfa: MfaService;
  sudoMs: number;
  now: () => number;
  /** Told about every completed sign-in (the new-sign-in notice). */
  notify?: { signedIn(userId: string, ip: string | null, via: string): Promise<void> };
}

function regenerate(req: Request): Promise<void> {
  return new Promise((resolve, reject) => req.session.regenerate((err) => (err ? reject(err) : resolve())));
}

/**
 * The first factor is proven for `user`: a user with a second factor gets a half-signed-in
 * session and is sent to /login/2fa; anyone else is signed in. Returns where to go next.
 */
export async function firstFactorProven(req: Request, d: SecondStepDeps, user: UserRow, method: string, next: string): Promise<string> {
  if (await d.mfa.hasFactor(user.id)) {
    // A fresh id: a session id planted before the password cannot ride into the second step.
    await regenerate(req);
    req.session.pending = { uid: user.id, username: user.username, at: d.now(), method, next: safeNext(next) };
    return '/login/2fa';
  }
  return completeSignIn(req, d, user, method, next);
}

/** The user of the half-signed-in session, while it is fresh and the user still may sign in; else undefined (and the pending step is dropped). */
export async function pendingUser(req: Request, d: SecondStepDeps): Promise<UserRow | undefined> {
  const p = req.session?.pending;
  if (!p) return undefined;
  const user = d.now() - p.at <= PENDING_MS ? await d.accounts.sessionUser(p.uid) : undefined;
  // A password reset by an admin after the first step voids it.
  if (!user || (user.passwordResetAt !== null && user.passwordResetAt > p.at)) {
    delete req.session.pending;
    return undefined;
  }
  return user;
}

/**
 * Both steps are done: a fresh session for the user (new id), the sudo clock started, the
 * sign-in audited with its method. Returns where to go: enrolment when the policy requires a
 * factor the user lacks, the account page when an admin reset their factors, else `next`.
 */
export async function completeSignIn(req: Request, d: SecondStepDeps, user: UserRow, method: string, next: string): Promise<string> {
  await signIn(req, user, () => d.accounts.stillValid(user));
  req.session.sudoAt = d.now();
  req.session.method = method;
  // The markers are set on the fresh session: the half-signed-in one (if any) is gone by now.
  // viaSso sends sign-out to the provider (RP-initiated logout) whatever the second step was.
  if (viaProvider(method)) req.session.viaSso = true;
  const providerMfa = method === SSO_PROVIDER_MFA;
  if (providerMfa) req.session.providerMfa = true;
  await d.audit.record({ actor: user.id, action: 'auth.login', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { via: 'page', method } });
  const via = viaProvider(method) ? 'single sign-on' : method.includes('passkey') && !method.includes('password') ? 'passkey' : 'browser';
  await d.notify?.signedIn(user.id, req.ip ?? null, via);
  if (!providerMfa && (await d.mfa.mustEnrol(user))) return '/account/2fa?required=1';
  if ((await d.mfa.notices.take(user.id)) !== null) return '/account?msg=mfa-reset';
  return safeNext(next);
}

/** True while the session proved the password or a factor within the sudo window. */
export function sudoFresh(req: Request, d: Pick<SecondStepDeps, 'sudoMs' | 'now'>): boolean {
  const at = req.session?.sudoAt;
  return typeof at === 'number' && d.now() - at <= d.sudoMs;
}

/**
 * Sensitive actions (password change, page tokens, factors, recovery codes, admin actions on
 * users) need a fresh proof: without one, pages show "re-authenticate to continue" (403) and
 * come back to the page the form was on; JSON callers get 403 reauth_required.
 */
export function requireSudo(d: Pick<SecondStepDeps, 'sudoMs' | 'now'>, back: string | ((req: Request) => string)) {
  return (req: Request, res: Response, next: NextFunction): void => {
    if (sudoFresh(req, d)) return next();
    if (wantsJson(req) || req.is('application/json')) throw new AppError('reauth_required', 're-authenticate to continue: confirm your password or a second factor on /sudo');
    // The pages send no Referer (no-referrer): each route names the page its form is on.
    const to = safeNext(typeof back === 'string' ? back : back(req));
    res.redirect(303, `/sudo?next=${encodeURIComponent(to)}`);
  };
}
