/** Files API: upload (multipart and raw PUT), list, metadata, content, delete. */
import type { Request, Response } from 'express';
import type { FileRow } from '../../db/files.js';
import { AppError } from '../../errors.js';
import type { AuditLog } from '../../services/audit.js';
import { chooseMimeType, cleanFileName } from '../../services/filenames.js';
import type { VaultService } from '../../services/vault.js';
import type { ApiRoutes } from '../api-router.js';
import { principal } from '../auth.js';
import { clientOf } from '../context.js';
import { decodeCursor, encodeCursor, presentFile } from '../presenters.js';
import { fileListQuery, filePatchBody, holdBody, parse } from '../schemas.js';
import { parseExpiresField, type LifecycleService, type RetentionPolicy } from '../../services/lifecycle.js';
import type { HoldScope } from '../../db/holds.js';
import { presentHold } from '../presenters.js';
import { exemptFromBodyDeadline } from '../body-deadline.js';
import { acceptBody, leaseOf, multipartUpload, parseDigestHeader, withQuotaLease } from '../upload.js';
import { recordUploads, sendOwnerDownload } from '../events.js';

export interface FilesRoutesDeps {
  vault: VaultService;
  audit: AuditLog;
  retention: RetentionPolicy;
  lifecycle: LifecycleService;
  maxFileSize: number;
  maxFilesPerRequest: number;
}

/** Binds the files operations of the route table. */
export function filesRoutes(r: ApiRoutes, d: FilesRoutesDeps): void {
  const uploaded = (req: Request, rows: FileRow[], via: string) => recordUploads(d.audit, req, rows, via);
  const withLease = withQuotaLease(d.vault, (req) => principal(req).user.id);

  // The lifetime is checked before a byte of the body is read when it comes in the query.
  const retentionFirst = (req: Request, _res: Response, next: (err?: unknown) => void) => {
    d.retention.forUpload(Date.now(), parseExpiresField(req.query.expiresInSeconds));
    next();
  };

  r.op(
    'uploadFiles',
    retentionFirst,
    withLease,
    multipartUpload(d.vault, { maxFileSize: d.maxFileSize, maxFiles: d.maxFilesPerRequest, lease: leaseOf }),
    async (req, res) => {
      // A bad lifetime throws while the parts are still in req.staged: they are discarded.
      const field = (req.body as Record<string, unknown> | undefined)?.expiresInSeconds;
      const expiresAt = d.retention.forUpload(Date.now(), parseExpiresField(field) ?? parseExpiresField(req.query.expiresInSeconds));
      const staged = (req.staged ?? []).sort((a, b) => a.seq - b.seq);
      req.staged = [];
      if (staged.length === 0) throw new AppError('validation_error', 'file: no file part; send one or more parts named "file"');
      const rows = await d.vault.commit(principal(req).user.id, staged, leaseOf(res), { expiresAt });
      await uploaded(req, rows, 'multipart');
      res.status(201).json({ files: rows.map((f) => presentFile(f)) });
    },
  );

  r.op('uploadRaw', async (req: Request, res: Response) => {
    if (req.headers['content-range'] !== undefined) {
      // RFC 9110 14.5: a server that does not support partial PUT must answer 400, or the
      // part would be stored as a complete file. Refused before the quota lease, 100 Continue
      // or any byte of the body is read, and the connection closes so the body is not read either.
      throw new AppError('partial_put_unsupported', 'Content-Range on PUT is not supported: send the whole file in one request', {}, true);
    }
    const requested = parseExpiresField(req.query.expiresInSeconds);
    d.retention.forUpload(Date.now(), requested);
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > d.maxFileSize) {
      // Refuse before reading (and instead of 100 Continue).
      throw new AppError('file_too_large', `file exceeds the limit of ${d.maxFileSize} bytes`, {}, true);
    }
    const expected =
      parseDigestHeader(req.headers['content-digest'] as string | undefined, 'Content-Digest') ??
      parseDigestHeader(req.headers['repr-digest'] as string | undefined, 'Repr-Digest');
    const name = cleanFileName(String(req.params.name));
    const sentType = req.headers['content-type'];
    // curl --data-binary labels bodies as form data; that says nothing about the file.
    const mimeType = chooseMimeType(sentType?.startsWith('application/x-www-form-urlencoded') ? undefined : sentType, name);
    const lease = await d.vault.quota.lease(principal(req).user.id);
    try {
      if (declared !== undefined && /^\d+$/.test(declared)) await lease.check(Number(declared));
      // The body is the file: it keeps the idle-timeout rule, not the small-body deadline.
      exemptFromBodyDeadline(req);
      acceptBody(req, res);
      const staged = await d.vault.ingest(req, { name, mimeType, maxBytes: d.maxFileSize, expectedSha256: expected, lease });
      const [row] = await d.vault.commit(principal(req).user.id, [staged], lease, { expiresAt: d.retention.forUpload(Date.now(), requested) });
      await uploaded(req, [row!], 'put');
      res.status(201).location(`/api/v1/files/${row!.id}`).json({ file: presentFile(row!) });
    } finally {
      await lease.release();
    }
  });

  r.op('listFiles', async (req, res) => {
    const q = parse(fileListQuery, req.query);
    const cursor = q.cursor === undefined ? null : decodeCursor(q.cursor);
    if (q.cursor !== undefined && !cursor) throw new AppError('validation_error', 'cursor: not a cursor from this API');
    const page = await d.vault.list(principal(req).user.id, q.limit, cursor, q.requestId);
    const held = await d.lifecycle.holds.heldAmong(principal(req).user.id, page.files.map((f) => f.id));
    res.json({ files: page.files.map((f) => presentFile(f, held.has(f.id))), nextCursor: encodeCursor(page.next) });
  });

  const withHold = async (f: FileRow) => presentFile(f, (await d.lifecycle.holds.holdsOnFile(f)).length > 0);

  r.op('getFile', async (req, res) => {
    res.json(await withHold(await d.vault.get(principal(req).user.id, String(req.params.id))));
  });

  r.op('updateFile', async (req, res) => {
    const { user } = principal(req);
    const body = parse(filePatchBody, req.body);
    const file = await d.vault.get(user.id, String(req.params.id));
    const expiresAt = d.retention.forChange(file.createdAt, Date.now(), body.expiresInSeconds);
    if (!(await d.vault.files.setExpiry(file.id, user.id, expiresAt))) throw new AppError('not_found', 'no such file');
    await d.audit.record({ actor: user.id, action: 'file.expiry', outcome: 'success', subjectUserId: user.id, fileId: file.id, ...clientOf(req), details: { from: file.expiresAt ?? null, to: expiresAt } });
    res.json(await withHold({ ...file, expiresAt }));
  });

  // Legal holds (admin only: the route table enforces it).
  const holdOps = (scope: HoldScope, put: 'putFileHold' | 'putUserHold' | 'putRequestHold', del: 'deleteFileHold' | 'deleteUserHold' | 'deleteRequestHold') => {
    r.op(put, async (req, res) => {
      const body = parse(holdBody, req.body);
      const hold = await d.lifecycle.placeHold(principal(req).user.id, scope, String(req.params.id), body.reason, body.reference || null);
      res.json(presentHold(hold));
    });
    r.op(del, async (req, res) => {
      await d.lifecycle.releaseHold(principal(req).user.id, scope, String(req.params.id));
      res.status(204).end();
    });
  };
  holdOps('file', 'putFileHold', 'deleteFileHold');
  holdOps('user', 'putUserHold', 'deleteUserHold');
  holdOps('request', 'putRequestHold', 'deleteRequestHold');

  // HEAD has its own handler so Express does not run GET (and decrypt the whole file).
  const content = async (req: Request, res: Response) => {
    await sendOwnerDownload(d.audit, d.vault, req, res, await d.vault.get(principal(req).user.id, String(req.params.id)));
  };
  r.op('headFileContent', content);
  r.op('getFileContent', content);

  r.op('deleteFile', async (req, res) => {
    const row = await d.vault.delete(principal(req).user.id, String(req.params.id));
    await d.audit.record({ actor: row.ownerId, action: 'file.delete', outcome: 'success', subjectUserId: row.ownerId, fileId: row.id, ...clientOf(req), details: { size: row.size } });
    res.status(204).end();
  });
}
