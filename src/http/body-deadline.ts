/**
 * A total deadline for small request bodies. The server has no request timeout (a 2 GiB
 * upload through a slow tunnel must survive) and the socket idle timeout is reset by every
 * byte, so without this a client could hold a login or token request open for ever by
 * trickling its JSON one byte per idle period. File uploads opt out (exemptFromBodyDeadline)
 * once their route is reached: they keep the idle-timeout rule and the download-style limits.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { AppError } from '../errors.js';
import { sendError } from './error-handler.js';

const TIMER = Symbol('sfs.bodyDeadline');

type WithTimer = Request & { [TIMER]?: NodeJS.Timeout };

/** True when the request announces a body (a length above zero, or chunked). */
function hasBody(req: Request): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

/**
 * Starts the deadline for every request that has a body. When it passes before the body has
 * fully arrived, the request is answered 408 `body_timeout` and the connection is closed; a
 * request already answered (its body never read) just loses its connection.
 */
export function smallBodyDeadline(timeoutMs: number): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    if (!hasBody(req) || req.complete) return next();
    const r = req as WithTimer;
    const timer = setTimeout(() => {
      r[TIMER] = undefined;
      if (req.complete || req.socket.destroyed) return;
      req.log?.info({ code: 'body_timeout', timeoutMs, bytesRead: req.socket.bytesRead }, 'request body not received in time; closing the connection');
      if (res.headersSent) {
        req.socket.destroy();
        return;
      }
      // Stop feeding the body parser: whatever arrives now must never reach a route (the
      // parser would otherwise finish later and run the handler after we answered 408).
      req.pause();
      sendError(req, res, new AppError('body_timeout', `the request body did not arrive within ${Math.round(timeoutMs / 1000)} seconds`, {}, true));
    }, timeoutMs);
    timer.unref();
    r[TIMER] = timer;
    const clear = () => {
      clearTimeout(timer);
      r[TIMER] = undefined;
    };
    req.once('end', clear);
    // The response may end before the body does (a route that never reads it): the timer
    // then keeps running and closes the connection if the rest does not come in time.
    res.once('close', () => {
      if (req.complete || req.socket.destroyed) clear();
    });
    next();
  };
}

/** Lifts the small-body deadline from a file upload, which streams for as long as it makes progress. */
export function exemptFromBodyDeadline(req: Request): void {
  const r = req as WithTimer;
  if (r[TIMER]) clearTimeout(r[TIMER]);
  r[TIMER] = undefined;
}
