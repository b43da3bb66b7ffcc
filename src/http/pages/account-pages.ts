/** The account page (password, storage, sessions) and the API tokens page. */
import { Router, type Request, type Response } from 'express';
import { clientOf, publicBase } from '../context.js';
import { requireUser, signIn, signOut, webUser } from './auth.js';
import { humanDuration } from './format.js';
import { OneTimeView } from './one-time.js';
import { requireSudo } from './second-step.js';
import { formError, type PagesDeps } from './shared.js';
import { MIN_PASSWORD_LENGTH } from '../../services/passwords.js';

/** Token lifetimes offered on the tokens page (those above TOKEN_MAX_TTL are left out). */
const TOKEN_EXPIRY_CHOICES = [86400, 7 * 86400, 30 * 86400, 90 * 86400, 365 * 86400];

const field = (req: Request, name: string): string => {
  const v = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : '';
};

/** /account (password, storage, sessions) and /tokens (API tokens, each shown once). */
export function accountPages(d: PagesDeps): Router {
  const r = Router();
  const { config } = d;
  const oneTime = new OneTimeView(d.keyring);
  const sudo = (back: string) => requireSudo({ sudoMs: config.sudoMs, now: d.now }, back);

  /** The user's recent sign-ins, from the audit log (time, address, browser, method). */
  const signIns = async (userId: string) =>
    (await d.audit.list({ viewerId: userId, action: 'auth.login', outcome: 'success', limit: 20 }))
      .filter((e) => e.subjectUserId === userId)
      .map((e) => {
        const method = typeof e.details.method === 'string' ? e.details.method : 'password';
        return { at: e.at, ip: e.ip, userAgent: e.userAgent, method: e.details.via === 'token' ? `API token (${method})` : method };
      });

  const renderAccount = async (req: Request, res: Response, status = 200, passwordError: string | null = null) => {
    const user = webUser(req);
    res.status(status).render('account', {
      title: 'Your account',
      nav: 'account',
      usage: await d.vault.quota.usageOf(user.id),
      quota: await d.vault.quota.limitOf(user.id),
      sessions: await d.sessions.listForUser(user.id),
      currentKey: res.locals.sessionKey,
      passwordError,
      minPassword: MIN_PASSWORD_LENGTH,
      factors: await d.mfa.summary(user.id),
      signIns: await signIns(user.id),
    });
  };

  r.get('/account', requireUser, (req, res) => renderAccount(req, res));

  // The current password is guessed against the same budgets as a sign-in of this account.
  r.post('/account/password', requireUser, sudo('/account'), ...d.limits.passwordCheck, async (req, res) => {
    const user = webUser(req);
    if (field(req, 'newPassword') !== field(req, 'confirm')) return void (await renderAccount(req, res, 400, 'The two new passwords do not match.'));
    let result;
    try {
      result = await d.accounts.changePassword({ user, tokenId: null }, field(req, 'currentPassword'), field(req, 'newPassword'));
    } catch (err) {
      await d.audit.record({ actor: user.id, action: 'user.password_change', outcome: 'failure', subjectUserId: user.id, ...clientOf(req), details: { via: 'page' } });
      const message = formError(err);
      return void (await renderAccount(req, res, 400, message === 'Current password is wrong.' ? 'Your current password is not right.' : message));
    }
    // Every other session ends; this one continues under a fresh id.
    const endedSessions = await d.sessions.endAllForUser(user.id);
    // The password just changed: check the row as it is now (still enabled, still intact).
    await signIn(req, user, async () => {
      const now = await d.accounts.users.byId(user.id);
      return !!now && (await d.accounts.stillValid(now));
    });
    req.session.sudoAt = d.now();
    await d.audit.record({
      actor: user.id,
      action: 'user.password_change',
      outcome: 'success',
      subjectUserId: user.id,
      ...clientOf(req),
      details: { revokedTokens: result.revokedTokens, endedSessions: endedSessions - 1, via: 'page' },
    });
    res.redirect(303, '/account?msg=password-changed');
  });

  r.post('/account/sessions/:key/end', requireUser, async (req, res) => {
    const user = webUser(req);
    const key = String(req.params.key);
    const ended = /^[0-9a-f]{64}$/.test(key) && (await d.sessions.end(user.id, key));
    if (ended) await d.audit.record({ actor: user.id, action: 'session.end', outcome: 'success', subjectUserId: user.id, ...clientOf(req) });
    if (key === res.locals.sessionKey) {
      await signOut(req);
      return void res.redirect(303, '/login?msg=signed-out');
    }
    res.redirect(303, '/account?msg=session-ended');
  });

  const tokenChoices = () => TOKEN_EXPIRY_CHOICES.filter((s) => s <= config.tokenMaxTtl).map((s) => ({ seconds: s, label: humanDuration(s) }));

  const renderTokens = async (req: Request, res: Response, extra: Record<string, unknown> = {}, status = 200) => {
    res.status(status).render('tokens', {
      title: 'API tokens',
      nav: 'tokens',
      tokens: await d.accounts.tokens.listForUser(webUser(req).id),
      choices: tokenChoices(),
      defaultExpiry: TOKEN_EXPIRY_CHOICES.filter((s) => s <= config.tokenDefaultTtl).at(-1) ?? tokenChoices()[0]?.seconds,
      newToken: null,
      newTokenGone: false,
      formError: null,
      baseUrl: publicBase(req, config.publicUrl),
      ...extra,
    });
  };

  r.get('/tokens', requireUser, (req, res) => renderTokens(req, res));

  r.post('/tokens', requireUser, sudo('/tokens'), async (req, res) => {
    const user = webUser(req);
    const name = field(req, 'name').trim() || 'api';
    const expires = Number(field(req, 'expires'));
    if (name.length > 100) return void (await renderTokens(req, res, { formError: 'The name can have at most 100 characters.' }, 400));
    if (!tokenChoices().some((c) => c.seconds === expires)) return void (await renderTokens(req, res, { formError: 'Choose how long the token should work.' }, 400));
    const { row, token } = await d.accounts.issueToken(user, name, expires);
    await d.audit.record({ actor: user.id, action: 'token.create', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { tokenId: row.id, name: row.name, expiresAt: row.expiresAt, via: 'page' } });
    // The database keeps a hash. POST-redirect-GET: the token waits (sealed) in the session
    // for exactly one view of /tokens/new, so a reload neither shows it again nor creates another.
    oneTime.put(req, 'token', user.id, { name: row.name, token });
    res.redirect(303, '/tokens/new');
  });

  r.get('/tokens/new', requireUser, async (req, res) => {
    const shown = oneTime.take<{ name: string; token: string }>(req, 'token', webUser(req).id);
    await renderTokens(req, res, shown ? { newToken: shown } : { newTokenGone: true });
  });

  r.post('/tokens/:id/revoke', requireUser, async (req, res) => {
    const user = webUser(req);
    const id = String(req.params.id);
    if (/^[0-9a-f]{32}$/.test(id) && (await d.accounts.tokens.revoke(user.id, id, Date.now()))) {
      await d.audit.record({ actor: user.id, action: 'token.revoke', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { tokenId: id, via: 'page' } });
    }
    res.redirect(303, '/tokens?msg=token-revoked');
  });

  return r;
}
