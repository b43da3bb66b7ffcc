/** The account page (password, storage, sessions) and the API tokens page. */
import { Router, type Request, type Response } from 'express';
import { clientOf, publicBase } from '../context.js';
import { requireAdminUser, requireUser, signIn, signOut, webUser } from './auth.js';
import { ADMIN_SCOPE } from '../../db/webhooks.js';
import { isAppError } from '../../errors.js';
import { CHANNELS, NOTIFICATION_KINDS, type Channel, type NotificationKind } from '../../services/notify/notifier.js';
import { emailAddress } from '../schemas.js';
import { humanDuration } from './format.js';
import { OneTimeView } from './one-time.js';
import { requireSudo } from './second-step.js';
import { formError, type PagesDeps } from './shared.js';
import { MIN_PASSWORD_LENGTH } from '../../services/passwords.js';

/** The events on the account page, in the order of the API's `notifications` object. */
const NOTIFICATION_KIND_LABELS: { kind: NotificationKind; label: string }[] = [
  { kind: 'shareDownloaded', label: 'A link was downloaded (with the recipient’s address)' },
  { kind: 'shareExhausted', label: 'A link’s download limit was used up' },
  { kind: 'requestUpload', label: 'Files arrived through an upload request' },
  { kind: 'expiringSoon', label: 'A link (or a file with live links) expires soon' },
  { kind: 'newSignIn', label: 'A sign-in from a new address' },
  { kind: 'accountChanged', label: 'An administrator changed your account' },
];

/** "url: must be https://..." -> "The address must be https://...". */
const formText = (detail: string) => {
  const t = detail.replace(/^url: /, 'The address ');
  return t.charAt(0).toUpperCase() + t.slice(1) + (t.endsWith('.') || t.endsWith(')') ? '' : '.');
};

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

  const renderAccount = async (req: Request, res: Response, status = 200, passwordError: string | null = null, extra: Record<string, unknown> = {}) => {
    const user = webUser(req);
    const admin = user.role === 'admin';
    res.status(status).render('account', {
      notify: await d.notify.settings(user.id),
      notifyKinds: NOTIFICATION_KIND_LABELS,
      emailEnabled: d.notify.emailEnabled,
      webhook: await d.notify.webhook(user.id),
      deliveries: await d.notify.deliveries(user.id),
      adminWebhook: admin ? await d.notify.webhook(ADMIN_SCOPE) : null,
      adminDeliveries: admin ? await d.notify.deliveries(ADMIN_SCOPE, 'webhook', 10) : [],
      newWebhookSecret: null,
      notifyError: null,
      webhookError: null,
      adminWebhookError: null,
      ...extra,
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

  // --- Notifications ---
  r.post('/account/notifications', requireUser, async (req, res) => {
    const user = webUser(req);
    const emailText = field(req, 'email').trim();
    if (emailText !== '' && !emailAddress.safeParse(emailText).success) return void (await renderAccount(req, res, 400, null, { notifyError: 'That is not an email address.' }));
    const notifications = {} as Record<NotificationKind, Channel[]>;
    for (const k of NOTIFICATION_KINDS) notifications[k] = CHANNELS.filter((c) => field(req, `${k}.${c}`) === 'on');
    try {
      const saved = await d.notify.updateSettings(user.id, { email: emailText || null, notifications });
      await d.audit.record({ actor: user.id, action: 'user.notifications', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { emailSet: saved.email !== null, notifications: saved.notifications, via: 'page' } });
    } catch (err) {
      if (!isAppError(err, 'validation_error')) throw err;
      return void (await renderAccount(req, res, 400, null, { notifyError: 'Give an email address to receive notifications by email.' }));
    }
    res.redirect(303, '/account?msg=notifications-saved#notifications-heading');
  });

  for (const admin of [false, true]) {
    const prefix = admin ? '/account/admin-webhook' : '/account/webhook';
    const guard = admin ? [requireUser, requireAdminUser] : [requireUser];
    const scopeOf = (req: Request) => (admin ? ADMIN_SCOPE : webUser(req).id);
    r.post(prefix, ...guard, async (req, res) => {
      const user = webUser(req);
      let created;
      try {
        created = await d.notify.setWebhook(scopeOf(req), field(req, 'url').trim());
      } catch (err) {
        if (!isAppError(err, 'webhook_url_refused')) throw err;
        return void (await renderAccount(req, res, 400, null, { [admin ? 'adminWebhookError' : 'webhookError']: formText(err.detail) }));
      }
      await d.audit.record({ actor: user.id, action: 'webhook.set', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { scope: admin ? 'admin' : 'user', webhookId: created.webhook.id, host: new URL(created.webhook.url).host, via: 'page' } });
      // Shown once, on the next GET only (as new tokens are).
      oneTime.put(req, 'webhook', user.id, { secret: created.secret, admin });
      res.redirect(303, '/account/webhook/new');
    });
    r.post(`${prefix}/remove`, ...guard, async (req, res) => {
      const user = webUser(req);
      if (await d.notify.removeWebhook(scopeOf(req))) {
        await d.audit.record({ actor: user.id, action: 'webhook.remove', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { scope: admin ? 'admin' : 'user', via: 'page' } });
      }
      res.redirect(303, '/account?msg=webhook-removed');
    });
    r.post(`${prefix}/test`, ...guard, async (req, res) => {
      try {
        await d.notify.sendTest(scopeOf(req));
      } catch (err) {
        if (!isAppError(err, 'not_found')) throw err;
      }
      res.redirect(303, '/account?msg=webhook-test#webhook-heading');
    });
  }

  r.get('/account/webhook/new', requireUser, async (req, res) => {
    const shown = oneTime.take<{ secret: string; admin: boolean }>(req, 'webhook', webUser(req).id);
    await renderAccount(req, res, 200, null, { newWebhookSecret: shown });
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
