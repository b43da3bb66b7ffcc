/** Admin pages: users (create, disable, reset password, quota) and the audit log. */
import { Router, type Request, type Response } from 'express';
import { parseSize } from '../../config.js';
import type { Role } from '../../db/users.js';
import { AppError } from '../../errors.js';
import { clientOf } from '../context.js';
import { adminAction } from '../routes/accounts.js';
import { presentShares } from '../routes/shares.js';
import { deleteUser } from '../../services/offboarding.js';
import { requireAdminUser, requireUser, webUser } from './auth.js';
import { requireSudo } from './second-step.js';
import { formError, type PagesDeps } from './shared.js';
import type { HoldScope } from '../../db/holds.js';
import { isId } from '../../services/ids.js';
import { holdBody } from '../schemas.js';

const AUDIT_PAGE = 50;
const HOLD_SCOPES: HoldScope[] = ['file', 'user', 'request'];
/** The page a hold's controls are on (where the form comes back to). */
const holdPage = (scope: HoldScope, id: string): string => (scope === 'file' ? `/files/${id}` : scope === 'user' ? `/admin/users/${id}` : `/requests/${id}`);
const USERNAME = /^[A-Za-z0-9._-]{1,64}$/;

const field = (req: Request, name: string): string => {
  const v = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : '';
};
const query = (req: Request, name: string): string => {
  const v = req.query[name];
  return typeof v === 'string' ? v.trim().slice(0, 100) : '';
};

/** /admin/users and /admin/audit, for admins only. */
export function adminPages(d: PagesDeps): Router {
  const r = Router();
  r.use('/admin', requireUser, requireAdminUser);
  // Every change an admin makes to users (and the 2FA policy) needs a fresh proof (sudo mode).
  const sudo = requireSudo({ sudoMs: d.config.sudoMs, now: d.now }, (req) => {
    // A hold form comes back to the page it is on (the file, the user or the request).
    const hold = /^\/admin\/holds\/(file|user|request)\/([0-9a-f]{32})(?:\/release)?$/.exec(req.path);
    if (hold) return holdPage(hold[1] as HoldScope, hold[2]!);
    return req.path.startsWith('/admin/users/') ? `/admin/users/${String(req.path.split('/')[3] ?? '')}` : '/admin/users';
  });
  r.post('/admin/*path', sudo);

  // Legal holds from the pages: the same LifecycleService calls (and hold.place/hold.release
  // audit rows) as the API, behind the admin check, CSRF and sudo mode above.
  const holdTarget = (req: Request): { scope: HoldScope; id: string } => {
    const scope = String(req.params.scope);
    const id = String(req.params.id);
    if (!HOLD_SCOPES.includes(scope as HoldScope) || !isId(id)) throw new AppError('not_found', 'no such hold target');
    return { scope: scope as HoldScope, id };
  };
  r.post('/admin/holds/:scope/:id', async (req, res) => {
    const { scope, id } = holdTarget(req);
    const body = holdBody.safeParse({ reason: field(req, 'reason'), reference: field(req, 'reference') || undefined });
    if (!body.success) throw new AppError('validation_error', 'Give the reason for the hold (1-500 characters) and, if any, a reference of at most 200 characters.');
    await d.lifecycle.placeHold(webUser(req).id, scope, id, body.data.reason, body.data.reference || null);
    res.redirect(303, `${holdPage(scope, id)}?msg=hold-placed`);
  });
  r.post('/admin/holds/:scope/:id/release', async (req, res) => {
    const { scope, id } = holdTarget(req);
    await d.lifecycle.releaseHold(webUser(req).id, scope, id);
    res.redirect(303, `${holdPage(scope, id)}?msg=hold-released`);
  });

  r.post('/admin/policy', async (req, res) => {
    const value = field(req, 'require2fa');
    if (value !== 'off' && value !== 'admins' && value !== 'all') return void (await renderUsers(req, res, 400, 'Choose off, admins or all.'));
    await d.mfa.setPolicy(value);
    await d.audit.record({ actor: webUser(req).id, action: 'mfa.policy', outcome: 'success', ...clientOf(req), details: { require2fa: value, via: 'page' } });
    res.redirect(303, '/admin/users?msg=policy-updated');
  });

  r.post('/admin/users/:id/mfa/reset', async (req, res) => {
    const admin = webUser(req);
    const target = await targetOf(req);
    // Your own factors are yours to change on /account/2fa; this is for someone else's lost phone.
    if (target.id === admin.id) return void (await renderUser(req, res, 400, 'Manage your own second factors on the two-factor page of your account.'));
    const removed = await d.mfa.resetAll(target.id);
    await d.audit.record({ actor: admin.id, action: 'mfa.reset', outcome: 'success', subjectUserId: target.id, ...clientOf(req), details: { by: 'admin', totp: removed.totp, passkeys: removed.passkeys, recoveryCodes: removed.recoveryCodes, via: 'page' } });
    res.redirect(303, `/admin/users/${target.id}?msg=mfa-user-reset`);
  });

  const renderUsers = async (req: Request, res: Response, status = 200, error: string | null = null, form = { username: '', role: 'user' }) => {
    const users = [];
    for (const u of await d.accounts.users.list()) users.push({ ...u, usage: await d.vault.quota.usageOf(u.id), limit: await d.vault.quota.limitOf(u.id), twoFactor: await d.mfa.hasFactor(u.id) });
    res.status(status).render('admin-users', {
      title: 'Users',
      nav: 'users',
      users,
      error,
      form,
      defaultQuota: d.config.userQuotaBytes,
      me: webUser(req).id,
      policy: await d.mfa.policy(),
      policySetting: d.config.require2fa,
    });
  };

  r.get('/admin/users', (req, res) => renderUsers(req, res));

  r.post('/admin/users', async (req, res) => {
    const admin = webUser(req);
    const form = { username: field(req, 'username').trim(), role: field(req, 'role') === 'admin' ? 'admin' : 'user' };
    if (!USERNAME.test(form.username)) return void await renderUsers(req, res, 400, 'Use 1-64 letters, digits, dots, underscores or hyphens for the name.', form);
    let user;
    try {
      user = await d.accounts.createUser(form.username, field(req, 'password'), form.role as Role);
    } catch (err) {
      return void await renderUsers(req, res, 400, formError(err), form);
    }
    await d.audit.record({ actor: admin.id, action: 'user.create', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { username: user.username, role: user.role, via: 'page' } });
    res.redirect(303, '/admin/users?msg=user-created');
  });

  r.post('/admin/users/:id', async (req, res) => {
    const admin = webUser(req);
    const id = String(req.params.id);
    const target = /^[0-9a-f]{32}$/.test(id) ? await d.accounts.users.byId(id) : undefined;
    if (!target) throw new AppError('not_found', 'no such user');
    const changes: { disabled?: boolean; password?: string; quotaBytes?: number | null } = {};
    switch (field(req, 'op')) {
      case 'disable':
        changes.disabled = true;
        break;
      case 'enable':
        changes.disabled = false;
        break;
      case 'password':
        changes.password = field(req, 'password');
        break;
      case 'quota': {
        const text = field(req, 'quota').trim();
        const bytes = text === '' ? null : parseSize(text);
        if (text !== '' && bytes === null) return void await renderUsers(req, res, 400, `"${text.slice(0, 40)}" is not a size. Use e.g. 500MiB or 10GiB, or leave it empty for the default.`);
        changes.quotaBytes = bytes;
        break;
      }
      default:
        return void await renderUsers(req, res, 400, 'Unknown action.');
    }
    let effects;
    try {
      effects = await d.accounts.adminUpdate(id, changes);
    } catch (err) {
      return void await renderUsers(req, res, 400, formError(err));
    }
    // A disabled user or a reset password ends the user's sessions at once.
    if (changes.disabled === true || changes.password !== undefined) await d.sessions.endAllForUser(id);
    await d.audit.record({
      actor: admin.id,
      action: adminAction(changes),
      outcome: 'success',
      subjectUserId: id,
      ...clientOf(req),
      details: {
        disabled: changes.disabled,
        passwordReset: changes.password !== undefined,
        quotaBytes: changes.quotaBytes,
        revokedTokens: effects.revokedTokens,
        revokedShares: effects.revokedShares,
        via: 'page',
      },
    });
    if (id === admin.id && changes.password !== undefined) return void res.redirect(303, '/login?msg=signed-out');
    res.redirect(303, '/admin/users?msg=user-updated');
  });

  const targetOf = async (req: Request) => {
    const id = String(req.params.id);
    const target = /^[0-9a-f]{32}$/.test(id) ? await d.accounts.users.byId(id) : undefined;
    if (!target) throw new AppError('not_found', 'no such user');
    return target;
  };

  const renderUser = async (req: Request, res: Response, status = 200, error: string | null = null) => {
    const target = await targetOf(req);
    res.status(status).render('admin-user', {
      title: target.username,
      nav: 'users',
      target,
      self: target.id === webUser(req).id,
      shares: await presentShares(d.bundles, await d.shares.repo.listForOwner(target.id)),
      fileCount: await d.vault.files.countForOwner(target.id),
      usage: await d.vault.quota.usageOf(target.id),
      others: (await d.accounts.users.list()).filter((u) => u.id !== target.id && !u.disabled),
      factors: await d.mfa.summary(target.id),
      hold: (await d.lifecycle.holds.get('user', target.id)) ?? null,
      error,
    });
  };

  // One user's links (to revoke) and the deletion of a departing user.
  r.get('/admin/users/:id', (req, res) => renderUser(req, res));

  r.post('/admin/users/:id/shares/revoke-all', async (req, res) => {
    const target = await targetOf(req);
    const revoked = await d.shares.repo.revokeAllForOwner(target.id, Date.now());
    await d.audit.record({ actor: webUser(req).id, action: 'share.revoke_all', outcome: 'success', subjectUserId: target.id, ...clientOf(req), details: { revoked, by: 'admin', via: 'page' } });
    res.redirect(303, `/admin/users/${target.id}?msg=links-revoked`);
  });

  r.post('/admin/users/:id/shares/:shareId/revoke', async (req, res) => {
    const target = await targetOf(req);
    const share = await d.shares.ownedBy(target.id, String(req.params.shareId));
    if (await d.shares.repo.revoke(share.id, target.id, Date.now())) {
      await d.audit.record({ actor: webUser(req).id, action: 'share.revoke', outcome: 'success', subjectUserId: target.id, fileId: share.fileId, shareId: share.id, ...clientOf(req), details: { by: 'admin', via: 'page' } });
    }
    res.redirect(303, `/admin/users/${target.id}?msg=link-revoked`);
  });

  r.post('/admin/users/:id/delete', async (req, res) => {
    const admin = webUser(req);
    const target = await targetOf(req);
    if (target.id === admin.id) return void await renderUser(req, res, 400, 'You cannot delete your own account here.');
    if (field(req, 'confirmName') !== target.username) return void await renderUser(req, res, 400, `Type "${target.username}" to confirm.`);
    const mode = field(req, 'files');
    if (mode !== 'transfer' && mode !== 'delete') return void await renderUser(req, res, 400, 'Choose whether to transfer or delete their files.');
    try {
      await deleteUser(
        {
          db: d.db,
          accounts: d.accounts,
          vault: d.vault,
          endSessions: (id) => d.sessions.endAllForUser(id),
          dropUploads: (id) => d.tus.terminateAllFor(id),
          record: (e) => d.audit.record({ ...e, actor: admin.id, ...clientOf(req), details: { ...e.details, via: 'page' } }),
        },
        target.id,
        mode === 'transfer' ? { transferTo: field(req, 'transferTo') } : { deleteFiles: true },
      );
    } catch (err) {
      if (err instanceof AppError && err.code === 'not_found') return void await renderUser(req, res, 400, 'Choose an active user to receive the files.');
      return void await renderUser(req, res, 400, formError(err));
    }
    res.redirect(303, '/admin/users?msg=user-deleted');
  });

  r.get('/admin/audit', async (req, res) => {
    const filters = { action: query(req, 'action'), outcome: query(req, 'outcome'), actor: query(req, 'actor'), fileId: query(req, 'fileId') };
    const before = /^\d{1,15}$/.test(query(req, 'before')) ? Number(query(req, 'before')) : undefined;
    // The actor filter takes a user name as well as a raw actor (user id, share:<id>, anonymous).
    const actorUser = filters.actor ? await d.accounts.users.byUsername(filters.actor) : undefined;
    const rows = await d.audit.list({
      viewerId: null,
      limit: AUDIT_PAGE + 1,
      before,
      action: filters.action || undefined,
      outcome: filters.outcome || undefined,
      actor: actorUser?.id ?? (filters.actor || undefined),
      fileId: /^[0-9a-f]{32}$/.test(filters.fileId) ? filters.fileId : undefined,
    });
    const events = rows.slice(0, AUDIT_PAGE);
    const names = new Map((await d.accounts.users.list()).map((u) => [u.id, u.username]));
    const nextQuery = rows.length > AUDIT_PAGE ? new URLSearchParams({ ...filters, before: String(events.at(-1)!.seq) }).toString() : null;
    res.render('admin-audit', {
      title: 'Audit log',
      nav: 'audit',
      chain: await d.audit.verify(),
      events,
      names,
      filters,
      actions: await d.audit.actions(),
      nextQuery,
      paged: before !== undefined,
    });
  });

  return r;
}
