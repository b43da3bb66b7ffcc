/**
 * The owner's web pages. They sit beside the API, not on top of it: a page never calls
 * /api (which takes bearer tokens only); its routes use a cookie session plus a CSRF token
 * and call the same services the API routes call.
 */
import express, { Router } from 'express';
import { AppError } from '../../errors.js';
import { accountPages } from './account-pages.js';
import { adminPages } from './admin-pages.js';
import { loadUser, wantsJson } from './auth.js';
import { enrolmentPath, mfaPages } from './mfa-pages.js';
import { authPages } from './auth-pages.js';
import { filePages } from './file-pages.js';
import { requestPages } from './request-pages.js';
import { sessionMiddleware } from './session.js';
import { ssoPages } from './sso-pages.js';
import { MESSAGES, type PagesDeps } from './shared.js';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Every page route, behind the session, the user loader and the CSRF check. */
export function pageRoutes(d: PagesDeps): Router {
  const r = Router();
  r.use(
    sessionMiddleware({
      db: d.db,
      sessions: d.sessions,
      onTampered: d.onSessionTampered,
      // Signed with a key from the integrity root, which key rotation carries along, so
      // sessions survive `sfs key rotate`; cookies signed before this version (with a key
      // derived from the active master key) are still accepted until they expire.
      secret: [d.sessions.cookieSecret(), d.keyring.derive('sfs/v1 session cookie')],
      idleMs: d.config.sessionIdleMs,
    }),
  );
  r.use(loadUser(d.accounts, d.sessions, d.config.sessionMaxMs));
  // Only urlencoded bodies are parsed here; multipart uploads are streamed by multer later.
  r.use(express.urlencoded({ extended: false, limit: '64kb', parameterLimit: 50 }));
  r.use((req, res, next) => {
    if (!SAFE_METHODS.has(req.method)) {
      try {
        d.csrf.check(req);
      } catch (err) {
        // A refused upload must not be read to its end: answer and close.
        if (req.is('multipart/form-data') && err instanceof AppError) throw new AppError(err.code, err.detail, err.headers, true);
        throw err;
      }
    }
    // Pages are personal: never cached by the browser or a proxy.
    res.setHeader('Cache-Control', 'no-store');
    res.locals.csrfToken = d.csrf.token(req, res);
    res.locals.path = req.path;
    const code = typeof req.query.msg === 'string' ? req.query.msg : '';
    res.locals.message = MESSAGES[code] ?? null;
    next();
  });
  // Before the sign-in pages: it takes over sign-out for sessions that signed in through SSO.
  if (d.sso) r.use(ssoPages(d, d.sso));
  // REQUIRE_2FA: a signed-in user it covers who has no factor yet may only enrol (or sign out).
  // Read on every request, so the policy and an enrolment take effect at once.
  r.use(async (req, res, next) => {
    // A provider sign-in trusted as both factors (OIDC_TRUST_PROVIDER_MFA, with mfa in its ID token) meets the policy.
    if (!req.webUser || req.session.providerMfa || enrolmentPath(req.method, req.path) || !(await d.mfa.mustEnrol(req.webUser))) return next();
    if (wantsJson(req)) throw new AppError('mfa_enrolment_required', 'set up a second factor on /account/2fa first');
    res.redirect(303, '/account/2fa?required=1');
  });
  r.use(authPages(d));
  r.use(mfaPages(d));
  r.use(filePages(d));
  r.use(requestPages(d));
  r.use(accountPages(d));
  r.use(adminPages(d));
  return r;
}
