/** Request facts that services record (client address, user agent) and the public base URL. */
import type { Request } from 'express';

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
