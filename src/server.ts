/**
 * The HTTP server around an app: idle timeouts instead of a total-request timeout (a slow
 * 2 GiB upload through a tunnel must not be cut at 300 s), and `Expect: 100-continue`
 * handed to the app so it can refuse an upload before the body is sent.
 */
import http from 'node:http';
import https from 'node:https';
import type { RequestListener } from 'node:http';
import { ERROR_CODES, type ErrorCode } from './errors.js';
import { AWAITING_CONTINUE } from './http/upload.js';

export interface ServerOptions {
  idleTimeoutMs: number;
  tls?: { cert: Buffer; key: Buffer };
}

/** Creates (does not start) an HTTP or HTTPS server for `app`. */
export function createHttpServer(app: RequestListener, o: ServerOptions): http.Server {
  const server = o.tls ? https.createServer({ cert: o.tls.cert, key: o.tls.key }, app) : http.createServer(app);
  server.requestTimeout = 0;
  server.headersTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  // A socket with no traffic in either direction for this long is closed.
  server.setTimeout(o.idleTimeoutMs, (socket) => socket.destroy());
  // Requests Node cannot even parse never reach the app: answer them in the same
  // problem+json shape (Node's default is a bare 400) and close.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const code: ErrorCode = err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : 'bad_request';
    const { status, title } = ERROR_CODES[code];
    const body = JSON.stringify({ type: `urn:sfs:problem:${code}`, title, status, detail: 'the request could not be parsed as HTTP', code, requestId: '' });
    socket.end(
      `HTTP/1.1 ${status} ${title}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  server.on('checkContinue', (req, res) => {
    (req as unknown as Record<symbol, boolean>)[AWAITING_CONTINUE] = true;
    app(req, res);
  });
  return server;
}
