/**
 * Serving a stored file's bytes: RFC 9110 single ranges, download headers that stop a
 * stored page from rendering on this origin, and streaming with back-pressure where a
 * failure after the headers cuts the connection instead of ending cleanly.
 */
import { create as contentDisposition } from 'content-disposition';
import type { Request, Response } from 'express';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FileRow } from '../db/files.js';
import { AppError } from '../errors.js';
import type { ByteRange, VaultService } from '../services/vault.js';

/** Least progress (bytes) a download must make per idle period before it is cut off. */
const STALL_MIN_PROGRESS = 64 * 1024;

export type RangeDecision = { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

/**
 * Longest Range or If-Range value we look at. A real single range is a few dozen characters;
 * anything longer is ignored (full 200, as RFC 9110 allows for any range we do not accept),
 * so no parsing work grows with the 16 KiB a header may hold.
 */
export const MAX_RANGE_HEADER_LENGTH = 200;

/**
 * Interprets a Range header for a representation of `size` bytes. Malformed or invalid
 * ranges (including reversed ones like bytes=5-1), overlong headers and multi-range requests
 * are ignored (full 200), as RFC 9110 allows; only a valid range that starts past the end is 416.
 */
export function parseRange(header: string | undefined, size: number): RangeDecision {
  if (header === undefined || header.length > MAX_RANGE_HEADER_LENGTH) return { kind: 'full' };
  // RFC 9110 has no whitespace inside a byte-range-spec, so after trimming the outside the
  // pattern is strict. Each part is a run of one character class between fixed literals, so
  // the match is linear: the old /\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/ backtracked
  // quadratically over spaces (a 2.4 s event-loop freeze from one header).
  const m = /^bytes=(\d*)-(\d*)$/i.exec(header.trim());
  if (!m) return { kind: 'full' };
  const [, a, b] = m as unknown as [string, string, string];
  if (a === '' && b === '') return { kind: 'full' };
  if (a === '') {
    // Suffix range: the last n bytes.
    const n = Number(b);
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? Infinity : Number(b);
  if (end < start) return { kind: 'full' };
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end: Math.min(end, size - 1) };
}

/** Sets the headers every download carries (also on HEAD). */
export function setDownloadHeaders(res: Response, row: FileRow): void {
  res.setHeader('Content-Type', row.mimeType);
  res.setHeader('Content-Disposition', contentDisposition(row.name, { type: 'attachment' }));
  res.setHeader('ETag', `"${row.sha256.toString('hex')}"`);
  res.setHeader('Repr-Digest', `sha-256=:${row.sha256.toString('base64')}:`);
  res.setHeader('Accept-Ranges', 'bytes');
  res.setHeader('X-Content-Type-Options', 'nosniff');
  // A stored HTML or SVG file must never run as a page of this origin.
  res.setHeader('Content-Security-Policy', "sandbox; default-src 'none'");
  res.setHeader('Cache-Control', 'private, no-store');
  res.setHeader('Last-Modified', new Date(row.createdAt).toUTCString());
}

/** Resolves which bytes to send, honouring If-Range (a stale validator means the full file). */
function decideRange(req: Request, row: FileRow): RangeDecision {
  return decideRangeFor(req, `"${row.sha256.toString('hex')}"`, row.size);
}

/** Which bytes of a representation with this strong ETag and size to send: If-Range with another validator means all of them. */
export function decideRangeFor(req: Request, etag: string, size: number): RangeDecision {
  const ifRange = req.headers['if-range'];
  // An overlong If-Range is not our ETag either: the full representation, as for a stale one.
  if (typeof ifRange === 'string' && (ifRange.length > MAX_RANGE_HEADER_LENGTH || ifRange.trim() !== etag)) {
    return { kind: 'full' };
  }
  return parseRange(req.headers.range, size);
}

export interface SendResult {
  /** Plaintext bytes handed to the socket. */
  bytesSent: number;
  /** True when the whole planned body was written and the response finished. */
  completed: boolean;
  /** Set when the stored data failed verification after the headers were sent. */
  integrityError?: boolean;
  range: ByteRange;
}

/** A hold taken before a GET response starts and released when it ends (share budgets). */
export interface TransferHold {
  /**
   * Called every `heartbeatMs` (default a minute) while the body streams, with the bytes
   * sent so far; false means the hold was taken away and the response is cut.
   */
  heartbeat?(bytesSent: number): boolean | Promise<boolean>;
  heartbeatMs?: number;
  /** Called exactly once with what was really sent. */
  end(bytesSent: number, completed: boolean): unknown;
}

export interface SendOptions {
  /**
   * Called for GET once the range is known and before anything is sent; may throw to refuse
   * (e.g. an exhausted share). `deliversLastByte` is true when the response ends the file.
   */
  begin?(range: ByteRange, length: number, deliversLastByte: boolean): TransferHold | undefined | Promise<TransferHold | undefined>;
}

/**
 * Answers GET or HEAD for a stored file. HEAD never decrypts anything. For GET the first
 * chunk is verified before the status line is sent, so early damage becomes a clean 500.
 */
export async function sendFileContent(req: Request, res: Response, vault: VaultService, row: FileRow, opts: SendOptions = {}): Promise<SendResult> {
  const decision = decideRange(req, row);
  if (decision.kind === 'unsatisfiable') {
    throw new AppError('range_not_satisfiable', `the file has ${row.size} bytes`, { 'Content-Range': `bytes */${row.size}` });
  }
  const range: ByteRange = decision.kind === 'partial' ? { start: decision.start, end: decision.end } : { start: 0, end: row.size - 1 };
  const length = range.end - range.start + 1;
  if (req.method === 'HEAD') {
    writeHead(res, row, decision, range, length);
    res.end();
    return { bytesSent: 0, completed: true, range };
  }
  const hold = await opts.begin?.(range, length, range.end === row.size - 1);
  return streamBody(req, res, hold, { fileId: row.id }, async () => {
    const plaintext = await vault.open(row, range);
    req.log?.debug({ fileId: row.id, keyId: row.keyId, start: range.start, end: range.end }, 'first chunk verified; streaming');
    writeHead(res, row, decision, range, length);
    return Readable.from(plaintext, { objectMode: false, highWaterMark: 256 * 1024 });
  }).then((r) => ({ ...r, range }));
}

/**
 * Streams a response body under a hold: heartbeats (a hold taken away cuts the response), a
 * stall watchdog, and a byte count. `open` produces the body and writes the status line;
 * anything it throws reaches the caller as a clean error answer. A failure after the headers
 * destroys the connection. The hold's end() is called exactly once with what was sent.
 */
export async function streamBody(
  req: Request,
  res: Response,
  hold: TransferHold | undefined,
  logMeta: Record<string, unknown>,
  open: () => Promise<Readable>,
): Promise<Omit<SendResult, 'range'>> {
  let bytesSent = 0;
  let completed = false;
  let integrityError = false;
  const timer = hold?.heartbeat
    ? setInterval(() => {
        void Promise.resolve(hold.heartbeat!(bytesSent)).then(
          (ok) => {
            if (ok === false && !res.writableFinished) {
              req.log?.info({ ...logMeta, bytesSent }, 'download gave way to another request; closing the connection');
              res.destroy();
            }
          },
          (err: unknown) => req.log?.warn({ err, ...logMeta }, 'download heartbeat failed'),
        );
      }, hold.heartbeatMs ?? 60_000)
    : undefined;
  // A client that stops reading (or trickles a few bytes now and then, which TCP window
  // probes alone can do) would hold the response and its file open for ever; the socket's
  // idle timeout does not see a trickle. Require a chunk of progress per idle period.
  const stallMs = Number(req.app.get('stall timeout ms')) || 120_000;
  let mark = 0;
  const watchdog = setInterval(() => {
    if (bytesSent - mark < STALL_MIN_PROGRESS && !res.writableFinished) {
      req.log?.info({ ...logMeta, bytesSent }, 'download stalled; closing the connection');
      res.destroy();
    }
    mark = bytesSent;
  }, stallMs);
  watchdog.unref();
  try {
    const body = await open();
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytesSent += chunk.length;
        cb(null, chunk);
      },
    });
    try {
      await pipeline(body, counter, res);
      completed = true;
    } catch (err) {
      // pipeline has destroyed the response (and so the socket): the client sees a broken transfer.
      if ((err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE') {
        req.log?.info({ ...logMeta, bytesSent }, 'client closed the download early');
      } else {
        integrityError = true;
        req.log?.error({ err, ...logMeta, bytesSent, code: 'integrity_error' }, 'download failed after headers were sent');
      }
    }
    return { bytesSent, completed, integrityError };
  } finally {
    clearInterval(watchdog);
    if (timer) clearInterval(timer);
    await hold?.end(bytesSent, completed);
  }
}

function writeHead(res: Response, row: FileRow, decision: RangeDecision, range: ByteRange, length: number): void {
  setDownloadHeaders(res, row);
  res.setHeader('Content-Length', String(length));
  if (decision.kind === 'partial') {
    res.status(206);
    res.setHeader('Content-Range', `bytes ${range.start}-${range.end}/${row.size}`);
  } else {
    res.status(200);
  }
}
