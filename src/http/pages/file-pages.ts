/** The upload page, the files list, a file's page with its links, downloads and deletion. */
import { Router, type Request, type RequestHandler, type Response } from 'express';
import type { FileRow } from '../../db/files.js';
import type { ShareRow } from '../../db/shares.js';
import { AppError } from '../../errors.js';
import { clientOf, publicBase } from '../context.js';
import { decodeCursor, encodeCursor, presentFile } from '../presenters.js';
import { presentShare, withRecipients } from '../routes/shares.js';
import { emailAddress } from '../schemas.js';
import { leaseOf, multipartUpload, withQuotaLease } from '../upload.js';
import { recordShareCreated, recordUploads, sendOwnerDownload } from '../events.js';
import { requireUser, wantsJson, webUser } from './auth.js';
import { humanDuration } from './format.js';
import { OneTimeView } from './one-time.js';
import { formError, type PagesDeps } from './shared.js';
import { parseExpiresField } from '../../services/lifecycle.js';
import { tusRoutes } from '../routes/tus.js';

const PAGE_SIZE = 20;

/** A new link as kept for its one view. */
interface NewShare {
  url: string;
  passwordProtected: boolean;
  expiresAt: number;
  /** Addresses the link was emailed to. */
  emailedTo?: string[];
}
/** File lifetimes offered on the upload and file pages (those above FILE_MAX_RETENTION are left out). */
const RETENTION_CHOICES = [86400, 7 * 86400, 30 * 86400, 90 * 86400, 365 * 86400];

/** Whole days from now until `ms` (at least 0), for "expires in N days". */
export function daysUntil(ms: number, now = Date.now()): number {
  return Math.max(0, Math.ceil((ms - now) / 86400_000));
}

/** Link lifetimes offered on the share form (those above SHARE_MAX_TTL are left out). */
const EXPIRY_CHOICES = [3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400, 90 * 86400];

const field = (req: Request, name: string): string => {
  const v = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : '';
};

/** Upload (XHR and plain form), the files list, a file's page with its links, owner downloads and deletion. */
export function filePages(d: PagesDeps): Router {
  const r = Router();
  const { config } = d;
  const oneTime = new OneTimeView(d.keyring);

  const uploaded = (req: Request, rows: FileRow[]) => recordUploads(d.audit, req, rows, 'page');

  /** The "Keep for" choices within the ceiling ("" = until deleted, only without one), the default first chosen. */
  const retentionChoices = (maxSeconds: number | null) => {
    const choices: { value: string; label: string }[] = [];
    if (d.retention.maxSeconds === null) choices.push({ value: '', label: d.retention.defaultSeconds === null ? 'Until I delete it' : `Default (${humanDuration(d.retention.defaultSeconds)})` });
    for (const s of RETENTION_CHOICES) if (maxSeconds === null || s <= maxSeconds) choices.push({ value: String(s), label: humanDuration(s) });
    if (maxSeconds !== null && !RETENTION_CHOICES.includes(maxSeconds) && maxSeconds >= 60) choices.push({ value: String(maxSeconds), label: `${humanDuration(maxSeconds)} (the longest allowed)` });
    return choices;
  };

  r.get('/', async (req, res) => {
    if (await d.accounts.setupOpen()) return void res.redirect(303, '/setup');
    if (!req.webUser) return void res.redirect(303, '/login');
    const user = req.webUser;
    // After a form upload (no JavaScript) the page lists what just arrived.
    const ids = typeof req.query.uploaded === 'string' ? req.query.uploaded.split(',').slice(0, config.maxFilesPerRequest) : [];
    const justUploaded = (await Promise.all(ids.map((id) => d.vault.files.byIdForOwner(id, user.id)))).filter((f): f is FileRow => f !== undefined);
    res.render('upload', {
      title: 'Upload',
      nav: 'upload',
      justUploaded,
      usage: await d.vault.quota.usageOf(user.id),
      quota: await d.vault.quota.limitOf(user.id),
      maxFileSize: config.maxFileSize,
      maxFiles: config.maxFilesPerRequest,
      retentionChoices: retentionChoices(d.retention.maxSeconds),
      defaultRetention: d.retention.defaultSeconds === null ? '' : String(d.retention.defaultSeconds),
      tusThreshold: config.tusPageThreshold,
      // multer has not read the body when the CSRF check runs, so the token rides in the URL.
      uploadAction: `/upload?_csrf=${encodeURIComponent(String(res.locals.csrfToken))}`,
    });
  });

  const withLease = withQuotaLease(d.vault, (req) => webUser(req).id);

  // Large files from the upload page: tus over the session (the CSRF check above covers
  // POST, PATCH and DELETE; tus-js-client sends the token as X-CSRF-Token).
  r.use('/files/tus', tusRoutes({ tus: d.tus, audit: d.audit, maxFileSize: config.maxFileSize, authenticate: [requireUser], ownerOf: (req) => webUser(req).id, via: 'page-tus' }));

  r.post(
    '/upload',
    requireUser,
    withLease,
    multipartUpload(d.vault, { maxFileSize: config.maxFileSize, maxFiles: config.maxFilesPerRequest, lease: leaseOf }),
    async (req, res) => {
      // A bad lifetime throws while the parts are still in req.staged: they are discarded.
      const expiresAt = d.retention.forUpload(Date.now(), parseExpiresField((req.body as Record<string, unknown> | undefined)?.expiresInSeconds));
      const staged = (req.staged ?? []).sort((a, b) => a.seq - b.seq);
      req.staged = [];
      if (staged.length === 0) throw new AppError('validation_error', 'choose at least one file to upload');
      const rows = await d.vault.commit(webUser(req).id, staged, leaseOf(res), { expiresAt });
      await uploaded(req, rows);
      if (wantsJson(req)) return void res.status(201).json({ files: rows.map((f) => presentFile(f)) });
      res.redirect(303, `/?uploaded=${rows.map((f) => f.id).join(',')}`);
    },
  );

  r.get('/files', requireUser, async (req, res) => {
    const raw = typeof req.query.cursor === 'string' ? req.query.cursor : undefined;
    const cursor = raw === undefined ? null : decodeCursor(raw);
    if (raw !== undefined && !cursor) throw new AppError('not_found', 'no such page of files');
    // ?request=<id>: only the files that came through one of the owner's upload requests.
    const requestId = typeof req.query.request === 'string' ? req.query.request : undefined;
    const fromRequest = requestId === undefined ? null : await d.requests.ownedBy(webUser(req).id, requestId);
    const page = await d.vault.list(webUser(req).id, PAGE_SIZE, cursor, fromRequest?.id);
    const held = await d.lifecycle.holds.heldAmong(webUser(req).id, page.files.map((f) => f.id));
    res.render('files', { title: 'Your files', nav: 'files', files: page.files, held, daysUntil, nextCursor: encodeCursor(page.next), paged: cursor !== null, fromRequest });
  });

  const renderFile = async (req: Request, res: Response, file: FileRow, extra: Record<string, unknown> = {}, status = 200) => {
    const rows = await d.shares.repo.listForFile(file.id);
    const sentTo = await d.notify.recipientsOf(rows.map((s) => s.id));
    const shares = rows.map((s: ShareRow) => withRecipients(presentShare(s), sentTo.get(s.id)));
    const expiryChoices = EXPIRY_CHOICES.filter((s) => s <= config.shareMaxTtl).map((s) => ({ seconds: s, label: humanDuration(s) }));
    if (!expiryChoices.some((c) => c.seconds === config.shareDefaultTtl) && config.shareDefaultTtl <= config.shareMaxTtl) {
      expiryChoices.push({ seconds: config.shareDefaultTtl, label: humanDuration(config.shareDefaultTtl) });
      expiryChoices.sort((a, b) => a.seconds - b.seconds);
    }
    const holds = await d.lifecycle.holds.holdsOnFile(file);
    const max = d.retention.maxSeconds;
    // What is left of the ceiling (it counts from the upload) bounds the choices of a change.
    const left = max === null ? null : Math.floor((file.createdAt + max * 1000 - Date.now()) / 1000);
    res.status(status).render('file', {
      title: file.name,
      nav: 'files',
      file,
      holds,
      daysUntil,
      expiryChoices2: retentionChoices(left).filter((c) => c.value !== '' || max === null).map((c) => (c.value === '' ? { ...c, label: 'Until I delete it' } : c)),
      expiryError: null,
      sha256: file.sha256.toString('hex'),
      shares,
      expiryChoices,
      defaultExpiry: config.shareDefaultTtl,
      form: { maxDownloads: '', note: '', expires: String(config.shareDefaultTtl), recipients: '', message: '', deleteAfter: false },
      emailEnabled: d.notify.emailEnabled,
      formError: null,
      newShare: null,
      newShareGone: false,
      ...extra,
    });
  };

  r.get('/files/:id', requireUser, async (req, res) => {
    await renderFile(req, res, await d.vault.get(webUser(req).id, String(req.params.id)));
  });

  r.post('/files/:id/shares', requireUser, async (req, res) => {
    const user = webUser(req);
    const file = await d.vault.get(user.id, String(req.params.id));
    const form = {
      expires: field(req, 'expires'),
      maxDownloads: field(req, 'maxDownloads').trim(),
      note: field(req, 'note').trim(),
      recipients: field(req, 'recipients').trim(),
      message: field(req, 'message').trim(),
      deleteAfter: field(req, 'deleteAfter') === 'yes',
    };
    const fail = (message: string) => renderFile(req, res, file, { form, formError: message }, 400);
    const options = linkOptions(form, config.shareMaxTtl);
    if ('error' in options) return void (await fail(options.error));
    const { expires, maxDownloads } = options;
    if (form.deleteAfter && maxDownloads === null) return void (await fail('To delete the file after the last download, set a maximum number of downloads.'));
    // One address per line or separated by commas; each checked as the API checks it.
    const recipients = [...new Set(form.recipients.split(/[\s,;]+/).filter(Boolean).map((a) => a.toLowerCase()))];
    if (recipients.length > 20) return void (await fail('Send the link to at most 20 addresses at once.'));
    const badAddress = recipients.find((a) => !emailAddress.safeParse(a).success);
    if (badAddress !== undefined) return void (await fail(`“${badAddress.slice(0, 100)}” is not an email address.`));
    if (recipients.length && !d.notify.emailEnabled) return void (await fail('This server cannot send email (no SMTP server is configured).'));
    if (form.message.length > 2000) return void (await fail('The message can have at most 2000 characters.'));
    const base = publicBase(req, config.publicUrl);
    let created;
    try {
      created = await d.shares.create(user.id, file, { expiresInSeconds: expires, maxDownloads, password: field(req, 'password'), note: form.note || undefined, deleteFileAfterLastDownload: form.deleteAfter }, (trx, s, t) =>
        d.notify.linkEmailsIn(trx, {
          shareId: s.id,
          ownerId: user.id,
          ownerName: user.username,
          fileId: file.id,
          fileName: file.name,
          expiresAt: s.expiresAt,
          passwordProtected: s.passwordHash !== null,
          url: `${base}/s/${t}`,
          recipients,
          message: form.message || null,
        }),
      );
    } catch (err) {
      return void (await fail(formError(err)));
    }
    const { share, token } = created;
    await recordShareCreated(d.audit, req, user.id, share, 'page', recipients.length);
    const url = `${base}/s/${token}`;
    // POST-redirect-GET: the link waits (sealed) in the session for exactly one view of the
    // page below, so reloading that page cannot create another link or show this one again.
    oneTime.put(req, 'share', file.id, { url, passwordProtected: share.passwordHash !== null, expiresAt: share.expiresAt, emailedTo: recipients } satisfies NewShare);
    res.redirect(303, `/files/${file.id}/new-link`);
  });

  r.get('/files/:id/new-link', requireUser, async (req, res) => {
    const file = await d.vault.get(webUser(req).id, String(req.params.id));
    const shown = oneTime.take<NewShare>(req, 'share', file.id);
    if (!shown) return void (await renderFile(req, res, file, { newShareGone: true }));
    // Loaded on first use: about 10 MiB resident that an API-only server never needs.
    const { default: QRCode } = await import('qrcode');
    const svg = await QRCode.toString(shown.url, { type: 'svg', errorCorrectionLevel: 'M', margin: 1 });
    const qrSvg = svg.replace('<svg ', '<svg role="img" aria-label="QR code of the new link" class="qr-code" ');
    await renderFile(req, res, file, { newShare: { ...shown, qrSvg } });
  });

  // An older address for the page after a link was created; coming back to it goes to the file.
  r.get('/files/:id/shares', requireUser, async (req, res) => {
    res.redirect(303, `/files/${(await d.vault.get(webUser(req).id, String(req.params.id))).id}`);
  });

  r.post('/shares/:id/revoke', requireUser, async (req, res) => {
    const user = webUser(req);
    const share = await d.shares.ownedBy(user.id, String(req.params.id));
    if (await d.shares.repo.revoke(share.id, user.id, Date.now())) {
      await d.audit.record({ actor: user.id, action: 'share.revoke', outcome: 'success', subjectUserId: user.id, fileId: share.fileId, shareId: share.id, ...clientOf(req), details: { via: 'page' } });
    }
    res.redirect(303, `/files/${share.fileId}?msg=revoked`);
  });

  // --- Bundles: "Share selected" on the files page, one link to several files ---
  const selectedIds = (req: Request): string[] => {
    const v = (req.body as Record<string, unknown> | undefined)?.fileIds;
    const list = Array.isArray(v) ? v : v === undefined ? [] : [v];
    return [...new Set(list.filter((x): x is string => typeof x === 'string' && /^[0-9a-f]{32}$/.test(x)))];
  };
  const expiryChoicesNow = () => EXPIRY_CHOICES.filter((s) => s <= config.shareMaxTtl).map((s) => ({ seconds: s, label: humanDuration(s) }));
  const renderBundleForm = async (req: Request, res: Response, files: FileRow[], extra: Record<string, unknown> = {}, status = 200) => {
    res.status(status).render('bundle-new', {
      title: 'Share selected files',
      nav: 'files',
      files,
      expiryChoices: expiryChoicesNow(),
      form: { maxDownloads: '', note: '', expires: String(config.shareDefaultTtl) },
      formError: null,
      newShare: null,
      newShareGone: false,
      ...extra,
    });
  };
  const ownedFiles = async (req: Request): Promise<FileRow[]> => {
    const ids = selectedIds(req);
    if (ids.length === 0) throw new AppError('validation_error', 'choose at least one file to share');
    if (ids.length > config.bundleMaxFiles) throw new AppError('validation_error', `choose at most ${config.bundleMaxFiles} files for one link`);
    const files: FileRow[] = [];
    for (const id of ids) files.push(await d.vault.get(webUser(req).id, id));
    return files;
  };

  // Step 1: the files page's checkboxes arrive here; the options form follows.
  r.post('/files/share-selected', requireUser, async (req, res) => {
    await renderBundleForm(req, res, await ownedFiles(req));
  });

  // Step 2: create the bundle link.
  r.post('/bundles', requireUser, async (req, res) => {
    const user = webUser(req);
    const files = await ownedFiles(req);
    const form = { expires: field(req, 'expires'), maxDownloads: field(req, 'maxDownloads').trim(), note: field(req, 'note').trim() };
    const fail = (message: string) => renderBundleForm(req, res, files, { form, formError: message }, 400);
    const options = linkOptions(form, config.shareMaxTtl);
    if ('error' in options) return void (await fail(options.error));
    const { expires, maxDownloads } = options;
    let created;
    try {
      created = await d.shares.createBundle(user.id, files, { expiresInSeconds: expires, maxDownloads, password: field(req, 'password'), note: form.note || undefined });
    } catch (err) {
      return void (await fail(formError(err)));
    }
    const { share, token } = created;
    await recordShareCreated(d.audit, req, user.id, share, 'page');
    const url = `${publicBase(req, config.publicUrl)}/s/${token}`;
    // Shown once, as for single-file links (POST-redirect-GET through a one-time view).
    oneTime.put(req, 'bundle', share.id, { url, passwordProtected: share.passwordHash !== null, expiresAt: share.expiresAt } satisfies NewShare);
    res.redirect(303, `/bundles/${share.id}/new-link`);
  });

  r.get('/bundles/:id/new-link', requireUser, async (req, res) => {
    const share = await d.shares.ownedBy(webUser(req).id, String(req.params.id));
    const { files } = await d.bundles.members.members(share.id, share.ownerId);
    const shown = oneTime.take<NewShare>(req, 'bundle', share.id);
    if (!shown) return void (await renderBundleForm(req, res, files, { newShareGone: true }));
    const { default: QRCode } = await import('qrcode');
    const svg = await QRCode.toString(shown.url, { type: 'svg', errorCorrectionLevel: 'M', margin: 1 });
    const qrSvg = svg.replace('<svg ', '<svg role="img" aria-label="QR code of the new link" class="qr-code" ');
    await renderBundleForm(req, res, files, { newShare: { ...shown, qrSvg } });
  });

  r.post('/files/:id/expiry', requireUser, async (req, res) => {
    const user = webUser(req);
    const file = await d.vault.get(user.id, String(req.params.id));
    const raw = field(req, 'expiresInSeconds');
    let expiresAt: number | null;
    try {
      expiresAt = d.retention.forChange(file.createdAt, Date.now(), raw === '' ? null : (parseExpiresField(raw) ?? null));
    } catch (err) {
      return void (await renderFile(req, res, file, { expiryError: formError(err) }, 400));
    }
    await d.vault.files.setExpiry(file.id, user.id, expiresAt);
    await d.audit.record({ actor: user.id, action: 'file.expiry', outcome: 'success', subjectUserId: user.id, fileId: file.id, ...clientOf(req), details: { from: file.expiresAt ?? null, to: expiresAt, via: 'page' } });
    res.redirect(303, `/files/${file.id}?msg=expiry-changed`);
  });

  r.post('/files/:id/delete', requireUser, async (req, res) => {
    const user = webUser(req);
    const file = await d.vault.get(user.id, String(req.params.id));
    // Without JavaScript there is no confirm() dialog: ask on a page first.
    if (field(req, 'confirm') !== 'yes') return void res.render('confirm-delete', { title: `Delete ${file.name}?`, nav: 'files', file });
    const row = await d.vault.delete(user.id, file.id);
    await d.audit.record({ actor: row.ownerId, action: 'file.delete', outcome: 'success', subjectUserId: row.ownerId, fileId: row.id, ...clientOf(req), details: { size: row.size, via: 'page' } });
    res.redirect(303, '/files?msg=deleted');
  });

  // HEAD has its own handler so Express does not run GET (and decrypt the whole file).
  const download: RequestHandler = async (req, res) => {
    await sendOwnerDownload(d.audit, d.vault, req, res, await d.vault.get(webUser(req).id, String(req.params.id)), 'page');
  };
  r.head('/files/:id/download', requireUser, download);
  r.get('/files/:id/download', requireUser, download);

  return r;
}

/** Checks the options both link forms share (lifetime, download limit, note): the values, or the message the form shows. */
function linkOptions(form: { expires: string; maxDownloads: string; note: string }, shareMaxTtl: number): { expires: number; maxDownloads: number | null } | { error: string } {
  const expires = Number(form.expires);
  if (!Number.isInteger(expires) || expires < 60 || expires > shareMaxTtl) return { error: 'Choose how long the link should work.' };
  let maxDownloads: number | null = null;
  if (form.maxDownloads !== '') {
    maxDownloads = Number(form.maxDownloads);
    if (!Number.isInteger(maxDownloads) || maxDownloads < 1 || maxDownloads > 1_000_000) {
      return { error: 'Maximum downloads must be a whole number from 1 to 1,000,000, or empty for no limit.' };
    }
  }
  if (form.note.length > 500) return { error: 'The note can have at most 500 characters.' };
  return { expires, maxDownloads };
}
