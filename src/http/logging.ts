/**
 * Structured request logging (pino). Only a whitelist of request fields is logged, and
 * secrets that can appear in URLs (share tokens, tickets, API tokens) are redacted.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pino, type Logger } from 'pino';
import { pinoHttp } from 'pino-http';

/** Creates the application logger; `destination` lets tests capture lines. */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: undefined,
      redact: {
        paths: ['req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]', '*.password', '*.token', '*.setupCode'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}

/** Replaces secrets that can ride in a URL with [redacted]. */
export function redactUrl(url: string): string {
  let decoded = url;
  try {
    // Secrets can arrive percent-encoded (%73fs_...): redact the decoded form.
    decoded = decodeURIComponent(url);
  } catch {
    decoded = url.replace(/%[0-9a-f]{2}/gi, '%');
  }
  return decoded
    .replace(/\/s\/[^/?#]+/g, '/s/[redacted]')
    .replace(/([?&](?:ticket|token|code|_?csrf)=)[^&#]*/gi, '$1[redacted]')
    .replace(/sfs_[A-Za-z0-9_-]+/g, 'sfs_[redacted]');
}

const REQUEST_ID = /^[A-Za-z0-9._-]{8,64}$/;

/** Request logging middleware; each line carries the request id, echoed as X-Request-Id. */
export function requestLogger(logger: Logger) {
  return pinoHttp({
    logger,
    genReqId(req: IncomingMessage, res: ServerResponse) {
      // Accept a caller's id only if it is plainly safe to log; otherwise make one.
      const sent = req.headers['x-request-id'];
      const id = typeof sent === 'string' && REQUEST_ID.test(sent) ? sent : randomUUID();
      res.setHeader('X-Request-Id', id);
      return id;
    },
    serializers: {
      req(req: { id: unknown; method: string; url: string; headers: Record<string, unknown>; remoteAddress?: string; raw?: { ip?: string } }) {
        return {
          id: req.id,
          method: req.method,
          url: redactUrl(req.url),
          ip: req.raw?.ip ?? req.remoteAddress,
          userAgent: req.headers['user-agent'],
        };
      },
      res(res: { statusCode: number }) {
        return { statusCode: res.statusCode };
      },
    },
    customLogLevel(_req, res, err) {
      if (err || res.statusCode >= 500) return 'error';
      return 'info';
    },
    // The error handler logs failures with detail; avoid logging the same error object twice.
    customErrorMessage: () => 'request errored',
    quietReqLogger: true,
  });
}
