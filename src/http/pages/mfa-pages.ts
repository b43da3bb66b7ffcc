/**
 * Second-factor pages: the second sign-in step (/login/2fa, passkeys), re-authentication
 * (/sudo), and managing factors on /account/2fa (authenticator app, recovery codes, passkeys).
 * The session steps themselves are in second-step.ts.
 */
import express, { Router, type Request, type Response } from 'express';
import { AppError } from '../../errors.js';
import { relyingPartyOf, type FactorMethod } from '../../services/mfa.js';
import { clientOf, publicBase } from '../context.js';
import { requireUser, safeNext, webUser } from './auth.js';
import { OneTimeView } from './one-time.js';
import { CHALLENGE_MS, completeSignIn, pendingUser, requireSudo, type SecondStepDeps } from './second-step.js';
import { formError, type PagesDeps } from './shared.js';

const field = (req: Request, name: string): string => {
  const v = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : '';
};

/** The second sign-in step, /sudo and /account/2fa. */
export function mfaPages(d: PagesDeps): Router {
  const r = Router();
  const mfa = d.mfa;
  const steps: SecondStepDeps = { accounts: d.accounts, audit: d.audit, mfa, sudoMs: d.config.sudoMs, now: d.now, notify: d.notify };
  const oneTime = new OneTimeView(d.keyring);
  const json = express.json({ limit: '64kb' });
  const rp = (req: Request) => relyingPartyOf(publicBase(req, d.config.publicUrl));
  const sudo = (back: string) => requireSudo(steps, back);

  const audit = (req: Request, user: { id: string }, action: string, outcome: 'success' | 'failure', details: Record<string, unknown> = {}) =>
    d.audit.record({ actor: outcome === 'success' || action !== 'mfa.failure' ? user.id : 'anonymous', action, outcome, subjectUserId: user.id, ...clientOf(req), details: { via: 'page', ...details } });

  /** Records a verified factor (recovery codes get their own event) and returns the sign-in method name. */
  const verified = async (req: Request, user: { id: string }, method: FactorMethod, purpose: string) => {
    await audit(req, user, method === 'recovery' ? 'mfa.recovery_used' : 'mfa.verify', 'success', { method, purpose, ...(method === 'recovery' ? { remaining: await mfa.recovery.remaining(user.id) } : {}) });
  };

  // --- The second step of signing in ---

  const renderStep = async (req: Request, res: Response, status: number, error: string | null) => {
    const user = (await pendingUser(req, steps))!;
    const s = await mfa.summary(user.id);
    res.status(status).render('login-2fa', { title: 'Second step', error, viaSso: req.session.pending?.method === 'sso', hasTotp: s.totp, hasPasskeys: s.passkeys.length > 0, scripts: ['vendor/simplewebauthn-browser.js', 'passkeys.js'] });
  };

  r.get('/login/2fa', async (req, res) => {
    if (!(await pendingUser(req, steps))) return void res.redirect(303, '/login');
    await renderStep(req, res, 200, null);
  });

  // Wrong codes count against the sign-in budgets of the account and the address.
  r.post('/login/2fa', ...d.limits.secondFactor, async (req, res) => {
    const user = await pendingUser(req, steps);
    if (!user) return void res.redirect(303, '/login');
    const method = await mfa.verifyCode(user.id, field(req, 'code'));
    if (!method) {
      await audit(req, user, 'mfa.failure', 'failure', { purpose: 'login' });
      return void (await renderStep(req, res, 401, 'That code is not right (or was used already). Try the next code from your app, or a recovery code.'));
    }
    await verified(req, user, method, 'login');
    const first = req.session.pending!;
    const to = await completeSignIn(req, steps, user, `${first.method}+${method}`, first.next);
    res.redirect(303, method === 'recovery' && to === safeNext(first.next) ? '/account/2fa?msg=recovery-used' : to);
  });

  // Passkeys: options for the second step (the pending user's keys) or a passwordless sign-in (any discoverable key).
  r.post('/login/passkey/options', async (req, res) => {
    const user = await pendingUser(req, steps);
    const options = await mfa.authenticationOptions(user?.id ?? null, rp(req));
    req.session.webauthn = { challenge: options.challenge, purpose: 'login', at: d.now() };
    res.json(options);
  });

  r.post('/login/passkey', json, ...d.limits.secondFactor, async (req, res) => {
    const w = req.session?.webauthn;
    delete req.session?.webauthn;
    const user = await pendingUser(req, steps);
    const fail = async (subject: { id: string } | null) => {
      if (subject) await audit(req, subject, 'mfa.failure', 'failure', { purpose: 'login', method: 'passkey' });
      throw new AppError('unauthorized', 'that passkey could not sign you in');
    };
    if (!w || w.purpose !== 'login' || d.now() - w.at > CHALLENGE_MS) return fail(user ?? null);
    const cred = await mfa.finishAuthentication((req.body as { response?: unknown })?.response, w.challenge, rp(req), user?.id ?? null);
    const owner = cred && (await d.accounts.sessionUser(cred.userId));
    if (!cred || !owner) return fail(user ?? null);
    await verified(req, owner, 'passkey', 'login');
    const first = req.session.pending;
    const to = await completeSignIn(req, steps, owner, first ? `${first.method}+passkey` : 'passkey', first?.next ?? safeNext(field(req, 'next')));
    res.json({ redirect: to });
  });

  // --- Re-authentication (sudo mode) ---

  const renderSudo = async (req: Request, res: Response, status: number, error: string | null) => {
    const s = await mfa.summary(webUser(req).id);
    res.status(status).render('sudo', { title: 'Re-authenticate', error, next: safeNext(req.query.next ?? field(req, 'next')), hasTotp: s.totp, hasPasskeys: s.passkeys.length > 0, scripts: ['vendor/simplewebauthn-browser.js', 'passkeys.js'] });
  };

  r.get('/sudo', requireUser, (req, res) => renderSudo(req, res, 200, null));

  // A password counts against the password budgets, a code against the same ones.
  r.post('/sudo', requireUser, ...d.limits.passwordCheck, async (req, res) => {
    const user = webUser(req);
    const password = field(req, 'password');
    let ok = false;
    if (password) {
      ok = await d.accounts.stillValid(user) && (await d.accounts.verifyPassword(user.username, password).then(() => true, () => false));
      if (!ok) await d.audit.record({ actor: user.id, action: 'auth.reauth', outcome: 'failure', subjectUserId: user.id, ...clientOf(req), details: { method: 'password' } });
    } else {
      const method = await mfa.verifyCode(user.id, field(req, 'code'));
      if (method) await verified(req, user, method, 'sudo');
      else await audit(req, user, 'mfa.failure', 'failure', { purpose: 'sudo' });
      ok = !!method;
    }
    if (!ok) return void (await renderSudo(req, res, 401, 'That was not right. Try again.'));
    req.session.sudoAt = d.now();
    await d.audit.record({ actor: user.id, action: 'auth.reauth', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { method: password ? 'password' : 'code' } });
    res.redirect(303, safeNext(field(req, 'next')));
  });

  r.post('/sudo/passkey/options', requireUser, async (req, res) => {
    const options = await mfa.authenticationOptions(webUser(req).id, rp(req));
    req.session.webauthn = { challenge: options.challenge, purpose: 'sudo', at: d.now() };
    res.json(options);
  });

  r.post('/sudo/passkey', requireUser, json, ...d.limits.passwordCheck, async (req, res) => {
    const user = webUser(req);
    const w = req.session.webauthn;
    delete req.session.webauthn;
    const cred = w && w.purpose === 'sudo' && d.now() - w.at <= CHALLENGE_MS ? await mfa.finishAuthentication((req.body as { response?: unknown })?.response, w.challenge, rp(req), user.id) : null;
    if (!cred) {
      await audit(req, user, 'mfa.failure', 'failure', { purpose: 'sudo', method: 'passkey' });
      throw new AppError('unauthorized', 'that passkey could not confirm it is you');
    }
    await verified(req, user, 'passkey', 'sudo');
    req.session.sudoAt = d.now();
    res.json({ redirect: safeNext((req.body as { next?: unknown })?.next) });
  });

  // --- Managing factors ---

  const render2fa = async (req: Request, res: Response, extra: Record<string, unknown> = {}, status = 200) => {
    const user = webUser(req);
    res.status(status).render('account-2fa', {
      title: 'Two-factor authentication',
      nav: 'account',
      summary: await mfa.summary(user.id),
      required: await mfa.mustEnrol(user),
      policy: await mfa.policy(),
      setup: null,
      codes: null,
      codesGone: false,
      error: null,
      scripts: ['vendor/simplewebauthn-browser.js', 'passkeys.js'],
      ...extra,
    });
  };

  r.get('/account/2fa', requireUser, (req, res) => render2fa(req, res));

  // Starting an enrolment shows a new secret; confirming one code makes it the user's factor.
  r.post('/account/2fa/totp', requireUser, sudo('/account/2fa'), async (req, res) => {
    try {
      await mfa.beginTotp(webUser(req));
    } catch (err) {
      return void (await render2fa(req, res, { error: formError(err) }, 409));
    }
    res.redirect(303, '/account/2fa/totp');
  });

  const renderSetup = async (req: Request, res: Response, status: number, error: string | null) => {
    const pending = await mfa.pendingTotp(webUser(req));
    if (!pending) return void res.redirect(303, '/account/2fa');
    // Loaded on first use, as for link QR codes: rendered here, nothing leaves the server.
    const { default: QRCode } = await import('qrcode');
    const svg = await QRCode.toString(pending.uri, { type: 'svg', errorCorrectionLevel: 'M', margin: 1 });
    const qrSvg = svg.replace('<svg ', '<svg role="img" aria-label="QR code to scan with your authenticator app" class="qr-code" ');
    await render2fa(req, res, { setup: { qrSvg, secret: pending.secret }, error }, status);
  };

  r.get('/account/2fa/totp', requireUser, (req, res) => renderSetup(req, res, 200, null));

  r.post('/account/2fa/totp/confirm', requireUser, ...d.limits.secondFactor, async (req, res) => {
    const user = webUser(req);
    const codes = await mfa.confirmTotp(user, field(req, 'code'));
    if (codes === null) {
      await audit(req, user, 'mfa.failure', 'failure', { purpose: 'enrol' });
      return void (await renderSetup(req, res, 400, 'That code is not right. Check the time on your phone and enter the current code.'));
    }
    // Enrolling proves the factor: it counts as a fresh proof for sudo mode too.
    req.session.sudoAt = d.now();
    await audit(req, user, 'mfa.enrol', 'success', { method: 'totp', recoveryCodes: codes.length });
    if (codes.length === 0) return void res.redirect(303, '/account/2fa?msg=mfa-enrolled');
    oneTime.put(req, 'recovery-codes', user.id, codes);
    res.redirect(303, '/account/2fa/recovery-codes');
  });

  r.get('/account/2fa/recovery-codes', requireUser, async (req, res) => {
    const codes = oneTime.take<string[]>(req, 'recovery-codes', webUser(req).id);
    await render2fa(req, res, codes ? { codes } : { codesGone: true });
  });

  r.post('/account/2fa/recovery-codes', requireUser, sudo('/account/2fa'), async (req, res) => {
    const user = webUser(req);
    if (!(await mfa.hasFactor(user.id))) return void (await render2fa(req, res, { error: 'Set up a second factor first.' }, 400));
    const codes = await mfa.regenerateRecoveryCodes(user.id);
    await audit(req, user, 'mfa.enrol', 'success', { method: 'recovery', regenerated: true });
    oneTime.put(req, 'recovery-codes', user.id, codes);
    res.redirect(303, '/account/2fa/recovery-codes');
  });

  r.post('/account/2fa/totp/remove', requireUser, sudo('/account/2fa'), async (req, res) => {
    const user = webUser(req);
    if (await mfa.removeTotp(user.id)) await audit(req, user, 'mfa.reset', 'success', { method: 'totp', by: 'self' });
    res.redirect(303, '/account/2fa?msg=mfa-removed');
  });

  r.post('/account/passkeys/options', requireUser, sudo('/account/2fa'), async (req, res) => {
    const options = await mfa.registrationOptions(webUser(req), rp(req));
    req.session.webauthn = { challenge: options.challenge, purpose: 'register', at: d.now() };
    res.json(options);
  });

  r.post('/account/passkeys', requireUser, sudo('/account/2fa'), json, async (req, res) => {
    const user = webUser(req);
    const w = req.session.webauthn;
    delete req.session.webauthn;
    if (!w || w.purpose !== 'register' || d.now() - w.at > CHALLENGE_MS) throw new AppError('validation_error', 'passkey: start the registration again');
    const body = req.body as { response?: unknown; name?: unknown };
    const hadFactor = await mfa.hasFactor(user.id);
    const row = await mfa.finishRegistration(user, body?.response, w.challenge, rp(req), typeof body?.name === 'string' ? body.name : '');
    await audit(req, user, 'mfa.enrol', 'success', { method: 'passkey', passkeyId: row.id.slice(0, 16), name: row.name });
    // The first factor brings recovery codes, shown once on the next page.
    if (!hadFactor && (await mfa.recovery.remaining(user.id)) === 0) {
      oneTime.put(req, 'recovery-codes', user.id, await mfa.regenerateRecoveryCodes(user.id));
      return void res.status(201).json({ redirect: '/account/2fa/recovery-codes' });
    }
    res.status(201).json({ redirect: '/account/2fa?msg=passkey-added' });
  });

  r.post('/account/passkeys/:id/rename', requireUser, sudo('/account/2fa'), async (req, res) => {
    const name = field(req, 'name').trim().slice(0, 100);
    if (name) await mfa.passkeys.rename(webUser(req).id, String(req.params.id), name);
    res.redirect(303, '/account/2fa?msg=passkey-renamed');
  });

  r.post('/account/passkeys/:id/remove', requireUser, sudo('/account/2fa'), async (req, res) => {
    const user = webUser(req);
    const id = String(req.params.id);
    if (await mfa.removePasskey(user.id, id)) await audit(req, user, 'mfa.reset', 'success', { method: 'passkey', passkeyId: id.slice(0, 16), by: 'self' });
    res.redirect(303, '/account/2fa?msg=passkey-removed');
  });

  return r;
}

/** Paths a user under REQUIRE_2FA without a factor may still use: enrolment, re-authentication and signing out. */
export function enrolmentPath(method: string, path: string): boolean {
  if (path === '/logout' || path === '/sudo' || path.startsWith('/sudo/')) return true;
  if (path === '/account/2fa' || path.startsWith('/account/2fa/')) return true;
  return method === 'POST' && (path === '/account/passkeys/options' || path === '/account/passkeys');
}
