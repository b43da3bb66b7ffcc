/**
 * The uploader's side of an upload request (no account): the page at /r/<token>, its password
 * form, and the two ways in for the bytes: multipart POST /r/<token> (the page, `curl -F`)
 * and PUT /r/<token>/<name> (`curl -T FILE URL/`). Both go through services/requests.ts
 * (resolveTarget, the lease, guard, commit) and the owner's encryption pipeline. Unknown,
 * expired, closed and full requests all get the same 404; an uploader only ever hears about
 * the files of their own upload.
 */
import express, { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { FileRow } from '../../db/files.js';
import { AppError } from '../../errors.js';
import type { AuditLog } from '../../services/audit.js';
import { chooseMimeType, cleanFileName } from '../../services/filenames.js';
import type { QuotaLease } from '../../services/quota.js';
import { SNIFF_BYTES, checkTypeByContent, checkTypeByName, type RequestLease, type RequestsService, type RequestUploadTarget } from '../../services/requests.js';
import type { TusService } from '../../services/tus.js';
import { tusRoutes } from './tus.js';
import type { VaultService } from '../../services/vault.js';
import { exemptFromBodyDeadline } from '../body-deadline.js';
import { clientOf } from '../context.js';
import type { Csrf } from '../csrf.js';
import { wantsErrorPage } from '../error-handler.js';
import type { DbRateLimitStores } from '../rate-limit-store.js';
import { limiter } from '../rate-limit.js';
import { acceptBody, multipartUpload } from '../upload.js';
import { humanSize } from './recipient.js';

export interface RequestUploadDeps {
  vault: VaultService;
  requests: RequestsService;
  audit: AuditLog;
  csrf: Csrf;
  maxFilesPerRequest: number;
  /** Resumable uploads at /r/<token>/tus/ (the owner's tus service, scoped to the request). */
  tus?: TusService;
  /** Tests: check tus answers against the documented operations. */
  onContractViolation?: (message: string) => void;
  limits: {
    /** Upload attempts per client address and per request, per window. */
    uploadsPerIp: number;
    uploadsPerRequest: number;
    /** Wrong passwords per client address and per request, per window (as for share links). */
    passwordPerIp: number;
    passwordPerRequest: number;
    windowMs: number;
    stores: DbRateLimitStores;
  };
}

/** What one upload holds while it streams (set by `prepare`). */
interface Upload {
  target: RequestUploadTarget;
  lease: RequestLease;
  quota: QuotaLease;
}

const GONE = 'this upload link does not exist or is no longer available';

/** The password a request carries as HTTP Basic auth (any user name), or a form field. */
function passwordOf(req: Request): string | undefined {
  const p = (req.body as Record<string, unknown> | undefined)?.password;
  if (req.method === 'POST' && req.is('application/x-www-form-urlencoded') && typeof p === 'string') return p;
  const m = /^Basic ([A-Za-z0-9+/=]{1,2000})$/.exec(req.headers.authorization ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon === -1 ? undefined : decoded.slice(colon + 1);
}

/**
 * True when a browser sent the request: browsers add Origin or Sec-Fetch-Site to every POST
 * and PUT and send our cookies; curl and scripts send none of these. Only browsers can be
 * made to send a request by another site, so only they must show the page's CSRF token.
 */
function fromBrowser(req: Request): boolean {
  return req.headers.origin !== undefined || req.headers['sec-fetch-site'] !== undefined || req.headers.cookie !== undefined;
}

const EMAIL = /^[^\s@<>()[\]\\,;:"]{1,64}@[^\s@<>()[\]\\,;:"]{1,189}$/;

/** The uploader's name and email as given (trimmed, controls removed), checked against what the request requires. */
function identityOf(target: RequestUploadTarget, name: unknown, email: unknown): { uploaderName: string | null; uploaderEmail: string | null } {
  const clean = (v: unknown) => (typeof v === 'string' ? v.replace(/[\p{Cc}\p{Cf}]/gu, '').trim() : '');
  const n = clean(name);
  const e = clean(email);
  if (n.length > 200) throw new AppError('validation_error', 'name: at most 200 characters', {}, true);
  if (e.length > 254 || (e !== '' && !EMAIL.test(e))) throw new AppError('validation_error', 'email: not an email address', {}, true);
  if (target.request.requireName && n === '') throw new AppError('validation_error', 'name: this request asks for your name; nothing was stored', {}, true);
  if (target.request.requireEmail && e === '') throw new AppError('validation_error', 'email: this request asks for your email address; nothing was stored', {}, true);
  return { uploaderName: n || null, uploaderEmail: e || null };
}

/** Receipt lines: name, size and SHA-256 of this upload's files only. */
function receiptOf(rows: FileRow[]): { receivedAt: string; files: { name: string; size: number; sha256: string }[] } {
  const at = rows[0]?.createdAt ?? Date.now();
  return { receivedAt: new Date(at).toISOString(), files: rows.map((f) => ({ name: f.name, size: f.size, sha256: f.sha256.toString('hex') })) };
}

/** The uploader routes, mounted before the owner's pages. */
export function requestUploadRoutes(d: RequestUploadDeps): Router {
  const r = Router();
  const L = d.limits;
  const tokenKey = (req: Request) => d.requests.tokenKey(String(req.params.token));
  const onLimited = (scope: string) => async (req: Request) => {
    await d.audit.recordSummarised(`${scope}:${req.ip}:${tokenKey(req)}`, { actor: 'anonymous', action: 'rate_limit.hit', outcome: 'denied', ...clientOf(req), details: { scope } });
  };
  // Every upload attempt counts (a flood of small bodies costs work and audit rows).
  const uploadsPerIp = limiter({ store: L.stores.for('request-upload-ip'), windowMs: L.windowMs, limit: L.uploadsPerIp, onLimited: onLimited('request upload') });
  const uploadsPerRequest = limiter({ store: L.stores.for('request-upload-link'), windowMs: L.windowMs, limit: L.uploadsPerRequest, key: tokenKey, onLimited: onLimited('request upload') });
  // Only wrong passwords (401) use up these.
  const pw = { windowMs: L.windowMs, skip: (req: Request) => passwordOf(req) === undefined, countOnly401: true, onLimited: onLimited('request password') };
  const passwordPerIp = limiter({ ...pw, store: L.stores.for('request-password-ip'), limit: L.passwordPerIp });
  const passwordPerRequest = limiter({ ...pw, store: L.stores.for('request-password-link'), limit: L.passwordPerRequest, key: tokenKey });

  const ticketOf = (req: Request): string | undefined => {
    const h = req.headers['x-upload-ticket'];
    if (typeof h === 'string') return h;
    return typeof req.query.ticket === 'string' ? req.query.ticket : undefined;
  };

  const passwordFailure = (req: Request, t: RequestUploadTarget) =>
    d.audit.record({ actor: `request:${t.requestId}`, action: 'request.password_failure', outcome: 'failure', subjectUserId: t.ownerId, ...clientOf(req), details: { requestId: t.requestId } });

  /**
   * Lets a request through a password-protected link only with a valid page ticket or the right
   * Basic-auth password (a wrong one is audited); one check for the multipart, PUT and tus routes.
   */
  const requirePassword = async (req: Request, t: RequestUploadTarget): Promise<void> => {
    if (!t.request.passwordHash) return;
    const ticket = ticketOf(req);
    if (ticket !== undefined && d.requests.checkTicket(t.request, ticket)) return;
    const password = passwordOf(req);
    const challenge = { 'WWW-Authenticate': 'Basic realm="upload request", charset="UTF-8"' };
    if (password === undefined) throw new AppError('unauthorized', 'this upload link needs a password (HTTP Basic auth, any user name)', challenge, true);
    if (!(await d.requests.checkPassword(t.request, password))) {
      await passwordFailure(req, t);
      throw new AppError('unauthorized', 'wrong password for this upload link', challenge, true);
    }
  };

  const missingPage = (res: Response) => res.status(404).render('request-missing');

  const renderPage = (req: Request, res: Response, t: RequestUploadTarget, ticket: string | null) => {
    res.setHeader('Cache-Control', 'no-store');
    const token = encodeURIComponent(String(req.params.token));
    const csrfToken = d.csrf.token(req, res);
    const q = new URLSearchParams({ _csrf: csrfToken });
    if (ticket) q.set('ticket', ticket);
    res.render('request-upload', {
      request: t.request,
      ownerName: t.ownerName,
      limits: t.limits,
      maxFilesAtOnce: Math.min(t.limits.maxFiles, d.maxFilesPerRequest),
      humanSize,
      accept: t.limits.allowedTypes ? t.limits.allowedTypes.map((e) => `.${e}`).join(',') : null,
      expiresIso: new Date(t.request.expiresAt).toISOString(),
      uploadAction: `/r/${token}?${q.toString()}`,
    });
  };

  const renderPasswordForm = (req: Request, res: Response, status: number, error: string | null) => {
    res.setHeader('Cache-Control', 'no-store');
    res.status(status).render('request-password', { action: `/r/${encodeURIComponent(String(req.params.token))}/unlock`, csrfToken: d.csrf.token(req, res), error });
  };

  r.get('/r/:token', async (req, res) => {
    const t = await d.requests.resolveTarget(String(req.params.token));
    if (!t) return void missingPage(res);
    const ticket = ticketOf(req);
    if (t.request.passwordHash && !(ticket && d.requests.checkTicket(t.request, ticket))) {
      // Title, message and who asked are not shown before the password is given.
      return void renderPasswordForm(req, res, 200, null);
    }
    renderPage(req, res, t, t.request.passwordHash ? ticket! : null);
  });

  r.post(
    '/r/:token/unlock',
    express.urlencoded({ extended: false, limit: '8kb' }),
    (req, _res, next) => {
      d.csrf.check(req);
      next();
    },
    passwordPerIp,
    passwordPerRequest,
    async (req, res) => {
      const t = await d.requests.resolveTarget(String(req.params.token));
      if (!t) return void missingPage(res);
      if (!(await d.requests.checkPassword(t.request, passwordOf(req) ?? ''))) {
        await passwordFailure(req, t);
        return void renderPasswordForm(req, res, 401, 'That password is not right. Try again.');
      }
      // The page's uploads carry a signed ticket instead of the password (argon2 once, not per file).
      renderPage(req, res, t, d.requests.issueTicket(t.request));
    },
  );

  /**
   * Everything before the body is read: the request is live, a browser shows its CSRF token,
   * the password (or the page's ticket) is right; then the owner's quota lease and the
   * request's lease are taken, and released whenever the response closes.
   */
  const prepare: RequestHandler = async (req, res, next) => {
    const t = await d.requests.resolveTarget(String(req.params.token));
    if (!t) throw new AppError('not_found', GONE, {}, true);
    if (fromBrowser(req)) {
      try {
        d.csrf.check(req);
      } catch (err) {
        // The body is not read: answer and close.
        if (err instanceof AppError) throw new AppError(err.code, err.detail, err.headers, true);
        throw err;
      }
    }
    await requirePassword(req, t);
    const quota = await d.vault.quota.lease(t.ownerId);
    const lease = t.openLease();
    res.locals.requestUpload = { target: t, lease, quota } satisfies Upload;
    res.on('close', () => {
      void lease.release();
      void quota.release();
    });
    next();
  };
  const held = (res: Response) => res.locals.requestUpload as Upload;

  const recordUploads = async (req: Request, t: RequestUploadTarget, rows: FileRow[], uploaderName: string | null, via: string) => {
    for (const f of rows) {
      await d.audit.record({
        actor: `request:${t.requestId}`,
        action: 'request.upload',
        outcome: 'success',
        subjectUserId: t.ownerId,
        fileId: f.id,
        ...clientOf(req),
        details: { requestId: t.requestId, size: f.size, uploaderName, via },
      });
    }
  };

  const answer = (req: Request, res: Response, t: RequestUploadTarget, rows: FileRow[]) => {
    const receipt = receiptOf(rows);
    if (wantsErrorPage(req)) {
      // A browser without JavaScript posted the form: the receipt as a page.
      res.setHeader('Cache-Control', 'no-store');
      return void res.status(201).render('request-receipt', { request: t.request, ownerName: t.ownerName, receipt, humanSize });
    }
    res.status(201).json(receipt);
  };

  r.post(
    '/r/:token',
    uploadsPerIp,
    uploadsPerRequest,
    passwordPerIp,
    passwordPerRequest,
    prepare,
    multipartUpload(d.vault, {
      maxFileSize: d.requests.maxFileSize,
      maxFiles: d.maxFilesPerRequest,
      // Each part: the name and email fields that came before it, the type by name and a file
      // slot, before any byte of it is stored; then its bytes through the request's guard.
      intake: async (req, part) => {
        const { target, lease, quota } = held(req.res!);
        const body = req.body as Record<string, unknown> | undefined;
        identityOf(target, body?.name, body?.email);
        checkTypeByName(part.name, target.limits.allowedTypes);
        await lease.addFile();
        return d.requests.guard(part.stream, { name: part.name, target, lease, quota });
      },
    }),
    async (req, res) => {
      const { target, lease, quota } = held(res);
      const staged = (req.staged ?? []).sort((a, b) => a.seq - b.seq);
      req.staged = [];
      let origin;
      try {
        if (staged.length === 0) throw new AppError('validation_error', 'file: no file part; send one or more parts named "file"');
        const body = req.body as Record<string, unknown> | undefined;
        origin = identityOf(target, body?.name, body?.email);
      } catch (err) {
        await d.vault.discard(staged);
        throw err;
      }
      const rows = await d.requests.commit(target, staged, origin, quota, lease);
      await recordUploads(req, target, rows, origin.uploaderName, 'multipart');
      answer(req, res, target, rows);
    },
  );

  if (d.tus) {
    const tus = d.tus;
    const targetOf = (res: Response) => res.locals.tusTarget as RequestUploadTarget;
    const scopeOf = (res: Response) => ({ ownerId: targetOf(res).ownerId, requestId: targetOf(res).requestId });
    /**
     * Before every tus method but OPTIONS: the request is live and the password (or ticket) is
     * right. No CSRF token: a tus request carries Tus-Resumable, which no form can send and
     * which needs a CORS preflight this server never grants, so another site cannot forge one.
     * A PATCH (or HEAD) to a request that closed or expired drops the upload with its hold.
     */
    const tusAuth: RequestHandler = async (req, res, next) => {
      const token = String(req.params.token);
      const t = await d.requests.resolveTarget(token);
      if (!t) {
        const id = req.params.id === undefined ? '' : String(req.params.id);
        const owner = /^[0-9a-f]{32}$/.test(id) ? await d.requests.requestOfToken(token) : null;
        if (owner) {
          const dropped = await tus.terminate({ ownerId: owner.ownerId, requestId: owner.id }, id).then(() => true, () => false);
          if (dropped) await d.requests.dropUploadHold(id).catch(() => {});
        }
        throw new AppError('not_found', GONE, {}, true);
      }
      await requirePassword(req, t);
      res.locals.tusTarget = t;
      next();
    };
    // Refusals that end the upload: its stored part and its hold on the request go at once.
    const ENDS = new Set(['file_type_not_allowed', 'not_found', 'too_many_files', 'request_limit_exceeded', 'file_too_large']);
    r.use(
      '/r/:token/tus',
      tusRoutes({
        tus,
        audit: d.audit,
        maxFileSize: d.requests.maxFileSize,
        authenticate: [passwordPerIp, passwordPerRequest, tusAuth],
        ownerOf: (req) => scopeOf(req.res!),
        via: 'tus',
        onContractViolation: d.onContractViolation,
        plug: {
          createGuards: [uploadsPerIp, uploadsPerRequest],
          docs: { tusOptions: 'requestTusOptions', tusCreate: 'requestTusCreate', tusHead: 'requestTusHead', tusPatch: 'requestTusPatch', tusDelete: 'requestTusDelete' },
          create: (req, o) => {
            const t = targetOf(req.res!);
            if (o.length > t.limits.maxFileBytes) throw new AppError('file_too_large', `this request takes files of at most ${t.limits.maxFileBytes} bytes`, {}, true);
            checkTypeByName(o.name, t.limits.allowedTypes);
            const origin = identityOf(t, req.headers['x-uploader-name'], req.headers['x-uploader-email']);
            return {
              origin,
              within: (trx, u) => d.requests.reserveUploadIn(trx, t.requestId, u.id, u.length, u.expiresAt),
              patch: plugPatch(req),
            };
          },
          patch: (req) => plugPatch(req),
          finished: (req, file) => recordUploads(req, targetOf(req.res!), [file], file.uploaderName ?? null, 'tus'),
          settle: async (req, id, err) => {
            const scope = scopeOf(req.res!);
            if (id !== null) {
              if (err instanceof AppError && ENDS.has(err.code)) {
                await tus.terminate(scope, id).catch(() => {});
                await d.requests.dropUploadHold(id).catch(() => {});
              } else {
                // The hold lives exactly as long as the upload, whose expiry each PATCH moves on.
                const s = await tus.status(scope, id).catch(() => null);
                if (s && s.fileId === null) await d.requests.holdUploadUntil(id, s.expiresAt).catch(() => {});
              }
            }
            // The owner's quota is not the uploader's business (as for the other ways in).
            if (err instanceof AppError && err.code === 'quota_exceeded') {
              return new AppError('request_limit_exceeded', 'this request cannot take more files now; nothing of this upload was stored', {}, true);
            }
            return err;
          },
          terminated: (_req, id) => d.requests.dropUploadHold(id),
        },
      }),
    );
    const plugPatch = (req: Request) => {
      const t = targetOf(req.res!);
      return {
        inspect: (head: Buffer, u: { name: string }) => checkTypeByContent(u.name, head.subarray(0, SNIFF_BYTES), t.limits.allowedTypes),
        within: (trx: Parameters<RequestsService['commitUploadIn']>[0], file: FileRow) => d.requests.commitUploadIn(trx, t.requestId, file.id, file),
      };
    };
  }

  r.put('/r/:token/:name', uploadsPerIp, uploadsPerRequest, passwordPerIp, passwordPerRequest, async (req: Request, res: Response, next: NextFunction) => {
    // As for PUT /api/v1/uploads: a partial PUT would be stored as a whole file.
    if (req.headers['content-range'] !== undefined) throw new AppError('partial_put_unsupported', 'Content-Range on PUT is not supported: send the whole file in one request', {}, true);
    next();
  }, prepare, async (req: Request, res: Response) => {
    const { target, lease, quota } = held(res);
    const origin = identityOf(target, req.headers['x-uploader-name'], req.headers['x-uploader-email']);
    const name = cleanFileName(String(req.params.name));
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > target.limits.maxFileBytes) {
      // Refused before reading (and instead of 100 Continue).
      throw new AppError('file_too_large', `this request takes files of at most ${target.limits.maxFileBytes} bytes`, {}, true);
    }
    checkTypeByName(name, target.limits.allowedTypes);
    await lease.addFile();
    const sentType = req.headers['content-type'];
    const mimeType = chooseMimeType(sentType?.startsWith('application/x-www-form-urlencoded') ? undefined : sentType, name);
    exemptFromBodyDeadline(req);
    acceptBody(req, res);
    const staged = await d.vault.ingest(d.requests.guard(req, { name, target, lease, quota }), { name, mimeType, maxBytes: target.limits.maxFileBytes });
    const rows = await d.requests.commit(target, [staged], origin, quota, lease);
    await recordUploads(req, target, rows, origin.uploaderName, 'put');
    answer(req, res, target, rows);
  });

  return r;
}
