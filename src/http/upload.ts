/**
 * Upload intake: a multer StorageEngine that encrypts each part as it streams (plaintext
 * never touches disk), and the raw-body path for PUT. Both hand the vault a stream and get
 * back staged files; the route commits rows only after the whole request was read.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import multer, { type StorageEngine } from 'multer';
import { AppError } from '../errors.js';
import { chooseMimeType, cleanFileName } from '../services/filenames.js';
import type { QuotaLease } from '../services/quota.js';
import type { StagedFile, VaultService } from '../services/vault.js';
import { exemptFromBodyDeadline } from './body-deadline.js';
import { sendError, toAppError } from './error-handler.js';

declare module 'express-serve-static-core' {
  interface Request {
    staged?: (StagedFile & { seq: number })[];
    uploadSeq?: number;
    /** Set once the multipart request has ended in an error and its staged blobs were discarded. */
    uploadAbandoned?: boolean;
  }
}

/** Parses a hex SHA-256 from a form field; validation_error when malformed. */
export function parseHexSha256(value: unknown, field: string): Buffer {
  if (typeof value !== 'string' || !/^[0-9a-fA-F]{64}$/.test(value.trim())) {
    throw new AppError('validation_error', `${field}: expected 64 hex characters`);
  }
  return Buffer.from(value.trim(), 'hex');
}

/** Parses `sha-256=:<base64>:` from a Content-Digest or Repr-Digest header (RFC 9530). */
export function parseDigestHeader(value: string | undefined, header: string): Buffer | undefined {
  if (value === undefined) return undefined;
  const m = /(?:^|,)\s*sha-256\s*=\s*:([A-Za-z0-9+/]+={0,2}):/i.exec(value);
  if (!m) {
    // Other algorithms are allowed by the RFC; we can only check sha-256.
    if (/sha-256/i.test(value)) throw new AppError('validation_error', `${header}: malformed sha-256 value`);
    return undefined;
  }
  const buf = Buffer.from(m[1]!, 'base64');
  if (buf.length !== 32) throw new AppError('validation_error', `${header}: sha-256 must be 32 bytes`);
  return buf;
}

/**
 * A step before a part is encrypted (upload requests): may refuse the part before any byte
 * is stored, and wraps its plaintext stream (limits, type sniffing, a request's lease).
 */
export type PartIntake = (req: Request, part: { name: string; stream: AsyncIterable<Buffer> }) => Promise<AsyncIterable<Buffer>>;

class EncryptingStorage implements StorageEngine {
  constructor(
    private readonly vault: VaultService,
    private readonly maxBytes: number,
    private readonly leaseOf?: (res: Response) => QuotaLease | undefined,
    private readonly intake?: PartIntake,
  ) {}

  _handleFile(req: Request, file: Express.Multer.File, cb: (error?: unknown, info?: Partial<Express.Multer.File>) => void): void {
    let expected: Buffer | undefined;
    try {
      // A `sha256` field applies to the next file part only, and only if it precedes it.
      const body = req.body as Record<string, unknown> | undefined;
      if (body && body.sha256 !== undefined) {
        expected = parseHexSha256(Array.isArray(body.sha256) ? body.sha256.at(-1) : body.sha256, 'sha256');
        delete body.sha256;
      }
    } catch (err) {
      file.stream.resume();
      cb(err);
      return;
    }
    const name = cleanFileName(file.originalname);
    // Parts are encrypted concurrently; remember the order they arrived in.
    const seq = (req.uploadSeq = (req.uploadSeq ?? 0) + 1);
    (this.intake ? this.intake(req, { name, stream: file.stream }) : Promise.resolve(file.stream))
      .then((input) => this.vault.ingest(input, {
        name,
        mimeType: chooseMimeType(file.mimetype, name),
        maxBytes: this.maxBytes,
        expectedSha256: expected,
        lease: req.res ? this.leaseOf?.(req.res) : undefined,
      }))
      .then(
        (staged) => {
          // The request may have failed (client gone, malformed end) while this part was still
          // being written, e.g. to an object store: nobody will commit or discard it, so do it now.
          if (req.uploadAbandoned) {
            void this.vault.discard([staged]).finally(() => cb(null, { size: staged.size, filename: staged.id }));
            return;
          }
          (req.staged ??= []).push({ ...staged, seq });
          cb(null, { size: staged.size, filename: staged.id });
        },
        async (err) => {
          file.stream.resume();
          if (err instanceof AppError && err.closeConnection && req.res && !req.res.headersSent) {
            // multer would read the whole body before reporting; answer now and let the
            // connection close, so a client sending 50 GB is not read to the end.
            const staged = req.staged ?? [];
            req.staged = [];
            await this.vault.discard(staged);
            sendError(req, req.res, err);
          }
          cb(err);
        },
      );
  }

  _removeFile(req: Request, file: Express.Multer.File, cb: (error: Error | null) => void): void {
    const staged = req.staged?.find((s) => s.id === file.filename);
    req.staged = req.staged?.filter((s) => s !== staged);
    (staged ? this.vault.discard([staged]) : Promise.resolve()).then(() => cb(null), cb);
  }
}

/**
 * Multipart middleware: parts named `file` are encrypted as they arrive. On any failure
 * the staged blobs are removed before the error reaches the error handler.
 */
export function multipartUpload(
  vault: VaultService,
  opts: { maxFileSize: number; maxFiles: number; lease?: (res: Response) => QuotaLease | undefined; intake?: PartIntake },
): RequestHandler {
  const upload = multer({
    storage: new EncryptingStorage(vault, opts.maxFileSize, opts.lease, opts.intake),
    defParamCharset: 'utf8',
    // Keep the raw name: busboy would turn "..", "." into "" and multer would drop the part.
    // cleanFileName strips path components itself.
    preservePath: true,
    limits: {
      files: opts.maxFiles,
      fields: 50,
      fieldSize: 64 * 1024,
      fieldNameSize: 200,
      parts: opts.maxFiles + 50,
      headerPairs: 200,
    },
  }).array('file', opts.maxFiles);
  return (req: Request, res: Response, next: NextFunction) => {
    if (!req.is('multipart/form-data')) {
      next(new AppError('unsupported_media_type', 'send multipart/form-data with parts named "file" (or use PUT /api/v1/uploads/:name)'));
      return;
    }
    // A file upload streams for as long as it makes progress (idle timeout), not 30 s.
    exemptFromBodyDeadline(req);
    acceptBody(req, res);
    // A client that goes away mid-request may leave multer without a final callback: when the
    // response closes, whatever is still staged (not taken by the route for commit) is
    // discarded, and parts still being written discard themselves when they finish.
    res.once('close', () => {
      req.uploadAbandoned = true;
      const left = req.staged ?? [];
      req.staged = [];
      if (left.length) void vault.discard(left);
    });
    upload(req, res, (err?: unknown) => {
      // A `sha256` field still unclaimed at the end came after the last file part: it
      // checks nothing, and storing the file as if it had been verified would be a lie.
      const body = req.body as Record<string, unknown> | undefined;
      if (!err && body?.sha256 !== undefined) {
        err = new AppError('checksum_field_order', 'sha256: the field must come before the file part it checks; nothing was stored');
      }
      if (!err) return next();
      req.uploadAbandoned = true;
      const staged = req.staged ?? [];
      req.staged = [];
      vault.discard(staged).finally(() => next(multipartError(err)));
    });
  };
}

/** Multer passes busboy's parse errors through untyped; anything not ours or errno-like is malformed input. */
function multipartError(err: unknown): unknown {
  const e = err as { code?: unknown; syscall?: unknown };
  if (err instanceof AppError || err instanceof multer.MulterError || typeof e?.syscall === 'string') {
    const app = toAppError(err);
    // Any 4xx during a multipart upload: do not read the rest of the body.
    return app.status >= 400 && app.status < 500 ? new AppError(app.code, app.detail, app.headers, true) : err;
  }
  return new AppError('bad_request', 'malformed multipart body', {}, true);
}

/** Set by the server's checkContinue handler on requests that wait for `100 Continue`. */
export const AWAITING_CONTINUE = Symbol('sfs.awaitingContinue');

/**
 * Sends `100 Continue` if the client asked for it and it was not sent yet. Called only once
 * a request has passed authentication and size checks, so a refused upload is answered
 * with its error instead of the body being sent.
 */
export function acceptBody(req: Request, res: Response): void {
  const r = req as Request & { [AWAITING_CONTINUE]?: boolean };
  if (r[AWAITING_CONTINUE] && !res.headersSent) {
    r[AWAITING_CONTINUE] = false;
    res.writeContinue();
  }
}

/**
 * Takes the uploader's quota lease before multer reads the body (so every part counts as it
 * streams) and releases it when the response closes. Read it back with leaseOf(res).
 */
export function withQuotaLease(vault: VaultService, userIdOf: (req: Request) => string): RequestHandler {
  return async (req, res, next) => {
    const lease = await vault.quota.lease(userIdOf(req));
    res.locals.lease = lease;
    res.on('close', () => void lease.release());
    next();
  };
}

/** The lease withQuotaLease put on this response. */
export function leaseOf(res: Response): QuotaLease {
  return res.locals.lease as QuotaLease;
}
