/**
 * CSRF protection for forms (csrf-csrf, signed double-submit cookie). The secret is derived
 * from the master key with HKDF, so there is nothing extra to configure or leak. The cookie
 * is Secure whenever the request is HTTPS (directly or through a trusted proxy).
 */
import type { Request, Response } from 'express';
import { doubleCsrf, type DoubleCsrfUtilities } from 'csrf-csrf';
import { AppError } from '../errors.js';

export interface Csrf {
  /** A token for a form (sets or reuses the cookie). */
  token(req: Request, res: Response): string;
  /** Throws csrf_invalid unless the request carries a token matching its cookie. */
  check(req: Request): void;
}

/**
 * Builds CSRF helpers. `identify` binds tokens to something the request names (a session id,
 * or the share link for recipients who have no session).
 */
export function createCsrf(secret: Buffer, cookieName: string, identify: (req: Request) => string): Csrf {
  const make = (secure: boolean): DoubleCsrfUtilities =>
    doubleCsrf({
      getSecret: () => secret.toString('base64'),
      getSessionIdentifier: identify,
      cookieName: secure ? `__Host-${cookieName}` : cookieName,
      cookieOptions: { sameSite: 'strict', path: '/', secure, httpOnly: true },
      getCsrfTokenFromRequest: (req) => {
        const body = req.body as Record<string, unknown> | undefined;
        const fromBody = typeof body?._csrf === 'string' ? body._csrf : undefined;
        const fromQuery = typeof req.query._csrf === 'string' ? req.query._csrf : undefined;
        return (req.headers['x-csrf-token'] as string | undefined) ?? fromBody ?? fromQuery;
      },
    });
  const secureUtils = make(true);
  const plainUtils = make(false);
  const pick = (req: Request) => (req.secure ? secureUtils : plainUtils);
  return {
    token: (req, res) => pick(req).generateCsrfToken(req, res),
    check(req) {
      let ok = false;
      try {
        ok = pick(req).validateRequest(req);
      } catch {
        ok = false;
      }
      if (!ok) throw new AppError('csrf_invalid', 'this form has expired or did not come from this site; reload the page and try again');
    },
  };
}
