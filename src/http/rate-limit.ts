/**
 * Rate limits for password, setup-code and share-password guessing (express-rate-limit).
 * Limits are per client IP and per IP+username (or per share), never a lockout of the account
 * itself, so an attacker cannot lock out a chosen user.
 */
import type { Request, RequestHandler } from 'express';
import { ipKeyGenerator, rateLimit } from 'express-rate-limit';
import { AppError } from '../errors.js';

export interface LimitOptions {
  windowMs: number;
  limit: number;
  /** Count only failed attempts (status >= 400). */
  failuresOnly?: boolean;
  /** Count only 401 answers (wrong passwords), not other outcomes. */
  countOnly401?: boolean;
  /** Key by IP plus this request body field (lower-cased), e.g. the username. */
  keyField?: string;
  /** Key by this value instead of the IP (e.g. a per-share ceiling). */
  key?: (req: Request) => string;
  /** Requests for which the limiter does nothing. */
  skip?: (req: Request) => boolean;
  /** Called on each refused request (for the audit log). */
  onLimited?: (req: Request) => void;
}

/** A limiter answering 429 rate_limited with Retry-After. */
export function limiter(o: LimitOptions): RequestHandler {
  return rateLimit({
    windowMs: o.windowMs,
    limit: o.limit,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    skipSuccessfulRequests: (o.failuresOnly ?? false) || (o.countOnly401 ?? false),
    ...(o.countOnly401 ? { requestWasSuccessful: (_req: Request, res: { statusCode: number }) => res.statusCode !== 401 } : {}),
    ...(o.skip ? { skip: o.skip } : {}),
    keyGenerator(req: Request) {
      if (o.key) return o.key(req);
      const ip = ipKeyGenerator(req.ip ?? 'unknown');
      if (!o.keyField) return ip;
      const v = (req.body as Record<string, unknown> | undefined)?.[o.keyField];
      return `${ip}|${typeof v === 'string' ? v.toLowerCase().slice(0, 64) : ''}`;
    },
    handler(req, _res, next) {
      const reset = (req as Request & { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime?.getTime();
      const seconds = Math.max(1, Math.ceil(((reset ?? Date.now() + o.windowMs) - Date.now()) / 1000));
      req.log?.warn({ code: 'rate_limited' }, 'rate limit hit');
      o.onLimited?.(req);
      next(new AppError('rate_limited', `too many attempts; try again in ${seconds} seconds`, { 'Retry-After': String(seconds) }));
    },
  });
}
