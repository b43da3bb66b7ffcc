/**
 * Recipient side of a share link (no account): the landing page, the password form, and
 * the bytes. Unknown, revoked, expired and exhausted links all get the same 404, so a
 * caller learns nothing about which links exist.
 */
import type { DbRateLimitStores } from '../rate-limit-store.js';
import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import { AppError } from '../../errors.js';
import type { AuditLog } from '../../services/audit.js';
import type { ResolvedShare, SharesService } from '../../services/shares.js';
import type { VaultService } from '../../services/vault.js';
import { decideRangeFor, sendFileContent, streamBody, type TransferHold } from '../content.js';
import type { BundlesService, ResolvedBundle } from '../../services/bundles.js';
import type { Reservation } from '../../services/shares.js';
import { zipRange, zipStream } from '../../services/zip.js';
import { Readable } from 'node:stream';
import { clientOf } from '../context.js';
import type { Csrf } from '../csrf.js';
import { limiter } from '../rate-limit.js';
import { PLACEHOLDER_NAME, verifyCommands } from '../shell-quote.js';
import type { LifecycleService } from '../../services/lifecycle.js';

export interface RecipientDeps {
  vault: VaultService;
  shares: SharesService;
  bundles: BundlesService;
  audit: AuditLog;
  /** Purges a file after the completed last download of a "delete after" link. */
  lifecycle: LifecycleService;
  csrf: Csrf;
  passwordLimit: { perIp: number; perShare: number; windowMs: number; stores: DbRateLimitStores };
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

  const onLimited = async (req: Request) => {
    await d.audit.recordSummarised(`share-pw:${req.ip}:${tokenKey(req)}`, {
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
  const perIp: RequestHandler = limiter({ ...common, store: d.passwordLimit.stores.for('share-password-ip'), limit: d.passwordLimit.perIp });
  // Per-share ceiling: survives an attacker spreading guesses over many addresses.
  const perShare: RequestHandler = limiter({ ...common, store: d.passwordLimit.stores.for('share-password-link'), limit: d.passwordLimit.perShare, key: tokenKey });

  const ticketOf = (req: Request): string | undefined => (typeof req.query.ticket === 'string' ? req.query.ticket : undefined);
  const resolve = (req: Request, ticket?: string): Promise<ResolvedShare | null> => d.shares.resolve(String(req.params.token), d.vault.files, ticket);

  const missingPage = (res: Response) => res.status(404).render('share-missing');

  // The Download button always carries a ticket: a second click (or the browser's retry) is
  // the same download and does not spend the link's budget again.
  const renderDetails = (req: Request, res: Response, s: ResolvedShare, ticket: string) => {
    const base = `/s/${encodeURIComponent(String(req.params.token))}/content`;
    res.setHeader('Cache-Control', 'no-store');
    res.render('share', {
      file: s.file,
      sha256: s.file.sha256.toString('hex'),
      humanSize,
      expiresIso: new Date(s.share.expiresAt).toISOString(),
      expiresHuman: new Date(s.share.expiresAt).toUTCString(),
      remaining: s.share.maxDownloads === null ? null : Math.max(0, s.share.maxDownloads - s.share.downloads),
      downloadHref: `${base}?ticket=${encodeURIComponent(ticket)}`,
      // Quoted for each shell: the name is the uploader's choice and must not run as code.
      verify: { ...verifyCommands(s.file.name), placeholderName: PLACEHOLDER_NAME },
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

  const passwordFailure = (req: Request, share: ResolvedShare['share'], fileId: string | null) =>
    d.audit.record({
      actor: `share:${share.id}`,
      action: 'share.password_failure',
      outcome: 'failure',
      subjectUserId: share.ownerId,
      fileId,
      shareId: share.id,
      ...clientOf(req),
    });

  /** Lets a download of a protected link through with its ticket or the right password (HTTP Basic); else 401. */
  const checkAccess = async (req: Request, s: { share: ResolvedShare['share']; ticket: ResolvedShare['ticket'] }, fileId: string | null) => {
    if (!s.share.passwordHash || s.ticket) return;
    const password = passwordOf(req);
    const challenge = { 'WWW-Authenticate': 'Basic realm="shared file", charset="UTF-8"' };
    if (password === undefined) throw new AppError('unauthorized', 'this link needs a password (HTTP Basic auth, any user name)', challenge);
    if (!(await d.shares.checkPassword(s.share, password))) {
      await passwordFailure(req, s.share, fileId);
      throw new AppError('unauthorized', 'wrong password for this link', challenge);
    }
  };

  const resolveBundle = (req: Request, ticket?: string): Promise<ResolvedBundle | null> => d.bundles.resolve(String(req.params.token), ticket);

  // A bundle's page: every file with its own button, and the zip; all links carry the ticket.
  const renderBundle = (req: Request, res: Response, b: ResolvedBundle, ticket: string) => {
    const base = `/s/${encodeURIComponent(String(req.params.token))}`;
    const q = `?ticket=${encodeURIComponent(ticket)}`;
    res.setHeader('Cache-Control', 'no-store');
    res.render('share-bundle', {
      files: b.files.map((f) => ({ id: f.id, name: f.name, size: f.size, mimeType: f.mimeType, sha256: f.sha256.toString('hex'), href: `${base}/files/${f.id}${q}` })),
      withdrawn: b.withdrawn,
      zipHref: `${base}/zip${q}`,
      zipSize: b.layout.size,
      humanSize,
      expiresIso: new Date(b.share.expiresAt).toISOString(),
      expiresHuman: new Date(b.share.expiresAt).toUTCString(),
      remaining: b.share.maxDownloads === null ? null : Math.max(0, b.share.maxDownloads - b.share.downloads),
    });
  };

  /** The transfer hold of a bundle reservation (the same heartbeat and settle as single files). */
  const holdOf = (reservation: Reservation): TransferHold => ({
    heartbeatMs: d.shares.heartbeatMs,
    heartbeat: (bytesSent) => d.shares.refresh(reservation, bytesSent),
    end: (bytesSent, completed) => d.shares.settle(reservation, bytesSent, completed),
  });

  r.get('/s/:token', async (req, res) => {
    const s = await resolve(req, ticketOf(req));
    if (!s) {
      const b = await resolveBundle(req, ticketOf(req));
      if (!b) return void missingPage(res);
      if (b.share.passwordHash && !b.ticket) return void renderPasswordForm(req, res, 200, null);
      return void renderBundle(req, res, b, b.ticket ? ticketOf(req)! : d.shares.issueTicket(b.share));
    }
    if (s.share.passwordHash && !s.ticket) {
      // Name, size and checksum are not shown before the password is given.
      return void renderPasswordForm(req, res, 200, null);
    }
    renderDetails(req, res, s, s.ticket ? ticketOf(req)! : d.shares.issueTicket(s.share));
  });

  r.post('/s/:token', express.urlencoded({ extended: false, limit: '8kb' }), (req, _res, next) => {
    d.csrf.check(req);
    next();
  }, perIp, perShare, async (req, res) => {
    // No ticket here: a new password entry is a new recipient, who gets a new ticket.
    const s = await resolve(req);
    if (!s) {
      const b = await resolveBundle(req);
      if (!b) return void missingPage(res);
      if (!(await d.shares.checkPassword(b.share, passwordOf(req) ?? ''))) {
        await passwordFailure(req, b.share, null);
        return void renderPasswordForm(req, res, 401, 'That password is not right. Try again.');
      }
      return void renderBundle(req, res, b, d.shares.issueTicket(b.share));
    }
    const password = passwordOf(req) ?? '';
    if (!(await d.shares.checkPassword(s.share, password))) {
      await passwordFailure(req, s.share, s.file.id);
      return void renderPasswordForm(req, res, 401, 'That password is not right. Try again.');
    }
    // The details page (name, size, SHA-256, expiry), whose Download button carries a signed
    // ticket: the browser downloads with a plain, resumable GET, the password hash is not
    // recomputed for every Range request, and repeats of this download count once.
    renderDetails(req, res, s, d.shares.issueTicket(s.share));
  });

  const content: RequestHandler = async (req, res) => {
    const s = await resolve(req, ticketOf(req));
    if (!s) throw new AppError('not_found', GONE);
    await checkAccess(req, s, s.file.id);
    let counted = false;
    const result = await sendFileContent(req, res, d.vault, s.file, {
      begin: async (range, length, deliversLastByte) => {
        const reservation = await d.shares.reserve(s, length, deliversLastByte);
        if (!reservation) throw new AppError('not_found', GONE);
        return {
          heartbeatMs: d.shares.heartbeatMs,
          heartbeat: (bytesSent) => d.shares.refresh(reservation, bytesSent),
          end: async (bytesSent, completed) => {
            // Only a download the budget counted (completed, holding its slot) can be the last one.
            counted = await d.shares.settle(reservation, bytesSent, completed, { ip: req.ip ?? null });
            return counted;
          },
        };
      },
    });
    if (req.method === 'GET') {
      await d.audit.record({
        actor: `share:${s.share.id}`,
        action: 'share.download',
        outcome: result.completed ? 'success' : 'failure',
        subjectUserId: s.share.ownerId,
        fileId: s.file.id,
        shareId: s.share.id,
        ...clientOf(req),
        details: { start: result.range.start, end: result.range.end, bytesSent: result.bytesSent, completed: result.completed, integrityError: result.integrityError ?? false, repeat: s.repeat },
      });
    }
    // "Delete the file after its last allowed download": purged now if this was it (a missed
    // one, e.g. a crash here, is found by the purge job, which selects such files too).
    if (counted && s.share.deleteFileAfter) {
      await d.lifecycle.afterDownload(s.file.id).catch((err: unknown) => req.log?.warn({ err, fileId: s.file.id }, 'purge after last download failed; the purge job retries'));
    }
  };
  r.head('/s/:token/content', perIp, perShare, content);
  r.get('/s/:token/content', perIp, perShare, content);

  const recordDownload = (req: Request, b: ResolvedBundle, fileId: string | null, details: Record<string, unknown>) =>
    d.audit.record({
      actor: `share:${b.share.id}`,
      action: 'share.download',
      outcome: details.completed ? 'success' : 'failure',
      subjectUserId: b.share.ownerId,
      fileId,
      shareId: b.share.id,
      ...clientOf(req),
      details: { ...details, bundle: true, repeat: b.repeat },
    });

  // One file of a bundle: the same Range, ticket and password rules as a single-file link.
  const bundleFile: RequestHandler = async (req, res) => {
    const b = await resolveBundle(req, ticketOf(req));
    if (!b) throw new AppError('not_found', GONE);
    await checkAccess(req, b, null);
    const file = b.files.find((f) => f.id === req.params.fileId);
    if (!file) throw new AppError('not_found', 'this file is not (or no longer) in this link');
    const result = await sendFileContent(req, res, d.vault, file, {
      begin: async (_range, length, deliversLastByte) => {
        const reservation = await d.bundles.reserve(b, length, deliversLastByte);
        if (!reservation) throw new AppError('not_found', GONE);
        return holdOf(reservation);
      },
    });
    if (req.method === 'GET') {
      await recordDownload(req, b, file.id, { start: result.range.start, end: result.range.end, bytesSent: result.bytesSent, completed: result.completed, integrityError: result.integrityError ?? false });
    }
  };
  r.head('/s/:token/files/:fileId', perIp, perShare, bundleFile);
  r.get('/s/:token/files/:fileId', perIp, perShare, bundleFile);

  // The whole bundle as one zip: its bytes are known before streaming, so it has a length, a
  // strong ETag and Range (decrypting only the covering chunks of the covering files).
  const bundleZip: RequestHandler = async (req, res) => {
    const b = await resolveBundle(req, ticketOf(req));
    if (!b) throw new AppError('not_found', GONE);
    await checkAccess(req, b, null);
    const { layout, etag } = b;
    const decision = decideRangeFor(req, etag, layout.size);
    if (decision.kind === 'unsatisfiable') {
      throw new AppError('range_not_satisfiable', `the zip has ${layout.size} bytes`, { 'Content-Range': `bytes */${layout.size}` });
    }
    const start = decision.kind === 'partial' ? decision.start : 0;
    const end = decision.kind === 'partial' ? decision.end : layout.size - 1;
    const writeHead = () => {
      res.status(decision.kind === 'partial' ? 206 : 200);
      res.setHeader('Content-Type', 'application/zip');
      res.setHeader('Content-Disposition', 'attachment; filename="shared-files.zip"');
      res.setHeader('ETag', etag);
      res.setHeader('Accept-Ranges', 'bytes');
      res.setHeader('X-Content-Type-Options', 'nosniff');
      res.setHeader('Content-Security-Policy', "sandbox; default-src 'none'");
      res.setHeader('Cache-Control', 'private, no-store');
      res.setHeader('Content-Length', String(end - start + 1));
      if (decision.kind === 'partial') res.setHeader('Content-Range', `bytes ${start}-${end}/${layout.size}`);
    };
    if (req.method === 'HEAD') {
      writeHead();
      return void res.end();
    }
    // A range needs every CRC up front; files from before CRCs were recorded get theirs once.
    if (decision.kind === 'partial') await d.bundles.ensureCrcs(b);
    const reservation = await d.bundles.reserve(b, end - start + 1, end === layout.size - 1);
    if (!reservation) throw new AppError('not_found', GONE);
    const result = await streamBody(req, res, holdOf(reservation), { shareId: b.share.id, zip: true }, async () => {
      const body =
        decision.kind === 'partial'
          ? Readable.from(zipRange(layout, b.entries, start, end, (i, a, z) => d.vault.open(b.files[i]!, { start: a, end: z })), { objectMode: false })
          : zipStream(b.entries, d.bundles.forceZip64, (i) => Promise.resolve(d.bundles.fullEntry(b, i)));
      writeHead();
      return body;
    });
    await recordDownload(req, b, null, { zip: true, start, end, bytesSent: result.bytesSent, completed: result.completed, integrityError: result.integrityError ?? false });
  };
  r.head('/s/:token/zip', perIp, perShare, bundleZip);
  r.get('/s/:token/zip', perIp, perShare, bundleZip);

  return r;
}
