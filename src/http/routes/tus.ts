/**
 * tus 1.0 (core, creation, creation-with-upload, termination, expiration, checksum/sha256)
 * over TusService. One router, mounted per audience with its own authentication: bearer
 * tokens at /api/v1/tus/ and the signed-in browser session at /files/tus/ (the upload page).
 */
import { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { AppError } from '../../errors.js';
import type { AuditLog } from '../../services/audit.js';
import { chooseMimeType, cleanFileName } from '../../services/filenames.js';
import type { CreateHooks, PatchOptions, TusService, PatchResult, UploadScope } from '../../services/tus.js';
import type { FileRow } from '../../db/files.js';
import { exemptFromBodyDeadline } from '../body-deadline.js';
import { recordUploads } from '../events.js';
import { acceptBody } from '../upload.js';
import { contractCheck } from '../api-router.js';
import { OUTSIDE_API } from '../api-table.js';

export const TUS_VERSION = '1.0.0';
export const TUS_EXTENSIONS = 'creation,creation-with-upload,termination,expiration,checksum';
const OFFSET_TYPE = 'application/offset+octet-stream';

export interface TusRoutesDeps {
  tus: TusService;
  audit: AuditLog;
  maxFileSize: number;
  /** Authentication (and CSRF for sessions) run before every method but OPTIONS. */
  authenticate: RequestHandler[];
  /** The user (or upload request) the authenticated request acts for. */
  ownerOf: (req: Request) => string | UploadScope;
  /** What an upload request plugs in (routes/request-upload.ts); the owner's endpoint has none. */
  plug?: TusPlug;
  /** `via` of the file.upload audit event. */
  via: string;
  /** Tests: check every answer against the documented operation (OUTSIDE_API tus entries). */
  onContractViolation?: (message: string) => void;
}

type TusDocId = 'tusOptions' | 'tusCreate' | 'tusHead' | 'tusPatch' | 'tusDelete';

/**
 * The same tus endpoint for another kind of owner (an upload request at /r/<token>/tus/): its
 * checks before creation, its hooks into the service, what a finished file records, and what
 * follows every write (keeping the request's hold in step, dropping a refused upload).
 */
export interface TusPlug {
  /** Run before authentication on creation only (rate limits on new uploads). */
  createGuards: RequestHandler[];
  create(req: Request, o: { length: number; name: string; mimeType: string }): CreateHooks;
  patch(req: Request): Pick<PatchOptions, 'inspect' | 'within'>;
  finished(req: Request, file: FileRow): Promise<void>;
  /** After a write to upload `id` (null: the creation failed before a row existed); returns the error to answer with, if any. */
  settle(req: Request, id: string | null, err: unknown): Promise<unknown>;
  terminated(req: Request, id: string): Promise<void>;
  docs: Record<TusDocId, string>;
}

/** A non-negative integer header (digits only, within 2^53), or undefined when absent. */
function intHeader(req: Request, name: string): number | undefined {
  const v = req.headers[name.toLowerCase()];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^\d{1,16}$/.test(v) || !Number.isSafeInteger(Number(v))) {
    throw new AppError('validation_error', `${name}: expected a non-negative integer`);
  }
  return Number(v);
}

/** Parses Upload-Metadata ("key base64,key base64") into the file name and type. */
export function parseMetadata(header: string | undefined): { name: string; type: string | undefined } {
  const out: Record<string, string> = {};
  if (header !== undefined && header.trim() !== '') {
    for (const pair of header.split(',')) {
      const [key, value, ...rest] = pair.trim().split(/ +/);
      if (!key || rest.length > 0 || (value !== undefined && !/^[A-Za-z0-9+/]*={0,2}$/.test(value))) {
        throw new AppError('validation_error', 'Upload-Metadata: expected "key base64value" pairs separated by commas');
      }
      out[key] = value === undefined ? '' : Buffer.from(value, 'base64').toString('utf8');
    }
  }
  const rawName = out.filename ?? out.name ?? 'upload.bin';
  return { name: cleanFileName(rawName), type: out.filetype ?? out.type };
}

/** Upload-Checksum "sha256 <base64>": the digest, or 400 for another algorithm or a malformed value. */
function parseChecksum(req: Request): Buffer | undefined {
  const v = req.headers['upload-checksum'];
  if (v === undefined) return undefined;
  const m = typeof v === 'string' ? /^([A-Za-z0-9-]+) ([A-Za-z0-9+/]+={0,2})$/.exec(v.trim()) : null;
  if (!m) throw new AppError('validation_error', 'Upload-Checksum: expected "sha256 <base64 digest>"');
  if (m[1]!.toLowerCase() !== 'sha256') throw new AppError('validation_error', `Upload-Checksum: algorithm "${m[1]}" is not supported (Tus-Checksum-Algorithm: sha256)`);
  const digest = Buffer.from(m[2]!, 'base64');
  if (digest.length !== 32) throw new AppError('validation_error', 'Upload-Checksum: a sha256 digest is 32 bytes');
  return digest;
}

function setResultHeaders(res: Response, r: { offset: number; expiresAt: number }, file?: Pick<FileRow, 'id' | 'sha256'> | null): void {
  res.setHeader('Upload-Offset', String(r.offset));
  res.setHeader('Upload-Expires', new Date(r.expiresAt).toUTCString());
  if (file) {
    // Not in tus itself: the finished upload names the ordinary file it became.
    res.setHeader('Upload-File-Id', file.id);
    res.setHeader('Upload-File-Sha256', file.sha256.toString('hex'));
  }
}

/** The tus router (mount it at the endpoint's path; Location headers are relative to it). */
export function tusRoutes(d: TusRoutesDeps): Router {
  // mergeParams: mounted at /r/:token/tus the token stays visible to the plug's handlers.
  const r = Router({ mergeParams: true });
  r.use((req: Request, res: Response, next: NextFunction) => {
    res.setHeader('Tus-Resumable', TUS_VERSION);
    // Browsers must not cache offsets (tus core: HEAD responses are not cacheable).
    res.setHeader('Cache-Control', 'no-store');
    if (req.method === 'OPTIONS') return next();
    const v = req.headers['tus-resumable'];
    if (v !== TUS_VERSION) {
      throw new AppError('tus_version_unsupported', `send Tus-Resumable: ${TUS_VERSION}`, { 'Tus-Version': TUS_VERSION }, true);
    }
    next();
  });
  // Tests: each route's answers are checked against its documented operation.
  const doc = (id: TusDocId): RequestHandler[] => {
    const docId = (d.plug?.docs[id] ?? id) as keyof typeof OUTSIDE_API;
    return d.onContractViolation ? [contractCheck(docId, OUTSIDE_API[docId], d.onContractViolation)] : [];
  };
  // Without a plug: run as is. With one: every outcome goes through settle (which may swap the error).
  const settled = async <T>(req: Request, id: string | null, fn: () => Promise<T>): Promise<T> => {
    if (!d.plug) return fn();
    let out: T;
    try {
      out = await fn();
    } catch (err) {
      throw await d.plug.settle(req, id, err);
    }
    const late = await d.plug.settle(req, id, undefined);
    if (late) throw late;
    return out;
  };
  const discovery = (_req: Request, res: Response) => {
    res.setHeader('Tus-Version', TUS_VERSION);
    res.setHeader('Tus-Extension', TUS_EXTENSIONS);
    res.setHeader('Tus-Max-Size', String(d.maxFileSize));
    res.setHeader('Tus-Checksum-Algorithm', 'sha256');
    res.status(204).end();
  };
  r.options('/', ...doc('tusOptions'), discovery);
  r.options('/:id', discovery);

  const finished = async (req: Request, res: Response, result: PatchResult) => {
    if (result.file) await (d.plug ? d.plug.finished(req, result.file) : recordUploads(d.audit, req, [result.file], d.via));
    setResultHeaders(res, result, result.file);
  };

  const patchBody = async (req: Request, id: string, offset: number): Promise<PatchResult> => {
    exemptFromBodyDeadline(req);
    acceptBody(req, req.res!);
    const plugged = d.plug?.patch(req) ?? {};
    return d.tus.patch(d.ownerOf(req), id, offset, req, { checksum: parseChecksum(req), contentLength: intHeader(req, 'Content-Length'), ...plugged }, () => req.destroy());
  };

  r.post('/', ...doc('tusCreate'), ...(d.plug?.createGuards ?? []), ...d.authenticate, async (req: Request, res: Response) => {
    if (req.headers['upload-defer-length'] !== undefined) {
      throw new AppError('validation_error', 'Upload-Defer-Length is not supported: send Upload-Length (the quota is reserved at creation)', {}, true);
    }
    const length = intHeader(req, 'Upload-Length');
    if (length === undefined) throw new AppError('validation_error', 'Upload-Length: required', {}, true);
    if (length > d.maxFileSize) throw new AppError('file_too_large', `Upload-Length exceeds the limit of ${d.maxFileSize} bytes`, {}, true);
    const meta = parseMetadata(req.headers['upload-metadata'] as string | undefined);
    const withBody = req.headers['content-type'] !== undefined && (Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined);
    if (withBody && req.headers['content-type'] !== OFFSET_TYPE) throw new AppError('unsupported_media_type', `a creation body must be ${OFFSET_TYPE}`, {}, true);
    const owner = d.ownerOf(req);
    const o = { length, name: meta.name, mimeType: chooseMimeType(meta.type, meta.name) };
    const created = await settled(req, null, () => d.tus.create(owner, o, d.plug?.create(req, o)));
    const id = created.row.id;
    res.location(`${req.baseUrl}/${id}`);
    if (created.file) {
      await finished(req, res, { offset: 0, expiresAt: created.row.expires_at, file: created.file });
    } else if (withBody) {
      // creation-with-upload: the body is the first PATCH. An error answer still carries the
      // Location set above, so the client can ask for the offset and go on.
      await finished(req, res, await settled(req, id, () => patchBody(req, id, 0)));
    } else {
      setResultHeaders(res, { offset: 0, expiresAt: created.row.expires_at });
    }
    res.status(201).end();
  });

  r.head('/:id', ...doc('tusHead'), ...d.authenticate, async (req: Request, res: Response) => {
    const s = await d.tus.status(d.ownerOf(req), String(req.params.id));
    res.setHeader('Upload-Length', String(s.length));
    setResultHeaders(res, s, s.fileId && s.sha256 ? { id: s.fileId, sha256: s.sha256 } : null);
    res.status(200).end();
  });

  r.patch('/:id', ...doc('tusPatch'), ...d.authenticate, async (req: Request, res: Response) => {
    if (req.headers['content-type'] !== OFFSET_TYPE) throw new AppError('unsupported_media_type', `PATCH bodies must be ${OFFSET_TYPE}`, {}, true);
    const offset = intHeader(req, 'Upload-Offset');
    if (offset === undefined) throw new AppError('validation_error', 'Upload-Offset: required', {}, true);
    const id = String(req.params.id);
    await finished(req, res, await settled(req, id, () => patchBody(req, id, offset)));
    res.status(204).end();
  });

  r.delete('/:id', ...doc('tusDelete'), ...d.authenticate, async (req: Request, res: Response) => {
    await d.tus.terminate(d.ownerOf(req), String(req.params.id));
    await d.plug?.terminated(req, String(req.params.id));
    res.status(204).end();
  });
  return r;
}
