/**
 * Rate limits for password, setup-code and share-password guessing (express-rate-limit).
 * Limits are per client IP and per IP+username (or per share), never a lockout of the account
 * itself, so an attacker cannot lock out a chosen user. Counters live in the shared database
 * (http/rate-limit-store.ts), so they count across every instance.
 */
import type { Request, RequestHandler } from 'express';
import { ipKeyGenerator, rateLimit, type Store } from 'express-rate-limit';
import { AppError } from '../errors.js';
import { normalizeUsername } from '../services/accounts.js';

declare module 'express-serve-static-core' {
  interface Request {
    /** The account whose password this request checks (set by limitAccount, read by per-user limiters). */
    limitAccount?: string;
  }
}

/**
 * Names the account whose password the request checks, before the per-user limiter runs. Login
 * routes take it from the form or body; password-change routes from the signed-in caller, never
 * from the body (so a guesser cannot charge their guesses to somebody else's budget).
 */
export function limitAccount(pick: (req: Request) => unknown): RequestHandler {
  return (req, _res, next) => {
    const v = pick(req);
    req.limitAccount = typeof v === 'string' ? v : '';
    next();
  };
}

export interface LimitOptions {
  /** Where the counters live: one store per limiter (DbRateLimitStores.for), shared by every instance. */
  store: Store;
  windowMs: number;
  limit: number;
  /** Count only failed attempts (status >= 400). */
  failuresOnly?: boolean;
  /** Count only 401 answers (wrong passwords), not other outcomes. */
  countOnly401?: boolean;
  /** Key by IP plus the account named by limitAccount(), normalised as for the user lookup. */
  perAccount?: boolean;
  /** Key by this value instead of the IP (e.g. a per-share ceiling). */
  key?: (req: Request) => string;
  /** Requests for which the limiter does nothing. */
  skip?: (req: Request) => boolean;
  /** Called on each refused request (for the audit log). */
  onLimited?: (req: Request) => unknown;
}

/** The limiters the account routes use: setup, sign-in, and the current password of a change. */
export interface PasswordLimits {
  setup: RequestHandler;
  /** Before a sign-in: the account is the one named in the body. */
  login: RequestHandler[];
  /** Before a password change: the account is the signed-in caller; same budgets as login. */
  passwordCheck: RequestHandler[];
  /** Before a second-factor code or passkey: the account is the half-signed-in (or signed-in) user; same budgets as login. */
  secondFactor: RequestHandler[];
}

/** A limiter answering 429 rate_limited with Retry-After. */
export function limiter(o: LimitOptions): RequestHandler {
  return rateLimit({
    windowMs: o.windowMs,
    limit: o.limit,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    store: o.store,
    skipSuccessfulRequests: (o.failuresOnly ?? false) || (o.countOnly401 ?? false),
    ...(o.countOnly401 ? { requestWasSuccessful: (_req: Request, res: { statusCode: number }) => res.statusCode !== 401 } : {}),
    ...(o.skip ? { skip: o.skip } : {}),
    keyGenerator(req: Request) {
      if (o.key) return o.key(req);
      const ip = ipKeyGenerator(req.ip ?? 'unknown');
      if (!o.perAccount) return ip;
      // The same normalisation as the lookup: ' alice', 'ALICE' and '\talice' share one budget.
      return `${ip}|${normalizeUsername(req.limitAccount ?? '').slice(0, 64)}`;
    },
    async handler(req, _res, next) {
      const reset = (req as Request & { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime?.getTime();
      const seconds = Math.max(1, Math.ceil(((reset ?? Date.now() + o.windowMs) - Date.now()) / 1000));
      req.log?.warn({ code: 'rate_limited' }, 'rate limit hit');
      try {
        // Recorded before the refusal is sent, so the audit row exists once the client sees 429.
        await o.onLimited?.(req);
      } catch (err) {
        req.log?.warn({ err }, 'could not record a rate-limit hit');
      }
      next(new AppError('rate_limited', `too many attempts; try again in ${seconds} seconds`, { 'Retry-After': String(seconds) }));
    },
  });
}
