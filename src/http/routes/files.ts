/** Files API: upload (multipart and raw PUT), list, metadata, content, delete. */
import { Router, type Request, type Response } from 'express';
import { AppError } from '../../errors.js';
import { chooseMimeType, cleanFileName } from '../../services/filenames.js';
import type { VaultService } from '../../services/vault.js';
import { principal } from '../auth.js';
import { sendFileContent } from '../content.js';
import { decodeCursor, encodeCursor, presentFile } from '../presenters.js';
import { listQuery, parse } from '../schemas.js';
import { acceptBody, multipartUpload, parseDigestHeader } from '../upload.js';

export interface FilesRoutesDeps {
  vault: VaultService;
  maxFileSize: number;
  maxFilesPerRequest: number;
}

export function filesRoutes(d: FilesRoutesDeps): Router {
  const r = Router();

  r.post('/files', multipartUpload(d.vault, { maxFileSize: d.maxFileSize, maxFiles: d.maxFilesPerRequest }), async (req, res) => {
    const staged = (req.staged ?? []).sort((a, b) => a.seq - b.seq);
    req.staged = [];
    if (staged.length === 0) throw new AppError('validation_error', 'file: no file part; send one or more parts named "file"');
    const rows = await d.vault.commit(principal(req).user.id, staged);
    res.status(201).json({ files: rows.map(presentFile) });
  });

  r.put('/uploads/:name', async (req: Request, res: Response) => {
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
    acceptBody(req, res);
    const staged = await d.vault.ingest(req, { name, mimeType, maxBytes: d.maxFileSize, expectedSha256: expected });
    const [row] = await d.vault.commit(principal(req).user.id, [staged]);
    res.status(201).location(`/api/v1/files/${row!.id}`).json({ file: presentFile(row!) });
  });

  r.get('/files', (req, res) => {
    const q = parse(listQuery, req.query);
    const cursor = q.cursor === undefined ? null : decodeCursor(q.cursor);
    if (q.cursor !== undefined && !cursor) throw new AppError('validation_error', 'cursor: not a cursor from this API');
    const page = d.vault.list(principal(req).user.id, q.limit, cursor);
    res.json({ files: page.files.map(presentFile), nextCursor: encodeCursor(page.next) });
  });

  r.get('/files/:id', (req, res) => {
    res.json(presentFile(d.vault.get(principal(req).user.id, String(req.params.id))));
  });

  // HEAD has its own handler so Express does not run GET (and decrypt the whole file).
  const content = async (req: Request, res: Response) => {
    const row = d.vault.get(principal(req).user.id, String(req.params.id));
    await sendFileContent(req, res, d.vault, row);
  };
  r.head('/files/:id/content', content);
  r.get('/files/:id/content', content);

  r.delete('/files/:id', async (req, res) => {
    await d.vault.delete(principal(req).user.id, String(req.params.id));
    res.status(204).end();
  });

  return r;
}
