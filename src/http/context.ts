/** Request facts that services record (client address, user agent) and the public base URL. */
import type { NextFunction, Request, Response } from 'express';
import { isIP } from 'node:net';

const MALFORMED_FORWARDED_FOR = Symbol('sfs.malformedForwardedFor');

type Marked = Request & { [MALFORMED_FORWARDED_FOR]?: number };

/**
 * Pins req.ip to a real IP address. With TRUST_PROXY set, Express takes the client address
 * from X-Forwarded-For without checking that it is one, so `<img src=x>` would become the
 * address in audit rows, logs and rate-limit keys (a fresh key per forged value). Anything
 * that is not a valid IPv4/IPv6 address is replaced by the socket's address. Runs before the
 * request logger, which records the address when the request starts.
 */
export function pinClientAddress(req: Request, _res: Response, next: NextFunction): void {
  let ip = req.ip;
  // undefined only when the socket is already gone: nothing was forged, nothing to replace.
  if (ip !== undefined && isIP(ip) === 0) {
    ip = req.socket.remoteAddress;
    const header = req.headers['x-forwarded-for'];
    (req as Marked)[MALFORMED_FORWARDED_FOR] = typeof header === 'string' ? header.length : 0;
  }
  // Computed once and fixed for the request: every later reader sees the same checked value.
  Object.defineProperty(req, 'ip', { value: ip, configurable: true, enumerable: true, writable: false });
  next();
}

/**
 * Logs (after the request logger, so the line carries the request id) that pinClientAddress
 * refused X-Forwarded-For. Only the header's length is logged, never its content: it is
 * attacker-chosen and may be kilobytes long.
 */
export function warnMalformedForwardedFor(req: Request, _res: Response, next: NextFunction): void {
  const length = (req as Marked)[MALFORMED_FORWARDED_FOR];
  if (length !== undefined) {
    req.log?.warn({ code: 'forwarded_for_malformed', headerLength: length, ip: req.ip }, 'X-Forwarded-For does not name a valid IP address; using the socket address');
  }
  next();
}

/** Client address and user agent for audit rows (the address honours TRUST_PROXY only). */
export function clientOf(req: Request): { ip: string | null; userAgent: string | null } {
  return { ip: req.ip ?? null, userAgent: req.get('user-agent') ?? null };
}

const HOST = /^[A-Za-z0-9.-]{1,253}(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/;

/**
 * Base URL for generated links: PUBLIC_URL when set; otherwise the request's own scheme and
 * host (X-Forwarded-* only count when TRUST_PROXY says so). A malformed Host falls back to
 * localhost rather than being reflected.
 */
export function publicBase(req: Request, publicUrl: string | undefined): string {
  if (publicUrl) return publicUrl;
  const host = req.get('host') ?? '';
  const forwarded = req.app.get('trust proxy') ? req.get('x-forwarded-host')?.split(',')[0]?.trim() : undefined;
  const chosen = forwarded && HOST.test(forwarded) ? forwarded : host;
  return `${req.protocol}://${HOST.test(chosen) ? chosen : 'localhost'}`;
}
