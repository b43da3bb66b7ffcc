/**
 * Recipient side of a share link (no account): the landing page, the password form, and
 * the bytes. Unknown, revoked, expired and exhausted links all get the same 404, so a
 * caller learns nothing about which links exist.
 */
import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import { AppError } from '../../errors.js';
import type { AuditLog } from '../../services/audit.js';
import type { ResolvedShare, SharesService } from '../../services/shares.js';
import type { VaultService } from '../../services/vault.js';
import { sendFileContent } from '../content.js';
import { clientOf } from '../context.js';
import type { Csrf } from '../csrf.js';
import { limiter } from '../rate-limit.js';

export interface RecipientDeps {
  vault: VaultService;
  shares: SharesService;
  audit: AuditLog;
  csrf: Csrf;
  passwordLimit: { perIp: number; perShare: number; windowMs: number };
}

const GONE = 'this link does not exist or is no longer available';

/** The password a request carries: a form field, or HTTP Basic auth with any user name. */
function passwordOf(req: Request): string | undefined {
  if (req.method === 'POST') {
    const p = (req.body as Record<string, unknown> | undefined)?.password;
    return typeof p === 'string' ? p : undefined;
  }
  const m = /^Basic ([A-Za-z0-9+/=]{1,2000})$/.exec(req.headers.authorization ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon === -1 ? undefined : decoded.slice(colon + 1);
}

export function humanSize(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} ${n === 1 ? 'byte' : 'bytes'}` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function recipientRoutes(d: RecipientDeps): Router {
  const r = Router();
  const tokenKey = (req: Request) => d.shares.tokenKey(String(req.params.token));

  const onLimited = (req: Request) => {
    d.audit.recordSummarised(`share-pw:${req.ip}:${tokenKey(req)}`, {
      actor: 'anonymous',
      action: 'rate_limit.hit',
      outcome: 'denied',
      ...clientOf(req),
      details: { scope: 'share password' },
    });
  };
  // Only requests that carry a password count, and only wrong ones (401) use up the budget.
  const common = {
    windowMs: d.passwordLimit.windowMs,
    skip: (req: Request) => passwordOf(req) === undefined,
    countOnly401: true,
    onLimited,
  };
  const perIp: RequestHandler = limiter({ ...common, limit: d.passwordLimit.perIp });
  // Per-share ceiling: survives an attacker spreading guesses over many addresses.
  const perShare: RequestHandler = limiter({ ...common, limit: d.passwordLimit.perShare, key: tokenKey });

  const resolve = (req: Request): ResolvedShare | null => d.shares.resolve(String(req.params.token), d.vault.files);

  const missingPage = (res: Response) => res.status(404).render('share-missing');

  const renderDetails = (req: Request, res: Response, s: ResolvedShare, ticket?: string) => {
    const base = `/s/${encodeURIComponent(String(req.params.token))}/content`;
    res.setHeader('Cache-Control', 'no-store');
    res.render('share', {
      file: s.file,
      sha256: s.file.sha256.toString('hex'),
      humanSize,
      expiresIso: new Date(s.share.expiresAt).toISOString(),
      expiresHuman: new Date(s.share.expiresAt).toUTCString(),
      remaining: s.share.maxDownloads === null ? null : Math.max(0, s.share.maxDownloads - s.share.downloads),
      downloadHref: ticket ? `${base}?ticket=${encodeURIComponent(ticket)}` : base,
    });
  };

  const renderPasswordForm = (req: Request, res: Response, status: number, error: string | null) => {
    res.setHeader('Cache-Control', 'no-store');
    res.status(status).render('share-password', {
      action: `/s/${encodeURIComponent(String(req.params.token))}`,
      csrfToken: d.csrf.token(req, res),
      error,
    });
  };

  const passwordFailure = (req: Request, s: ResolvedShare) =>
    d.audit.record({
      actor: `share:${s.share.id}`,
      action: 'share.password_failure',
      outcome: 'failure',
      subjectUserId: s.share.ownerId,
      fileId: s.file.id,
      shareId: s.share.id,
      ...clientOf(req),
    });

  r.get('/s/:token', (req, res) => {
    const s = resolve(req);
    if (!s) return void missingPage(res);
    const ticket = typeof req.query.ticket === 'string' ? req.query.ticket : undefined;
    if (s.share.passwordHash && !(ticket && d.shares.checkTicket(s.share, ticket))) {
      // Name, size and checksum are not shown before the password is given.
      return void renderPasswordForm(req, res, 200, null);
    }
    renderDetails(req, res, s, ticket);
  });

  r.post('/s/:token', express.urlencoded({ extended: false, limit: '8kb' }), (req, _res, next) => {
    d.csrf.check(req);
    next();
  }, perIp, perShare, async (req, res) => {
    const s = resolve(req);
    if (!s) return void missingPage(res);
    const password = passwordOf(req) ?? '';
    if (!(await d.shares.checkPassword(s.share, password))) {
      passwordFailure(req, s);
      return void renderPasswordForm(req, res, 401, 'That password is not right. Try again.');
    }
    // A signed ticket: the browser downloads with a plain, resumable GET, and the password
    // hash is not recomputed for every Range request.
    const ticket = d.shares.issueTicket(s.share);
    res.redirect(303, `/s/${encodeURIComponent(String(req.params.token))}/content?ticket=${encodeURIComponent(ticket)}`);
  });

  const content: RequestHandler = async (req, res) => {
    const s = resolve(req);
    if (!s) throw new AppError('not_found', GONE);
    if (s.share.passwordHash) {
      const ticket = typeof req.query.ticket === 'string' ? req.query.ticket : undefined;
      if (!(ticket && d.shares.checkTicket(s.share, ticket))) {
        const password = passwordOf(req);
        const challenge = { 'WWW-Authenticate': 'Basic realm="shared file", charset="UTF-8"' };
        if (password === undefined) throw new AppError('unauthorized', 'this link needs a password (HTTP Basic auth, any user name)', challenge);
        if (!(await d.shares.checkPassword(s.share, password))) {
          passwordFailure(req, s);
          throw new AppError('unauthorized', 'wrong password for this link', challenge);
        }
      }
    }
    const result = await sendFileContent(req, res, d.vault, s.file, {
      begin: (range, length, deliversLastByte) => {
        const reservation = d.shares.reserve(s.share, s.file, length, deliversLastByte);
        if (!reservation) throw new AppError('not_found', GONE);
        return {
          heartbeat: () => d.shares.refresh(reservation),
          end: (bytesSent, completed) => d.shares.settle(reservation, bytesSent, completed),
        };
      },
    });
    if (req.method === 'GET') {
      d.audit.record({
        actor: `share:${s.share.id}`,
        action: 'share.download',
        outcome: result.completed ? 'success' : 'failure',
        subjectUserId: s.share.ownerId,
        fileId: s.file.id,
        shareId: s.share.id,
        ...clientOf(req),
        details: { start: result.range.start, end: result.range.end, bytesSent: result.bytesSent, completed: result.completed, integrityError: result.integrityError ?? false },
      });
    }
  };
  r.head('/s/:token/content', perIp, perShare, content);
  r.get('/s/:token/content', perIp, perShare, content);

  return r;
}
