/**
 * Rate limits for password and setup-code guessing (express-rate-limit). Limits are per
 * client IP and per IP+username, never a lockout of the account itself, so an attacker
 * cannot lock out a chosen user.
 */
import type { Request, RequestHandler } from 'express';
import { ipKeyGenerator, rateLimit } from 'express-rate-limit';
import { AppError } from '../errors.js';

export interface LimitOptions {
  windowMs: number;
  limit: number;
  /** Count only failed attempts (status >= 400). */
  failuresOnly?: boolean;
  /** Key by IP plus this request field (lower-cased), e.g. the username. */
  keyField?: string;
}

/** A limiter answering 429 rate_limited with Retry-After. */
export function limiter(o: LimitOptions): RequestHandler {
  return rateLimit({
    windowMs: o.windowMs,
    limit: o.limit,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    skipSuccessfulRequests: o.failuresOnly ?? false,
    keyGenerator(req: Request) {
      const ip = ipKeyGenerator(req.ip ?? 'unknown');
      if (!o.keyField) return ip;
      const v = (req.body as Record<string, unknown> | undefined)?.[o.keyField];
      return `${ip}|${typeof v === 'string' ? v.toLowerCase().slice(0, 64) : ''}`;
    },
    handler(req, _res, next) {
      const reset = (req as Request & { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime?.getTime();
      const seconds = Math.max(1, Math.ceil(((reset ?? Date.now() + o.windowMs) - Date.now()) / 1000));
      req.log?.warn({ code: 'rate_limited' }, 'rate limit hit');
      next(new AppError('rate_limited', `too many attempts; try again in ${seconds} seconds`, { 'Retry-After': String(seconds) }));
    },
  });
}
