/**
 * Who is signed in to the pages. The session only names a user id; the user is read again on
 * every request, so a disabled user or a reset password takes effect at once.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { UserRow } from '../../db/users.js';
import { AppError } from '../../errors.js';
import type { AccountsService } from '../../services/accounts.js';
import type { WebSessions } from '../../services/sessions.js';
import { clientOf } from '../context.js';

declare module 'express-serve-static-core' {
  interface Request {
    /** The signed-in user of a page request (never set on /api). */
    webUser?: UserRow;
  }
}

/** Loads the session's user into req.webUser and res.locals.user; ends sessions past the absolute timeout, of a disabled user, or of a user row that fails its MAC. */
export function loadUser(accounts: AccountsService, sessions: WebSessions, maxMs: number, now: () => number = Date.now): RequestHandler {
  return async (req, res, next) => {
    const s = req.session;
    if (!s?.uid) return next();
    // sessionUser refuses a disabled user and a user row that fails its integrity MAC.
    const user = await accounts.sessionUser(s.uid);
    if (!user || now() - (s.createdAt ?? 0) > maxMs) {
      s.destroy(() => next());
      return;
    }
    req.webUser = user;
    res.locals.user = user;
    res.locals.sessionKey = sessions.keyOf(req.sessionID);
    next();
  };
}

/** True when the client asked for JSON (the upload script), so errors and redirects become JSON. */
export function wantsJson(req: Request): boolean {
  return req.accepts(['text/html', 'application/json']) === 'application/json';
}

/** Requires a signed-in user: pages redirect to the sign-in page (and back afterwards). */
export function requireUser(req: Request, res: Response, next: NextFunction): void {
  if (req.webUser) return next();
  if (wantsJson(req)) throw new AppError('unauthorized', 'your session has ended; sign in again');
  const back = req.method === 'GET' ? req.originalUrl : '/';
  res.redirect(303, `/login?next=${encodeURIComponent(back)}`);
}

/** Requires an admin (after requireUser). */
export function requireAdminUser(req: Request, _res: Response, next: NextFunction): void {
  if (req.webUser?.role !== 'admin') throw new AppError('forbidden', 'this page is for administrators');
  next();
}

/** The signed-in user (only valid behind requireUser). */
export function webUser(req: Request): UserRow {
  if (!req.webUser) throw new AppError('unauthorized', 'not signed in');
  return req.webUser;
}

/** Starts a fresh session for `user` (a new id, so a planted id cannot ride into the account). */
export function signIn(req: Request, user: UserRow, stillValid: () => Promise<boolean>, now: () => number = Date.now): Promise<void> {
  return new Promise((resolve, reject) => {
    req.session.regenerate((err) => {
      if (err) return reject(err);
      const { ip, userAgent } = clientOf(req);
      req.session.uid = user.id;
      req.session.createdAt = now();
      req.session.ip = ip;
      req.session.ua = userAgent ? userAgent.slice(0, 200) : null;
      req.session.save((e) => {
        if (e) return reject(e);
        // Checked after the row is stored: an admin who disabled the user (or reset the
        // password) while the hash ran has ended their sessions already, before this one existed.
        stillValid().then((ok) => {
          if (ok) return resolve();
          req.session.destroy(() => reject(new AppError('unauthorized', 'invalid username or password')));
        }, reject);
      });
    });
  });
}

/** Ends the current session. */
export function signOut(req: Request): Promise<void> {
  return new Promise((resolve) => {
    if (!req.session) return resolve();
    req.session.destroy(() => resolve());
  });
}

/** Only local paths are followed after sign-in, so ?next= cannot send anyone elsewhere. */
export function safeNext(value: unknown): string {
  return typeof value === 'string' && /^\/(?![/\\])[\x21-\x7e]*$/.test(value) && !value.startsWith('/login') ? value : '/';
}
