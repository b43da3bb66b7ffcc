/**
 * Bearer-token authentication for /api. Cookies are ignored here on purpose, so no
 * cross-site request can ride on a browser session.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { AppError } from '../errors.js';
import type { AccountsService, Principal } from '../services/accounts.js';
import type { MfaService } from '../services/mfa.js';

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
  }
}

const BEARER = /^Bearer ([A-Za-z0-9_-]{1,200})$/;

/**
 * Requires a valid bearer token; sets req.principal. Missing or bad credentials give 401, and
 * so does the token of a user REQUIRE_2FA covers who has no second factor yet
 * (mfa_enrolment_required: it works again once they enrol on the web page).
 */
export function requireToken(accounts: AccountsService, mfa?: MfaService): RequestHandler {
  return async (req: Request, _res: Response, next: NextFunction) => {
    const header = req.headers.authorization;
    if (!header) throw new AppError('unauthorized', 'send an API token as "Authorization: Bearer <token>"');
    const m = header.length <= 256 ? BEARER.exec(header) : null;
    if (!m) throw new AppError('unauthorized', 'malformed Authorization header; expected "Bearer <token>"');
    req.principal = await accounts.authenticateToken(m[1]!);
    if (mfa && (await mfa.mustEnrol(req.principal.user))) {
      throw new AppError('mfa_enrolment_required', 'this account must set up a second factor (REQUIRE_2FA): sign in on the web page and enrol one; your tokens work again after that');
    }
    req.log?.debug({ userId: req.principal.user.id, tokenId: req.principal.tokenId }, 'authenticated');
    next();
  };
}

/** Requires the authenticated caller to be an admin. */
export function requireAdmin(req: Request, _res: Response, next: NextFunction): void {
  if (req.principal?.user.role !== 'admin') throw new AppError('forbidden', 'this needs an admin');
  next();
}

/** The authenticated principal (only valid behind requireToken). */
export function principal(req: Request): Principal {
  if (!req.principal) throw new AppError('unauthorized', 'not authenticated');
  return req.principal;
}
