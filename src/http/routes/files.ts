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
import { fileListQuery, parse } from '../schemas.js';
import { exemptFromBodyDeadline } from '../body-deadline.js';
import { acceptBody, leaseOf, multipartUpload, parseDigestHeader, withQuotaLease } from '../upload.js';
import { recordUploads, sendOwnerDownload } from '../events.js';

export interface FilesRoutesDeps {
  vault: VaultService;
  audit: AuditLog;
  maxFileSize: number;
  maxFilesPerRequest: number;
}

/** Binds the files operations of the route table. */
export function filesRoutes(r: ApiRoutes, d: FilesRoutesDeps): void {
  const uploaded = (req: Request, rows: FileRow[], via: string) => recordUploads(d.audit, req, rows, via);
  const withLease = withQuotaLease(d.vault, (req) => principal(req).user.id);

  r.op(
    'uploadFiles',
    withLease,
    multipartUpload(d.vault, { maxFileSize: d.maxFileSize, maxFiles: d.maxFilesPerRequest, lease: leaseOf }),
    async (req, res) => {
      const staged = (req.staged ?? []).sort((a, b) => a.seq - b.seq);
      req.staged = [];
      if (staged.length === 0) throw new AppError('validation_error', 'file: no file part; send one or more parts named "file"');
      const rows = await d.vault.commit(principal(req).user.id, staged, leaseOf(res));
      await uploaded(req, rows, 'multipart');
      res.status(201).json({ files: rows.map(presentFile) });
    },
  );

  r.op('uploadRaw', async (req: Request, res: Response) => {
    if (req.headers['content-range'] !== undefined) {
      // RFC 9110 14.5: a server that does not support partial PUT must answer 400, or the
      // part would be stored as a complete file. Refused before the quota lease, 100 Continue
      // or any byte of the body is read, and the connection closes so the body is not read either.
      throw new AppError('partial_put_unsupported', 'Content-Range on PUT is not supported: send the whole file in one request', {}, true);
    }
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
      const [row] = await d.vault.commit(principal(req).user.id, [staged], lease);
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
    res.json({ files: page.files.map(presentFile), nextCursor: encodeCursor(page.next) });
  });

  r.op('getFile', async (req, res) => {
    res.json(presentFile(await d.vault.get(principal(req).user.id, String(req.params.id))));
  });

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
