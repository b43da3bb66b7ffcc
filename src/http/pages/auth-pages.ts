/** First-run setup, sign-in and sign-out pages. */
import { Router, type Request, type Response } from 'express';
import { isAppError } from '../../errors.js';
import { normalizeUsername } from '../../services/accounts.js';
import { MIN_PASSWORD_LENGTH } from '../../services/passwords.js';
import { clientOf } from '../context.js';
import { safeNext, signIn, signOut } from './auth.js';
import { firstFactorProven } from './second-step.js';
import { pageText, type PagesDeps } from './shared.js';

const USERNAME = /^[A-Za-z0-9._-]{1,64}$/;

const field = (req: Request, name: string): string => {
  const v = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : '';
};

/** /setup (only while no user exists), /login and POST /logout. */
export function authPages(d: PagesDeps): Router {
  const r = Router();

  const renderSetup = (res: Response, status: number, error: string | null, username = '') =>
    res.status(status).render('setup', { title: 'Set up', error, username, minPassword: MIN_PASSWORD_LENGTH });

  r.get('/setup', async (_req, res) => {
    if (!(await d.accounts.setupOpen())) return void res.redirect(303, '/login');
    renderSetup(res, 200, null);
  });

  r.post('/setup', d.limits.setup, async (req, res) => {
    if (!(await d.accounts.setupOpen())) return void res.redirect(303, '/login');
    const username = field(req, 'username').trim();
    const password = field(req, 'password');
    const setupCode = field(req, 'setupCode').trim();
    if (!(await d.setup.matches(setupCode))) {
      await d.audit.record({ actor: 'anonymous', action: 'setup', outcome: 'failure', ...clientOf(req), details: { reason: 'wrong setup code', via: 'page' } });
      return void renderSetup(res, 403, 'That setup code is not right. It is in the server log and in data/setup-code.', username);
    }
    if (!USERNAME.test(username)) return void renderSetup(res, 400, 'Use 1-64 letters, digits, dots, underscores or hyphens for the name.', username);
    if (password !== field(req, 'confirm')) return void renderSetup(res, 400, 'The two passwords do not match.', username);
    let user;
    try {
      user = await d.accounts.createUser(username, password, 'admin', { onlyIfNoUsers: true, claim: (trx) => d.setup.consumeIn(trx, setupCode) });
    } catch (err) {
      if (isAppError(err, 'validation_error')) return void renderSetup(res, 400, pageText(err.detail), username);
      throw err;
    }
    d.setup.forget();
    await d.audit.record({ actor: user.id, action: 'setup', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { username: user.username, via: 'page' } });
    req.log?.info({ userId: user.id }, 'setup completed from the setup page');
    await signIn(req, user, () => d.accounts.stillValid(user));
    // The password was just set: a fresh proof for sudo mode.
    req.session.sudoAt = d.now();
    res.redirect(303, '/?msg=welcome');
  });

  const renderLogin = (req: Request, res: Response, status: number, error: string | null, username = '') =>
    res.status(status).render('login', { title: 'Sign in', error, username, next: safeNext(req.query.next ?? field(req, 'next')), scripts: ['vendor/simplewebauthn-browser.js', 'passkeys.js'] });

  r.get('/login', async (req, res) => {
    if (await d.accounts.setupOpen()) return void res.redirect(303, '/setup');
    if (req.webUser) return void res.redirect(303, safeNext(req.query.next));
    renderLogin(req, res, 200, null);
  });

  r.post('/login', ...d.limits.login, async (req, res) => {
    const username = field(req, 'username').trim();
    let user;
    try {
      user = await d.accounts.verifyPassword(username, field(req, 'password'));
    } catch (err) {
      const disabled = isAppError(err, 'account_disabled');
      const ssoOnly = isAppError(err, 'sso_required');
      if (!disabled && !ssoOnly && !isAppError(err, 'unauthorized')) throw err;
      const known = await d.accounts.users.byUsername(normalizeUsername(username));
      await d.audit.record({
        actor: 'anonymous',
        action: 'auth.login',
        outcome: 'failure',
        subjectUserId: known?.id ?? null,
        ...clientOf(req),
        details: { username: username.slice(0, 64), via: 'page', ...(disabled ? { reason: 'disabled' } : ssoOnly ? { reason: 'sso_required' } : {}) },
      });
      if (ssoOnly) return void renderLogin(req, res, 403, `This account signs in with ${String(res.locals.ssoName ?? 'single sign-on')} only: use the button below.`, username);
      // Only someone who knows the password learns that the account is disabled.
      if (disabled) return void renderLogin(req, res, 403, 'This account is disabled. Ask an administrator to enable it.', username);
      return void renderLogin(req, res, 401, 'Wrong username or password.', username);
    }
    let to;
    try {
      // The password is the first factor; a user with a second one continues on /login/2fa (second-step.ts).
      to = await firstFactorProven(req, { accounts: d.accounts, audit: d.audit, mfa: d.mfa, sudoMs: d.config.sudoMs, now: d.now, notify: d.notify }, user, 'password', field(req, 'next'));
    } catch (err) {
      // Disabled (or the password reset) while the password was being checked.
      if (!isAppError(err, 'unauthorized')) throw err;
      return void renderLogin(req, res, 401, 'Wrong username or password.', username);
    }
    res.redirect(303, to);
  });

  r.post('/logout', async (req, res) => {
    if (req.webUser) {
      await d.audit.record({ actor: req.webUser.id, action: 'auth.logout', outcome: 'success', subjectUserId: req.webUser.id, ...clientOf(req) });
    }
    await signOut(req);
    res.clearCookie(req.secure ? '__Host-sfs-session' : 'sfs-session', { path: '/', secure: req.secure, httpOnly: true, sameSite: 'lax' });
    res.redirect(303, '/login?msg=signed-out');
  });

  return r;
}
