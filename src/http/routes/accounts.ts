/** Setup, API tokens, the caller's own account, and admin user management. */
import type { RequestHandler } from 'express';
import { AppError, isAppError } from '../../errors.js';
import { normalizeUsername, type AccountsService, type SetupCode } from '../../services/accounts.js';
import type { VaultService } from '../../services/vault.js';
import type { SharesService } from '../../services/shares.js';
import { presentShares } from './shares.js';
import type { BundlesService } from '../../services/bundles.js';
import type { AuditLog } from '../../services/audit.js';
import type { ApiRoutes } from '../api-router.js';
import type { WebSessions } from '../../services/sessions.js';
import type { MfaService } from '../../services/mfa.js';
import { principal } from '../auth.js';
import { clientOf } from '../context.js';
import type { PasswordLimits } from '../rate-limit.js';
import type { Notifier } from '../../services/notify/notifier.js';
import { presentToken, presentUser } from '../presenters.js';
import { idParam, mePatchBody, parse, setupBody, tokenCreateBody, userCreateBody, userPatchBody } from '../schemas.js';

export interface AccountsRoutesDeps {
  accounts: AccountsService;
  audit: AuditLog;
  vault: VaultService;
  /** Share links, for admins revoking another user's links. */
  shares: SharesService;
  /** A bundle's files, for listing its links. */
  bundles: Pick<BundlesService, 'members'>;
  setup: SetupCode;
  auth: RequestHandler;
  /** Browser sessions, ended on a password change or when a user is disabled. */
  sessions?: WebSessions;
  /** Second factors: token creation asks for `otp` when the user has one. */
  mfa: MfaService;
  limits: PasswordLimits;
  /** Notification settings (PATCH /me) and the new-sign-in check. */
  notify: Notifier;
}

/** Routes that do not need a token: setup and token creation (both rate-limited). */
export function publicAccountRoutes(r: ApiRoutes, d: AccountsRoutesDeps): void {
  r.op('setup', d.limits.setup, async (req, res) => {
    if (!(await d.accounts.setupOpen())) throw new AppError('setup_closed', 'setup has already been completed');
    const body = parse(setupBody, req.body);
    if (!(await d.setup.matches(body.setupCode))) {
      await d.audit.record({ actor: 'anonymous', action: 'setup', outcome: 'failure', ...clientOf(req), details: { reason: 'wrong setup code' } });
      throw new AppError('forbidden', 'wrong setup code (see the server log or data/setup-code)');
    }
    const user = await d.accounts.createUser(body.username, body.password, 'admin', { onlyIfNoUsers: true, claim: (trx) => d.setup.consumeIn(trx, body.setupCode) });
    d.setup.forget();
    await d.audit.record({ actor: user.id, action: 'setup', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { username: user.username } });
    req.log?.info({ userId: user.id }, 'setup completed: first admin created');
    res.status(201).json({ user: presentUser(user) });
  });

  r.op('createToken', ...d.limits.login, async (req, res) => {
    const body = parse(tokenCreateBody, req.body);
    let user;
    try {
      user = await d.accounts.verifyPassword(body.username, body.password);
    } catch (err) {
      const known = await d.accounts.users.byUsername(normalizeUsername(body.username));
      const reason = isAppError(err, 'account_disabled') ? { reason: 'disabled' } : isAppError(err, 'sso_required') ? { reason: 'sso_required' } : {};
      await d.audit.record({ actor: 'anonymous', action: 'auth.login', outcome: 'failure', subjectUserId: known?.id ?? null, ...clientOf(req), details: { username: body.username.slice(0, 64), ...reason } });
      throw err;
    }
    // A token issued now would be refused on every call: say so here instead.
    if (await d.mfa.mustEnrol(user)) {
      await d.audit.record({ actor: 'anonymous', action: 'auth.login', outcome: 'failure', subjectUserId: user.id, ...clientOf(req), details: { reason: 'mfa enrolment required' } });
      throw new AppError('mfa_enrolment_required', 'this account must set up a second factor (REQUIRE_2FA): sign in on the web page and enrol one first');
    }
    let method = 'password';
    if (await d.mfa.hasFactor(user.id)) {
      // The password is right, but it is not enough: the second factor comes in `otp`.
      if (!body.otp) {
        await d.audit.record({ actor: 'anonymous', action: 'auth.login', outcome: 'failure', subjectUserId: user.id, ...clientOf(req), details: { reason: 'otp required' } });
        throw new AppError('otp_required', 'this account has a second factor: send "otp" (a code from the authenticator app, or a recovery code)');
      }
      const used = await d.mfa.verifyCode(user.id, body.otp);
      if (!used) {
        await d.audit.record({ actor: 'anonymous', action: 'mfa.failure', outcome: 'failure', subjectUserId: user.id, ...clientOf(req), details: { purpose: 'token' } });
        throw new AppError('otp_invalid', 'that one-time code is not right or was used already');
      }
      await d.audit.record({ actor: user.id, action: used === 'recovery' ? 'mfa.recovery_used' : 'mfa.verify', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { method: used, purpose: 'token', ...(used === 'recovery' ? { remaining: await d.mfa.recovery.remaining(user.id) } : {}) } });
      method = `password+${used}`;
    }
    const { row, token } = await d.accounts.issueToken(user, body.name, body.expiresInSeconds);
    await d.audit.record({ actor: user.id, action: 'auth.login', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { via: 'token', method } });
    await d.notify.signedIn(user.id, req.ip ?? null, 'API token');
    await d.audit.record({ actor: user.id, action: 'token.create', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { tokenId: row.id, name: row.name, expiresAt: row.expiresAt } });
    res.status(201).json({ ...presentToken(row), token });
  });
}

/** Routes behind requireToken (the route table adds it, and requireAdmin for admin routes). */
export function accountRoutes(r: ApiRoutes, d: AccountsRoutesDeps): void {
  r.op('listTokens', async (req, res) => {
    res.json({ tokens: (await d.accounts.tokens.listForUser(principal(req).user.id)).map(presentToken) });
  });

  r.op('revokeToken', async (req, res) => {
    const id = String(req.params.id);
    if (!idParam.safeParse(id).success || !(await d.accounts.tokens.revoke(principal(req).user.id, id, Date.now()))) {
      throw new AppError('not_found', 'no such token');
    }
    const { user } = principal(req);
    await d.audit.record({ actor: user.id, action: 'token.revoke', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { tokenId: id } });
    res.status(204).end();
  });

  r.op('getMe', async (req, res) => {
    const { user } = principal(req);
    res.json({
      ...presentUser(user),
      usageBytes: await d.vault.quota.usageOf(user.id),
      quotaBytes: await d.vault.quota.limitOf(user.id),
      passwordResetAt: user.passwordResetAt === null ? null : new Date(user.passwordResetAt).toISOString(),
      ...(await d.notify.settings(user.id)),
    });
  });

  // The current password is guessed against the same budgets as a sign-in of this account.
  r.op('updateMe', ...d.limits.passwordCheck, async (req, res) => {
    const body = parse(mePatchBody, req.body);
    const p = principal(req);
    let result = { revokedTokens: 0 };
    if (body.currentPassword !== undefined && body.newPassword !== undefined) {
      try {
        result = await d.accounts.changePassword(p, body.currentPassword, body.newPassword);
      } catch (err) {
        await d.audit.record({ actor: p.user.id, action: 'user.password_change', outcome: 'failure', subjectUserId: p.user.id, ...clientOf(req) });
        throw err;
      }
      const endedSessions = (await d.sessions?.endAllForUser(p.user.id)) ?? 0;
      await d.audit.record({ actor: p.user.id, action: 'user.password_change', outcome: 'success', subjectUserId: p.user.id, ...clientOf(req), details: { revokedTokens: result.revokedTokens, endedSessions } });
    }
    let settings = await d.notify.settings(p.user.id);
    if (body.email !== undefined || body.notifications !== undefined) {
      settings = await d.notify.updateSettings(p.user.id, { email: body.email, notifications: body.notifications });
      // Which events and channels, never the address itself.
      await d.audit.record({ actor: p.user.id, action: 'user.notifications', outcome: 'success', subjectUserId: p.user.id, ...clientOf(req), details: { emailSet: settings.email !== null, notifications: settings.notifications } });
    }
    res.json({ ...presentUser((await d.accounts.users.byId(principal(req).user.id))!), ...settings, revokedTokens: result.revokedTokens });
  });

  r.op('createUser', async (req, res) => {
    const body = parse(userCreateBody, req.body);
    const user = await d.accounts.createUser(body.username, body.password, body.role);
    const admin = principal(req).user;
    await d.audit.record({ actor: admin.id, action: 'user.create', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { username: user.username, role: user.role } });
    res.status(201).location(`/api/v1/users/${user.id}`).json(presentUser(user));
  });

  r.op('listUsers', async (_req, res) => {
    res.json({ users: (await d.accounts.users.list()).map(presentUser) });
  });

  r.op('updateUser', async (req, res) => {
    const id = String(req.params.id);
    if (!idParam.safeParse(id).success) throw new AppError('not_found', 'no such user');
    const body = parse(userPatchBody, req.body);
    const { user: updated, revokedTokens, revokedShares } = await d.accounts.adminUpdate(id, body);
    if (body.disabled === true || body.password !== undefined) await d.sessions?.endAllForUser(id);
    await d.audit.record({
      actor: principal(req).user.id,
      action: adminAction(body),
      outcome: 'success',
      subjectUserId: id,
      ...clientOf(req),
      // What changed, never the new password itself.
      details: { disabled: body.disabled, role: body.role, passwordReset: body.password !== undefined, quotaBytes: body.quotaBytes, revokedTokens, revokedShares },
    });
    res.json(presentUser(updated));
  });

  const targetUser = async (req: Parameters<RequestHandler>[0]) => {
    const id = String(req.params.id);
    const user = idParam.safeParse(id).success ? await d.accounts.users.byId(id) : undefined;
    if (!user) throw new AppError('not_found', 'no such user');
    return user;
  };

  r.op('listUserShares', async (req, res) => {
    res.json({ shares: await presentShares(d.bundles, await d.shares.repo.listForOwner((await targetUser(req)).id)) });
  });

  r.op('revokeUserShares', async (req, res) => {
    const target = await targetUser(req);
    const revoked = await d.shares.repo.revokeAllForOwner(target.id, Date.now());
    await d.audit.record({ actor: principal(req).user.id, action: 'share.revoke_all', outcome: 'success', subjectUserId: target.id, ...clientOf(req), details: { revoked, by: 'admin' } });
    res.json({ revoked });
  });

  r.op('revokeUserShare', async (req, res) => {
    const target = await targetUser(req);
    const shareId = String(req.params.shareId);
    const share = await d.shares.ownedBy(target.id, shareId);
    if (!(await d.shares.repo.revoke(share.id, target.id, Date.now()))) throw new AppError('not_found', 'no such share');
    await d.audit.record({ actor: principal(req).user.id, action: 'share.revoke', outcome: 'success', subjectUserId: target.id, fileId: share.fileId, shareId: share.id, ...clientOf(req), details: { by: 'admin' } });
    res.status(204).end();
  });
}

/**
 * The audit action of an admin change to a user: disabling and password resets get their own
 * actions (a reset lets the admin sign in as the user, so it must stand out), the rest is user.update.
 */
export function adminAction(changes: { disabled?: boolean; password?: string }): string {
  if (changes.disabled === true) return 'user.disable';
  if (changes.password !== undefined) return 'user.password_reset';
  return 'user.update';
}
