/** The owner's upload request pages: list and create, one request with what arrived (link shown once), close, extend, delete. */
import { Router, type Request, type Response } from 'express';
import { AppError } from '../../errors.js';
import type { UploadRequestRow } from '../../services/requests.js';
import { presentRequest } from '../presenters.js';
import { recordRequestClosed, recordRequestCreated, requestUrl } from '../routes/requests.js';
import { clientOf } from '../context.js';
import { requireUser, webUser } from './auth.js';
import { humanDuration } from './format.js';
import { OneTimeView } from './one-time.js';
import { formError, type PagesDeps } from './shared.js';

/** A new request link as kept for its one view. */
interface NewRequestLink {
  url: string;
  passwordProtected: boolean;
  expiresAt: number;
}

const EXPIRY_CHOICES = [86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 90 * 86400];
const MIB = 1024 * 1024;

/** The retention field of a form: empty is the server default (null); digits are seconds; else "30d"-style (checked by the service). */
const retentionOf = (v: string): number | string | null => (v === '' ? null : /^\d+$/.test(v) ? Number(v) : v);

const field = (req: Request, name: string): string => {
  const v = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : '';
};

/** Upload request pages under /requests. */
export function requestPages(d: PagesDeps): Router {
  const r = Router();
  const { config } = d;
  const oneTime = new OneTimeView(d.keyring);
  const expiryChoices = () => EXPIRY_CHOICES.filter((s) => s <= config.requestMaxTtl).map((s) => ({ seconds: s, label: humanDuration(s) }));
  const maxFileMiB = Math.max(1, Math.floor(config.maxFileSize / MIB));
  const emptyForm = () => ({ title: '', message: '', expires: String(Math.min(7 * 86400, config.requestMaxTtl)), maxFiles: '10', maxMiB: String(Math.min(maxFileMiB * 10, 10 * 1024)), maxFileMiB: String(maxFileMiB), allowedTypes: '', requireName: false, requireEmail: false, fileRetention: '' });

  const renderList = async (req: Request, res: Response, form = emptyForm(), error: string | null = null, status = 200) => {
    const rows = await d.requests.repo.listForOwner(webUser(req).id);
    res.status(status).render('requests', { title: 'Upload requests', nav: 'requests', requests: rows.map((x) => presentRequest(x)), form, formError: error, expiryChoices: expiryChoices(), maxFileMiB, retentionMax: config.fileMaxRetention, humanDuration });
  };

  r.get('/requests', requireUser, async (req, res) => {
    await renderList(req, res);
  });

  r.post('/requests', requireUser, async (req, res) => {
    const user = webUser(req);
    const form = {
      title: field(req, 'title').trim(),
      message: field(req, 'message'),
      expires: field(req, 'expires'),
      maxFiles: field(req, 'maxFiles').trim(),
      maxMiB: field(req, 'maxMiB').trim(),
      maxFileMiB: field(req, 'maxFileMiB').trim(),
      allowedTypes: field(req, 'allowedTypes').trim(),
      requireName: field(req, 'requireName') === 'on',
      requireEmail: field(req, 'requireEmail') === 'on',
      fileRetention: field(req, 'fileRetention').trim(),
    };
    const fail = (message: string) => renderList(req, res, form, message, 400);
    const whole = (v: string, min: number, max: number) => (/^\d{1,9}$/.test(v) && Number(v) >= min && Number(v) <= max ? Number(v) : null);
    const expires = whole(form.expires, 60, config.requestMaxTtl);
    const maxFiles = whole(form.maxFiles, 1, 10_000);
    const maxMiB = whole(form.maxMiB, 1, 1024 * 1024);
    const fileMiB = whole(form.maxFileMiB, 1, maxFileMiB);
    if (!form.title || form.title.length > 200) return void (await fail('Give the request a title (at most 200 characters).'));
    if (form.message.length > 5000) return void (await fail('The message can have at most 5000 characters.'));
    if (expires === null) return void (await fail('Choose how long the request should stay open.'));
    if (maxFiles === null) return void (await fail('The number of files must be a whole number from 1 to 10,000.'));
    if (maxMiB === null) return void (await fail('The total size must be a whole number of MiB, at least 1.'));
    if (fileMiB === null) return void (await fail(`The size per file must be a whole number of MiB from 1 to ${maxFileMiB}.`));
    const types = form.allowedTypes ? form.allowedTypes.split(/[\s,]+/).filter(Boolean) : null;
    let created: { request: UploadRequestRow; token: string };
    try {
      created = await d.requests.create(user.id, {
        title: form.title,
        message: form.message,
        expiresInSeconds: expires,
        password: field(req, 'password'),
        maxFiles,
        maxBytes: maxMiB * MIB,
        maxFileBytes: Math.min(fileMiB * MIB, config.maxFileSize),
        allowedTypes: types,
        requireName: form.requireName,
        requireEmail: form.requireEmail,
        fileRetentionSeconds: retentionOf(form.fileRetention),
      });
    } catch (err) {
      return void (await fail(formError(err)));
    }
    const { request, token } = created;
    await recordRequestCreated(d.audit, req, user.id, request, 'page');
    // POST-redirect-GET with the link sealed in the session for exactly one view, as for share links.
    oneTime.put(req, 'request', request.id, { url: requestUrl(req, config.publicUrl, token), passwordProtected: request.passwordHash !== null, expiresAt: request.expiresAt } satisfies NewRequestLink);
    res.redirect(303, `/requests/${request.id}/new-link`);
  });

  const renderOne = async (req: Request, res: Response, request: UploadRequestRow, extra: Record<string, unknown> = {}) => {
    const page = await d.vault.list(webUser(req).id, 1000, null, request.id);
    res.render('request', {
      title: request.title,
      nav: 'requests',
      request: presentRequest(request),
      files: page.files,
      expiryChoices: expiryChoices(),
      newLink: null,
      newLinkGone: false,
      hold: (await d.lifecycle.holds.get('request', request.id)) ?? null,
      retentionDefault: config.fileDefaultRetention ?? config.fileMaxRetention,
      humanDuration,
      ...extra,
    });
  };

  r.get('/requests/:id', requireUser, async (req, res) => {
    await renderOne(req, res, await d.requests.ownedBy(webUser(req).id, String(req.params.id)));
  });

  r.get('/requests/:id/new-link', requireUser, async (req, res) => {
    const request = await d.requests.ownedBy(webUser(req).id, String(req.params.id));
    const shown = oneTime.take<NewRequestLink>(req, 'request', request.id);
    if (!shown) return void (await renderOne(req, res, request, { newLinkGone: true }));
    const { default: QRCode } = await import('qrcode');
    const svg = await QRCode.toString(shown.url, { type: 'svg', errorCorrectionLevel: 'M', margin: 1 });
    const qrSvg = svg.replace('<svg ', '<svg role="img" aria-label="QR code of the upload link" class="qr-code" ');
    await renderOne(req, res, request, { newLink: { ...shown, qrSvg } });
  });

  r.post('/requests/:id/close', requireUser, async (req, res) => {
    const user = webUser(req);
    const { request, closed } = await d.requests.update(user.id, String(req.params.id), { close: true });
    if (closed) await recordRequestClosed(d.audit, req, user.id, request, 'page');
    res.redirect(303, `/requests/${request.id}?msg=request-closed`);
  });

  r.post('/requests/:id/extend', requireUser, async (req, res) => {
    const user = webUser(req);
    const seconds = Number(field(req, 'expires'));
    if (!Number.isInteger(seconds) || seconds < 60 || seconds > config.requestMaxTtl) throw new AppError('validation_error', 'choose how long the request should stay open');
    const { request } = await d.requests.update(user.id, String(req.params.id), { expiresInSeconds: seconds });
    await d.audit.record({ actor: user.id, action: 'request.update', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { requestId: request.id, expiresAt: request.expiresAt, via: 'page' } });
    res.redirect(303, `/requests/${request.id}?msg=request-extended`);
  });

  r.post('/requests/:id/retention', requireUser, async (req, res) => {
    const user = webUser(req);
    const { request } = await d.requests.update(user.id, String(req.params.id), { fileRetentionSeconds: retentionOf(field(req, 'fileRetention').trim()) });
    await d.audit.record({ actor: user.id, action: 'request.update', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { requestId: request.id, expiresAt: request.expiresAt, fileRetentionSeconds: request.fileRetentionSeconds, via: 'page' } });
    res.redirect(303, `/requests/${request.id}?msg=request-retention`);
  });

  r.post('/requests/:id/delete', requireUser, async (req, res) => {
    const user = webUser(req);
    const request = await d.requests.delete(user.id, String(req.params.id));
    await d.audit.record({ actor: user.id, action: 'request.delete', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { requestId: request.id, via: 'page' } });
    res.redirect(303, '/requests?msg=request-deleted');
  });

  return r;
}
