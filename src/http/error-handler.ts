/**
 * The one place where errors become HTTP responses: RFC 9457 problem+json with a stable
 * `code`. Internals (stack traces, paths, SQL) are logged with the request id, never sent.
 */
import type { ErrorRequestHandler, Request, Response } from 'express';
import multer from 'multer';
import { IntegrityError } from '../crypto/format.js';
import { AppError, ERROR_CODES, type ErrorCode } from '../errors.js';
import { lingerOnClose } from './linger.js';

/** Closes the connection after the answer when the error says so or the body was never read. */
function closeIfUnread(req: Request, res: Response, err: AppError): void {
  // A request refused before its body was read: do not read (possibly gigabytes) to its end.
  const unreadBody = !req.complete && (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0);
  if (err.closeConnection || unreadBody) {
    res.setHeader('Connection', 'close');
    lingerOnClose(req.socket);
  }
}

/** Writes a problem+json response for an AppError. */
export function sendProblem(req: Request, res: Response, err: AppError): void {
  const body = {
    type: `urn:sfs:problem:${err.code}`,
    title: ERROR_CODES[err.code].title,
    status: err.status,
    detail: err.detail,
    code: err.code,
    requestId: String(req.id ?? ''),
  };
  for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
  if (err.status === 401 && !res.hasHeader('WWW-Authenticate')) res.setHeader('WWW-Authenticate', 'Bearer realm="sfs"');
  closeIfUnread(req, res, err);
  res.status(err.status).type('application/problem+json').send(JSON.stringify(body));
}

const MULTER_CODES: Record<string, [ErrorCode, string]> = {
  LIMIT_FILE_SIZE: ['file_too_large', 'file exceeds the size limit'],
  LIMIT_FILE_COUNT: ['too_many_files', 'too many files in one request'],
  LIMIT_PART_COUNT: ['payload_too_large', 'too many parts in the multipart body'],
  LIMIT_FIELD_KEY: ['payload_too_large', 'a field name is too long'],
  LIMIT_FIELD_VALUE: ['payload_too_large', 'a field value is too long'],
  LIMIT_FIELD_COUNT: ['payload_too_large', 'too many fields'],
  LIMIT_UNEXPECTED_FILE: ['validation_error', 'file parts must be named "file"'],
  MISSING_FIELD_NAME: ['validation_error', 'a multipart part has no field name'],
};

/** Turns any thrown value into an AppError; unknown errors become a bare internal_error. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof IntegrityError) return new AppError('integrity_error', 'the stored file failed verification and was not sent');
  if (err instanceof multer.MulterError) {
    const [code, detail] = MULTER_CODES[err.code] ?? ['bad_request', 'malformed multipart body'];
    return new AppError(code, err.field ? `${detail} (field "${err.field}")` : detail, {}, code !== 'validation_error');
  }
  const e = err as { type?: string; status?: number; code?: string };
  // body-parser errors carry a stable `type`.
  if (e?.type === 'entity.parse.failed') return new AppError('invalid_json', 'the request body is not valid JSON');
  if (e?.type === 'entity.too.large') return new AppError('payload_too_large', 'the request body is too large', {}, true);
  if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported') {
    return new AppError('unsupported_media_type', 'unsupported body encoding or charset');
  }
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') return new AppError('insufficient_storage', 'the server has no space left');
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) return new AppError('bad_request', 'bad request');
  return new AppError('internal_error', 'an unexpected error occurred; quote the request id when reporting it');
}

/** Express error handler: logs, then answers problem+json, or cuts the connection if headers are gone. */
export const errorHandler: ErrorRequestHandler = (err, req, res, _next) => {
  const app = toAppError(err);
  if (app.status >= 500) req.log?.error({ err, code: app.code }, 'request failed');
  else req.log?.info({ code: app.code, status: app.status }, 'request rejected');
  // Already answered, or being answered: an upload refused mid-stream answers at once (the
  // error page renders asynchronously) and its error then arrives here too. Cutting that
  // response off would lose the 413 the client was about to read.
  if (res.writableEnded || res.locals.sfsAnswering === true) return;
  if (res.headersSent) {
    // Never end a broken response cleanly: the client must see a failed transfer.
    res.destroy();
    return;
  }
  sendError(req, res, app);
};

/**
 * True when an error should be answered with a page rather than problem+json: never under
 * /api, and elsewhere only when the client prefers HTML (a browser; curl and scripts that
 * send no preference, or ask for JSON, get problem+json).
 */
export function wantsErrorPage(req: Request): boolean {
  if (/^\/api(\/|$)/.test(req.originalUrl)) return false;
  return req.accepts(['application/json', 'text/html']) === 'text/html';
}

/** Answers an AppError as a friendly page or as problem+json (see wantsErrorPage). */
export function sendError(req: Request, res: Response, err: AppError): void {
  // Marks the response as answered for errorHandler (the page below renders asynchronously).
  res.locals.sfsAnswering = true;
  if (!wantsErrorPage(req)) return sendProblem(req, res, err);
  for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
  closeIfUnread(req, res, err);
  res.setHeader('Cache-Control', 'no-store');
  const requestId = String(req.id ?? '');
  // A dead share link looks the same from its page and from its download address.
  // So does a dead upload request (unknown, expired, closed and full alike).
  const view = err.code === 'not_found' && req.path.startsWith('/s/') ? 'share-missing' : err.code === 'not_found' && req.path.startsWith('/r/') ? 'request-missing' : 'error';
  res.status(err.status).render(view, { ...errorPageText(err), status: err.status, requestId }, (renderErr: Error | null, html?: string) => {
    if (renderErr) {
      req.log?.error({ err: renderErr }, 'error page failed to render');
      res.type('text/plain').send(`${err.status} ${ERROR_CODES[err.code].title} (request ${requestId})`);
      return;
    }
    res.type('html').send(html);
  });
}

/** Heading and message of an error page: the safe detail for 4xx, never internals for 5xx. */
function errorPageText(err: AppError): { heading: string; text: string } {
  if (err.status >= 500) {
    return {
      heading: 'Something went wrong on our side',
      text: 'Nothing you did caused this. Try again in a moment; if it keeps happening, tell the administrator the reference below.',
    };
  }
  switch (err.code) {
    case 'not_found':
      return { heading: 'Page not found', text: 'There is nothing at this address. It may have been mistyped, or the file or link was deleted.' };
    case 'csrf_invalid':
      return { heading: 'This form has expired', text: 'The form was open too long or did not come from this site. Go back, reload the page and try again.' };
    case 'file_too_large':
    case 'too_many_files':
    case 'request_limit_exceeded':
    case 'file_type_not_allowed':
    case 'payload_too_large':
    case 'quota_exceeded':
      return { heading: ERROR_CODES[err.code].title, text: `The upload was stopped: ${err.detail}. Nothing was stored.` };
    default:
      return { heading: ERROR_CODES[err.code].title, text: err.detail.charAt(0).toUpperCase() + err.detail.slice(1) + '.' };
  }
}
