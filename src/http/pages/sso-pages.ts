/**
 * Single sign-on pages: "Sign in with <provider>" (POST /login/sso), the provider's redirect
 * back (GET /login/sso/callback), linking an identity from /account (POST /account/sso/link),
 * and sign-out through the provider (RP-initiated logout) for a session that signed in there.
 *
 * The state, nonce and PKCE verifier wait in this browser's session and are taken out (and
 * the session saved) before the code is exchanged, so a callback URL works once; a replay
 * finds nothing pending. The provider's code is single-use too, so even two callbacks racing
 * on one session cannot both sign in.
 */
import { Router, type Request, type Response } from 'express';
import { clientOf } from '../context.js';
import { isAppError } from '../../errors.js';
import { requireAdminUser, requireUser, safeNext, signIn, signOut, webUser } from './auth.js';
import type { PagesDeps } from './shared.js';
import { completeSignIn, firstFactorProven, SSO_PROVIDER_MFA } from './second-step.js';
import { SsoError, type PendingSso, type SsoRefusal, type SsoService } from '../../services/sso.js';

declare module 'express-session' {
  interface SessionData {
    /** A sign-in started at the provider and not yet come back (single use). */
    ssoPending?: PendingSso;
  }
}

/** What the sign-in page says for each refusal (fixed texts: nothing from the provider is reflected). */
const REFUSALS: Record<SsoRefusal, { status: number; text: string }> = {
  state: { status: 400, text: 'That sign-in has expired or was already used. Start again.' },
  provider_error: { status: 401, text: 'The sign-in provider did not sign you in.' },
  token_invalid: { status: 401, text: 'The sign-in provider\u2019s answer could not be verified. Try again, or ask an administrator.' },
  domain: { status: 403, text: 'Your email domain may not sign in here.' },
  not_linked: { status: 403, text: 'No account here is linked to that identity. Ask an administrator for an account, then link it from your account page.' },
  disabled: { status: 403, text: 'This account is disabled. Ask an administrator to enable it.' },
  unavailable: { status: 503, text: 'The sign-in provider cannot be reached just now. Try again later.' },
  integrity: { status: 403, text: 'That account failed verification. Ask an administrator.' },
  already_linked: { status: 409, text: 'That identity is already linked to another account.' },
};

const saveSession = (req: Request): Promise<void> => new Promise((resolve, reject) => req.session.save((err) => (err ? reject(err) : resolve())));

/** The SSO routes; registered before the sign-in pages (they take over POST /logout for SSO sessions). */
export function ssoPages(d: PagesDeps, sso: SsoService): Router {
  const r = Router();

  // Every page can show the button (the sign-in page does).
  r.use((_req, res, next) => {
    res.locals.ssoName = sso.name;
    next();
  });

  const refuse = async (req: Request, res: Response, err: unknown, mode: 'login' | 'link', uid: string | null) => {
    if (!(err instanceof SsoError)) throw err;
    req.log?.warn({ reason: err.reason, detail: err.detail }, 'single sign-on refused');
    await d.audit.record({
      actor: uid ?? 'anonymous',
      action: mode === 'link' ? 'sso.link' : 'sso.login',
      outcome: err.reason === 'state' || err.reason === 'token_invalid' || err.reason === 'integrity' ? 'failure' : 'denied',
      subjectUserId: uid,
      ...clientOf(req),
      details: { reason: err.reason, detail: err.detail.slice(0, 200) },
    });
    const { status, text } = REFUSALS[err.reason];
    if (mode === 'link' && req.webUser) return void res.redirect(303, `/account?msg=sso-link-${err.reason === 'already_linked' ? 'taken' : 'failed'}`);
    res.status(status).render('login', { title: 'Sign in', error: text, username: '', next: '/' });
  };

  const begin = async (req: Request, res: Response, mode: 'login' | 'link') => {
    const uid = req.webUser?.id;
    let started;
    try {
      started = await sso.start(mode, safeNext((req.body as Record<string, unknown> | undefined)?.next), uid);
    } catch (err) {
      return refuse(req, res, err, mode, uid ?? null);
    }
    req.session.ssoPending = started.pending;
    await saveSession(req);
    res.redirect(303, started.url);
  };

  r.post('/login/sso', (req, res) => begin(req, res, 'login'));
  r.post('/account/sso/link', requireUser, (req, res) => begin(req, res, 'link'));

  r.get('/login/sso/callback', async (req, res) => {
    const pending = req.session.ssoPending;
    const mode = pending?.mode === 'link' ? 'link' : 'login';
    // Single use: gone from the session (and the store) before anything else happens.
    if (pending) {
      delete req.session.ssoPending;
      await saveSession(req);
    }
    const query = req.originalUrl.includes('?') ? req.originalUrl.slice(req.originalUrl.indexOf('?') + 1) : '';
    try {
      const id = await sso.finish(query, pending);
      if (mode === 'link') {
        const user = req.webUser;
        // Linking needs the same signed-in user that started it.
        if (!user || user.id !== pending?.uid) throw new SsoError('state', 'the link was started by another session');
        const { linked } = await sso.link(user, id);
        await d.audit.record({ actor: user.id, action: 'sso.link', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { issuer: id.issuer, email: id.email, linked } });
        return void res.redirect(303, '/account?msg=sso-linked');
      }
      const { user, created } = await sso.signInAs(id);
      if (created) {
        await d.audit.record({ actor: user.id, action: 'user.create', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { username: user.username, role: user.role, via: 'sso' } });
      }
      // The provider proved the first factor. A second one is asked for here exactly as after a
      // password, unless OIDC_TRUST_PROVIDER_MFA is on and the ID token says the provider used one.
      const providerMfa = sso.providerProvedMfa(id);
      await d.audit.record({ actor: user.id, action: 'sso.login', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { issuer: id.issuer, email: id.email, created, role: user.role, providerMfa } });
      const steps = { accounts: d.accounts, audit: d.audit, mfa: d.mfa, sudoMs: d.config.sudoMs, now: d.now, notify: d.notify };
      const next = safeNext(pending?.next);
      let to: string;
      try {
        // The second step's pending session (or the full one) is a fresh session id either way.
        to = providerMfa ? await completeSignIn(req, steps, user, SSO_PROVIDER_MFA, next) : await firstFactorProven(req, steps, user, 'sso', next);
      } catch (err) {
        if (isAppError(err, 'unauthorized')) throw new SsoError('disabled', 'disabled while signing in');
        throw err;
      }
      res.redirect(303, to);
    } catch (err) {
      await refuse(req, res, err, mode, req.webUser?.id ?? null);
    }
  });

  // A session that signed in at the provider signs out there too (RP-initiated logout), when
  // the provider offers it; every other sign-out is the sign-in pages' own.
  r.post('/logout', async (req, res, next) => {
    if (!req.webUser || !req.session.viaSso) return next();
    const url = await sso.endSessionUrl();
    if (!url) return next();
    await d.audit.record({ actor: req.webUser.id, action: 'auth.logout', outcome: 'success', subjectUserId: req.webUser.id, ...clientOf(req), details: { via: 'sso' } });
    await signOut(req);
    res.clearCookie(req.secure ? '__Host-sfs-session' : 'sfs-session', { path: '/', secure: req.secure, httpOnly: true, sameSite: 'lax' });
    res.redirect(303, url);
  });

  // The account page lists the linked identities and offers to link one.
  r.get('/account', async (req, res, next) => {
    if (req.webUser) {
      res.locals.ssoLinks = await sso.listFor(webUser(req).id);
      // A just-in-time account has a random password nobody knows: no "current password" form for it.
      res.locals.ssoNoPassword = await sso.noKnownPassword(webUser(req));
    }
    next();
  });

  // The admin's switch for local passwords of linked users, on the users page.
  r.get('/admin/users', async (req, res, next) => {
    if (req.webUser?.role === 'admin') res.locals.ssoPasswordsDisabled = await sso.localPasswordsDisabled();
    next();
  });

  r.post('/admin/sso-policy', requireUser, requireAdminUser, async (req, res) => {
    const admin = webUser(req);
    const disable = (req.body as Record<string, unknown> | undefined)?.localPasswords === 'disabled';
    await sso.setLocalPasswordsDisabled(disable);
    await d.audit.record({ actor: admin.id, action: 'sso.policy', outcome: 'success', ...clientOf(req), details: { disableLocalPasswords: disable } });
    res.redirect(303, '/admin/users?msg=sso-policy');
  });

  return r;
}
