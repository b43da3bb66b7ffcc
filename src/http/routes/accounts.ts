/** Setup, API tokens, the caller's own account, and admin user management. */
import { Router, type RequestHandler } from 'express';
import { AppError } from '../../errors.js';
import type { AccountsService, SetupCode } from '../../services/accounts.js';
import type { VaultService } from '../../services/vault.js';
import { principal, requireAdmin } from '../auth.js';
import { presentToken, presentUser } from '../presenters.js';
import { idParam, mePatchBody, parse, setupBody, tokenCreateBody, userCreateBody, userPatchBody } from '../schemas.js';

export interface AccountsRoutesDeps {
  accounts: AccountsService;
  vault: VaultService;
  setup: SetupCode;
  auth: RequestHandler;
  limits: { setup: RequestHandler; loginPerIp: RequestHandler; loginPerUser: RequestHandler };
}

/** Routes that do not need a token: setup and token creation (both rate-limited). */
export function publicAccountRoutes(d: AccountsRoutesDeps): Router {
  const r = Router();

  r.post('/setup', d.limits.setup, async (req, res) => {
    if (!d.accounts.setupOpen()) throw new AppError('setup_closed', 'setup has already been completed');
    const body = parse(setupBody, req.body);
    if (!d.setup.matches(body.setupCode)) throw new AppError('forbidden', 'wrong setup code (see the server log or data/setup-code)');
    const user = await d.accounts.createUser(body.username, body.password, 'admin', { onlyIfNoUsers: true });
    d.setup.consume();
    req.log?.info({ userId: user.id }, 'setup completed: first admin created');
    res.status(201).json({ user: presentUser(user) });
  });

  r.post('/auth/tokens', d.limits.loginPerIp, d.limits.loginPerUser, async (req, res) => {
    const body = parse(tokenCreateBody, req.body);
    const user = await d.accounts.verifyPassword(body.username, body.password);
    const { row, token } = d.accounts.issueToken(user, body.name, body.expiresInSeconds);
    res.status(201).json({ ...presentToken(row), token });
  });

  return r;
}

/** Routes behind requireToken. */
export function accountRoutes(d: AccountsRoutesDeps): Router {
  const r = Router();

  r.get('/auth/tokens', (req, res) => {
    res.json({ tokens: d.accounts.tokens.listForUser(principal(req).user.id).map(presentToken) });
  });

  r.delete('/auth/tokens/:id', (req, res) => {
    const id = String(req.params.id);
    if (!idParam.safeParse(id).success || !d.accounts.tokens.revoke(principal(req).user.id, id, Date.now())) {
      throw new AppError('not_found', 'no such token');
    }
    res.status(204).end();
  });

  r.get('/me', (req, res) => {
    const { user } = principal(req);
    res.json({ ...presentUser(user), usageBytes: d.vault.files.usageOf(user.id) });
  });

  r.patch('/me', async (req, res) => {
    const body = parse(mePatchBody, req.body);
    const result = await d.accounts.changePassword(principal(req), body.currentPassword, body.newPassword);
    res.json({ ...presentUser(d.accounts.users.byId(principal(req).user.id)!), revokedTokens: result.revokedTokens });
  });

  r.post('/users', requireAdmin, async (req, res) => {
    const body = parse(userCreateBody, req.body);
    const user = await d.accounts.createUser(body.username, body.password, body.role);
    res.status(201).location(`/api/v1/users/${user.id}`).json(presentUser(user));
  });

  r.get('/users', requireAdmin, (_req, res) => {
    res.json({ users: d.accounts.users.list().map(presentUser) });
  });

  r.patch('/users/:id', requireAdmin, async (req, res) => {
    const id = String(req.params.id);
    if (!idParam.safeParse(id).success) throw new AppError('not_found', 'no such user');
    const body = parse(userPatchBody, req.body);
    res.json(presentUser(await d.accounts.adminUpdate(id, body)));
  });

  return r;
}
