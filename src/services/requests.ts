/**
 * Upload requests: an owner asks outsiders (no account) to send files through a link.
 *
 * THE ENTRY POINT FOR EVERY WAY OF UPLOADING TO A REQUEST is `resolveTarget(token)`: it turns a
 * link token into a RequestUploadTarget (owner, limits, request id) or null (the identical
 * 404 for unknown, expired, closed and full requests, and for a disabled owner). Whatever
 * carries the bytes (the page's multipart POST, curl's PUT, a tus endpoint mounted at
 * /r/<token>/tus/, a later retention setting) then does, per upload:
 *   1. `target.openLease()`: the cross-instance hold on the request's files and bytes;
 *   2. per file `lease.addFile()`, then `requests.guard(stream, ...)` around the plaintext,
 *      fed to `vault.ingest` with the owner's quota lease (the same encryption pipeline as
 *      the owner's own uploads);
 *   3. `requests.commit(target, staged, origin, quotaLease, lease)`: rows, counters and both
 *      leases in one transaction; 4. `lease.release()` in a finally.
 *
 * Limits are enforced while streaming: the per-file size and the allowed types (by
 * extension and by the sniffed first bytes) in guard(); the request's total files and bytes
 * through the lease, which counts bytes in flight in the shared database like quota leases
 * (services/quota.ts) do, so uploads through several instances cannot together overshoot,
 * and the commit re-checks expiry, closing and the totals, so a request that closed, expired
 * or filled up while an upload was in flight takes nothing more from it.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Database, Trx } from '../db/database.js';
import type { FileRow } from '../db/files.js';
import { UploadRequestsRepo, type UploadRequestRow } from '../db/requests.js';
import { HoldsRepo } from '../db/holds.js';
import type { Keyring } from '../crypto/keyring.js';
import { parseDuration } from '../config.js';
import { AppError } from '../errors.js';
import { checkPassword } from './accounts.js';
import { newId } from './ids.js';
import type { IntegrityKeys } from './integrity.js';
import type { PasswordHasher } from './passwords.js';
import type { QuotaLease } from './quota.js';
import { RESERVE_AHEAD } from './quota.js';
import type { FileOrigin, StagedFile, VaultService } from './vault.js';
import type { Notifier } from './notify/notifier.js';

export type { UploadRequestRow } from '../db/requests.js';

/** How many leading bytes are looked at to tell a file's type. */
export const SNIFF_BYTES = 4100;
const TICKET_LABEL = 'sfs/v1 upload request ticket';
/** A password-protected request's page hands out tickets valid this long. */
export const UPLOAD_TICKET_TTL_MS = 12 * 60 * 60 * 1000;

export interface RequestsDeps {
  db: Database;
  integrity: IntegrityKeys;
  hasher: PasswordHasher;
  keyring: Keyring;
  vault: VaultService;
  /** Longest lifetime of a request (REQUEST_MAX_TTL, seconds). */
  maxTtlSeconds: number;
  /** The largest file the server takes at all (MAX_FILE_SIZE). */
  maxFileSize: number;
  /** Lease lifetime without renewal (ms), as for quota leases. */
  leaseMs: number;
  /** Tells the owner (their `requestUpload` choice) in the commit's transaction. */
  notifier?: Notifier;
  /** The expiry of a file arriving now: `seconds` (the request's own retention) or the retention default (services/lifecycle.ts); none when absent. */
  fileExpiresAt?: (createdAt: number, seconds?: number) => number | null;
  /** FILE_MAX_RETENTION in seconds: a request's fileRetentionSeconds may not exceed it; null or absent: no ceiling. */
  maxRetentionSeconds?: number | null;
  now?: () => number;
}

export interface RequestInput {
  title: string;
  message?: string;
  expiresInSeconds?: number;
  password?: string;
  maxFiles?: number;
  maxBytes?: number;
  maxFileBytes?: number;
  allowedTypes?: string[] | null;
  requireName?: boolean;
  requireEmail?: boolean;
  /** Seconds (or "30d"-style) that arriving files are kept; null/absent: the retention default. */
  fileRetentionSeconds?: number | string | null;
}

/** What an upload to a live request works with (see the comment at the top). */
export interface RequestUploadTarget {
  request: UploadRequestRow;
  requestId: string;
  ownerId: string;
  /** Shown to the uploader as who asked. */
  ownerName: string;
  limits: { maxFiles: number; maxBytes: number; maxFileBytes: number; allowedTypes: string[] | null };
  /** A new cross-instance hold for one HTTP request's (or one resumable upload's) files. */
  openLease(): RequestLease;
}

/** Why a request takes no uploads, or null when it does. */
export function requestStatus(r: UploadRequestRow, now: number): 'active' | 'closed' | 'expired' | 'full' {
  if (r.closedAt !== null) return 'closed';
  if (r.expiresAt <= now) return 'expired';
  if (r.filesReceived >= r.maxFiles || r.bytesReceived >= r.maxBytes) return 'full';
  return 'active';
}

/**
 * Reads a request's fileRetentionSeconds (a number of seconds, or "30d"-style like
 * FILE_DEFAULT_RETENTION): null stays null (the default). Refused before anything is stored,
 * with retention_exceeded above FILE_MAX_RETENTION, so an owner cannot keep what outsiders send
 * longer than the server's ceiling allows.
 */
export function requestRetention(value: number | string | null | undefined, maxSeconds: number | null | undefined): number | null | undefined {
  if (value === undefined || value === null) return value;
  const seconds = typeof value === 'number' ? value : parseDuration(value);
  if (seconds === null || !Number.isSafeInteger(seconds) || seconds < 60) {
    throw new AppError('validation_error', 'fileRetentionSeconds: expected whole seconds or a duration such as 30d, 12h, 2w (at least 60 s)');
  }
  if (maxSeconds !== null && maxSeconds !== undefined && seconds > maxSeconds) {
    throw new AppError('retention_exceeded', `fileRetentionSeconds: must be at most ${maxSeconds} (FILE_MAX_RETENTION)`);
  }
  return seconds;
}

const GONE = 'this upload link does not exist or is no longer available';
const gone = () => new AppError('not_found', GONE, {}, true);

// --- Types: by extension and by the first bytes -------------------------------------------

interface Signature {
  label: string;
  exts: string[];
  test: (b: Buffer) => boolean;
}
const at = (b: Buffer, off: number, bytes: number[]) => b.length >= off + bytes.length && bytes.every((x, i) => b[off + i] === x);
const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));

/** Formats known by their first bytes, and the extensions each may carry. */
const SIGNATURES: Signature[] = [
  { label: 'PDF', exts: ['pdf'], test: (b) => at(b, 0, ascii('%PDF-')) },
  { label: 'PNG', exts: ['png'], test: (b) => at(b, 0, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]) },
  { label: 'JPEG', exts: ['jpg', 'jpeg', 'jfif'], test: (b) => at(b, 0, [0xff, 0xd8, 0xff]) },
  { label: 'GIF', exts: ['gif'], test: (b) => at(b, 0, ascii('GIF87a')) || at(b, 0, ascii('GIF89a')) },
  { label: 'WebP', exts: ['webp'], test: (b) => at(b, 0, ascii('RIFF')) && at(b, 8, ascii('WEBP')) },
  { label: 'WAV', exts: ['wav'], test: (b) => at(b, 0, ascii('RIFF')) && at(b, 8, ascii('WAVE')) },
  { label: 'TIFF', exts: ['tif', 'tiff'], test: (b) => at(b, 0, [0x49, 0x49, 0x2a, 0x00]) || at(b, 0, [0x4d, 0x4d, 0x00, 0x2a]) },
  { label: 'ZIP', exts: ['zip', 'docx', 'xlsx', 'pptx', 'odt', 'ods', 'odp', 'epub', 'jar', 'apk', 'pages', 'numbers', 'key'], test: (b) => at(b, 0, [0x50, 0x4b, 0x03, 0x04]) || at(b, 0, [0x50, 0x4b, 0x05, 0x06]) },
  { label: 'OLE (legacy Office)', exts: ['doc', 'xls', 'ppt', 'msg'], test: (b) => at(b, 0, [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]) },
  { label: 'gzip', exts: ['gz', 'tgz'], test: (b) => at(b, 0, [0x1f, 0x8b]) },
  { label: '7-Zip', exts: ['7z'], test: (b) => at(b, 0, [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]) },
  { label: 'RAR', exts: ['rar'], test: (b) => at(b, 0, ascii('Rar!\x1a\x07')) },
  { label: 'Windows executable', exts: ['exe', 'dll', 'sys', 'scr'], test: (b) => at(b, 0, ascii('MZ')) },
  { label: 'ELF executable', exts: [], test: (b) => at(b, 0, [0x7f, 0x45, 0x4c, 0x46]) },
  { label: 'Mach-O executable', exts: [], test: (b) => at(b, 0, [0xcf, 0xfa, 0xed, 0xfe]) || at(b, 0, [0xfe, 0xed, 0xfa, 0xcf]) },
  { label: 'MP4/QuickTime', exts: ['mp4', 'm4a', 'm4v', 'mov', 'heic', 'heif', 'avif', '3gp'], test: (b) => at(b, 4, ascii('ftyp')) },
  { label: 'MP3', exts: ['mp3'], test: (b) => at(b, 0, ascii('ID3')) },
];
/** Extensions whose content is text: no known signature, and no NUL byte in the first bytes. */
const TEXT_EXTS = new Set(['txt', 'csv', 'tsv', 'md', 'json', 'xml', 'log', 'rtf', 'ics', 'vcf', 'eml', 'yaml', 'yml']);
const SIGNED_EXTS = new Set(SIGNATURES.flatMap((s) => s.exts));

/** The lowercase extension of a file name without the dot ('' when none). */
export function extensionOf(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(dot + 1).toLowerCase() : '';
}

/** Normalises allowed types as given ("PDF", ".pdf") to lowercase extensions; validation_error when malformed. */
export function normaliseTypes(types: string[] | null | undefined): string[] | null {
  if (types === undefined || types === null || types.length === 0) return null;
  const out = new Set<string>();
  for (const t of types) {
    const e = t.trim().replace(/^\./, '').toLowerCase();
    if (!/^[a-z0-9]{1,16}$/.test(e)) throw new AppError('validation_error', `allowedTypes: "${t.slice(0, 40)}" is not a file extension`);
    out.add(e);
  }
  return [...out];
}

/** Refuses a name whose extension is not allowed (before any byte is stored). */
export function checkTypeByName(name: string, allowed: string[] | null): void {
  if (allowed === null) return;
  const ext = extensionOf(name);
  if (!allowed.includes(ext)) {
    throw new AppError('file_type_not_allowed', `this request takes only ${allowed.map((e) => `.${e}`).join(', ')} files`, {}, true);
  }
}

/**
 * Refuses content whose first bytes do not fit its (allowed) extension: a known format must
 * carry one of its own extensions, a signed extension (.pdf, .png…) must have its format's
 * bytes, and a text extension must look like text. Why: the name is the uploader's choice,
 * and an executable renamed to .pdf must not reach the owner as a PDF.
 */
export function checkTypeByContent(name: string, head: Buffer, allowed: string[] | null): void {
  if (allowed === null) return;
  const ext = extensionOf(name);
  const sniffed = SIGNATURES.find((s) => s.test(head));
  const refuse = (why: string) => new AppError('file_type_not_allowed', `the content of this file ${why}; nothing was stored`, {}, true);
  if (sniffed) {
    if (!sniffed.exts.includes(ext)) throw refuse(`is ${sniffed.label}, not .${ext}`);
    return;
  }
  if (SIGNED_EXTS.has(ext)) throw refuse(`is not a .${ext} file`);
  if (TEXT_EXTS.has(ext) && head.includes(0)) throw refuse(`is not text`);
}

// --- The lease on a request's files and bytes ---------------------------------------------

/**
 * One upload's hold on a request's remaining files and bytes, as a row in
 * upload_request_leases once it holds anything. Every reservation is one transaction in the
 * shared database that checks the request (still open, not expired) and its committed
 * counters plus the other live leases; it reserves some bytes ahead (at most RESERVE_AHEAD,
 * at most a quarter of the headroom) so most chunks need no database step.
 */
export class RequestLease {
  readonly id: string;
  private files = 0;
  private used = 0;
  private reserved = 0;
  private timer: NodeJS.Timeout | undefined;
  private done = false;
  /** Released or committed: a late chunk of a part still streaming must not reserve again. */
  private ended = false;
  // One step at a time: parts of one multipart body are encrypted concurrently.
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly svc: RequestsService,
    readonly requestId: string,
    /** A resumable upload's hold is the lease row with the upload's id (see reserveUploadIn). */
    id?: string,
  ) {
    this.id = id ?? newId();
  }

  /** Takes one more file slot; throws too_many_files when the request has none left (not_found when it closed or expired). */
  addFile(): Promise<void> {
    return this.step(async () => {
      await this.reserve(this.files + 1, Math.max(this.used, this.reserved), false);
      this.files += 1;
    });
  }

  /** Adds streamed bytes; throws request_limit_exceeded (closing the connection) when they do not fit. */
  grow(bytes: number): Promise<void> {
    const need = this.used + bytes;
    if (need <= this.reserved) {
      this.used = need;
      return Promise.resolve();
    }
    return this.step(async () => {
      if (need > this.reserved) await this.reserve(this.files, need, true);
      this.used = need;
    });
  }

  private step<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => {});
    return run;
  }

  private async reserve(files: number, need: number, ahead: boolean): Promise<void> {
    const svc = this.svc;
    const now = svc.now();
    if (this.ended) throw new AppError('request_limit_exceeded', 'this upload has ended; nothing more of it is stored', {}, true);
    try {
      await svc.db.transaction(async (trx) => {
        const repo = new UploadRequestsRepo(trx);
        const row = await repo.byId(this.requestId);
        if (!row || row.closedAt !== null || row.expiresAt <= now) throw gone();
        const other = await repo.leased(row.id, now, this.id);
        if (row.filesReceived + other.files + files > row.maxFiles) throw tooManyFiles(row);
        const free = row.maxBytes - row.bytesReceived - other.bytes;
        if (need > free) throw overLimit(row);
        const extra = ahead ? Math.min(RESERVE_AHEAD, Math.floor((free - need) / 4)) : 0;
        const bytes = need + Math.max(0, extra);
        await repo.putLease(this.id, row.id, files, bytes, now + svc.leaseMs);
        this.reserved = bytes;
      });
    } catch (err) {
      // A refused upload ends: its hold goes before the refusal is answered.
      await this.release();
      throw err;
    }
    if (this.ended) {
      // Released while this reservation was being written: take the row away again.
      await new UploadRequestsRepo(svc.db.kysely).deleteLease(this.id).catch(() => {});
      throw new AppError('request_limit_exceeded', 'this upload has ended; nothing more of it is stored', {}, true);
    }
    this.done = false;
    this.timer ??= setInterval(() => void this.renew(), Math.max(1000, Math.floor(svc.leaseMs / 3))).unref();
  }

  private async renew(): Promise<void> {
    try {
      await new UploadRequestsRepo(this.svc.db.kysely).renewLease(this.id, this.svc.now() + this.svc.leaseMs);
    } catch {
      /* the next renewal tries again; the commit re-checks anyway */
    }
  }

  /**
   * Inside the transaction that inserts the files: the request must still be open and
   * unexpired, and its committed files and bytes plus these plus the other live leases must
   * fit; then the counters grow and this lease goes, in the same commit.
   */
  async commitIn(trx: Trx, rows: FileRow[]): Promise<void> {
    const repo = new UploadRequestsRepo(trx);
    const now = this.svc.now();
    const row = await repo.byId(this.requestId);
    if (!row || row.closedAt !== null || row.expiresAt <= now) throw gone();
    const other = await repo.leased(row.id, now, this.id);
    const bytes = rows.reduce((n, r) => n + r.size, 0);
    if (row.filesReceived + other.files + rows.length > row.maxFiles) throw tooManyFiles(row);
    if (row.bytesReceived + other.bytes + bytes > row.maxBytes) throw overLimit(row);
    await repo.addReceived(row.id, rows.length, bytes);
    await repo.deleteLease(this.id);
    // In the same transaction: the notice exists exactly when the files do (names and counts only).
    await this.svc.notifier?.emitIn(trx, {
      kind: 'requestUpload',
      type: 'request.upload',
      userId: row.ownerId,
      data: { requestId: row.id, requestName: row.title, count: rows.length, bytes, at: new Date(now).toISOString() },
    });
  }

  /** Once commitIn's transaction committed: nothing is held any more. */
  committed(): void {
    this.stop();
    this.done = true;
    this.ended = true;
    this.files = 0;
    this.used = 0;
    this.reserved = 0;
  }

  /** Gives back whatever is still held (call in a finally); never throws. */
  async release(): Promise<void> {
    this.stop();
    this.ended = true;
    if (this.done) return;
    this.done = true;
    this.files = 0;
    this.used = 0;
    this.reserved = 0;
    try {
      await new UploadRequestsRepo(this.svc.db.kysely).deleteLease(this.id);
    } catch {
      /* the row lapses at its expiry and the sweep removes it */
    }
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/**
 * The owner's quota is theirs to know: an uploader hears only that the request takes no more
 * (the same code as a full request), never the owner's quota or usage.
 */
function hideQuota(err: unknown): never {
  if (err instanceof AppError && err.code === 'quota_exceeded') {
    throw new AppError('request_limit_exceeded', 'this request cannot take more files now; the upload was stopped and nothing of it was stored', {}, true);
  }
  throw err;
}

function tooManyFiles(r: UploadRequestRow): AppError {
  return new AppError('too_many_files', `this request takes at most ${r.maxFiles} files in all; this one was not stored`, {}, true);
}
function overLimit(r: UploadRequestRow): AppError {
  return new AppError('request_limit_exceeded', `this request takes at most ${r.maxBytes} bytes in all; the upload was stopped and nothing of it was stored`, {}, true);
}

// --- The service ---------------------------------------------------------------------------

export class RequestsService {
  readonly repo: UploadRequestsRepo;
  readonly db: Database;
  readonly leaseMs: number;
  readonly now: () => number;
  readonly notifier: Notifier | undefined;
  private readonly ticketKey: Buffer;

  constructor(private readonly deps: RequestsDeps) {
    this.notifier = deps.notifier;
    this.db = deps.db;
    this.repo = new UploadRequestsRepo(deps.db.kysely);
    this.leaseMs = deps.leaseMs;
    this.now = deps.now ?? Date.now;
    this.ticketKey = deps.keyring.derive(TICKET_LABEL);
  }

  /** The largest maxFileBytes a request may set (MAX_FILE_SIZE). */
  get maxFileSize(): number {
    return this.deps.maxFileSize;
  }

  /** Creates a request; the token (256 bits) is returned only here, the database keeps its keyed hash. */
  async create(ownerId: string, input: RequestInput): Promise<{ request: UploadRequestRow; token: string }> {
    const ttl = input.expiresInSeconds ?? Math.min(7 * 86400, this.deps.maxTtlSeconds);
    if (ttl > this.deps.maxTtlSeconds) throw new AppError('validation_error', `expiresInSeconds: must be at most ${this.deps.maxTtlSeconds}`);
    const fileRetentionSeconds = requestRetention(input.fileRetentionSeconds, this.deps.maxRetentionSeconds) ?? null;
    const maxFileBytes = input.maxFileBytes ?? this.deps.maxFileSize;
    if (maxFileBytes > this.deps.maxFileSize) throw new AppError('validation_error', `maxFileBytes: must be at most ${this.deps.maxFileSize} (MAX_FILE_SIZE)`);
    let passwordHash: string | null = null;
    if (input.password !== undefined && input.password !== '') {
      checkPassword(input.password);
      passwordHash = await this.deps.hasher.hash(input.password);
    }
    const token = randomBytes(32).toString('base64url');
    const now = this.now();
    const request: UploadRequestRow = {
      id: newId(),
      ownerId,
      title: input.title,
      message: input.message ?? '',
      passwordHash,
      maxFiles: input.maxFiles ?? 10,
      maxBytes: input.maxBytes ?? Math.min(this.deps.maxFileSize * 10, 10 * 1024 ** 3),
      maxFileBytes,
      allowedTypes: normaliseTypes(input.allowedTypes),
      requireName: input.requireName ?? false,
      requireEmail: input.requireEmail ?? false,
      createdAt: now,
      expiresAt: now + ttl * 1000,
      closedAt: null,
      filesReceived: 0,
      bytesReceived: 0,
      fileRetentionSeconds,
    };
    await this.db.transaction(async (trx) => {
      // The password hash above is slow: the owner may have been disabled meanwhile.
      const owner = await trx.selectFrom('users').select('disabled').where('id', '=', ownerId).executeTakeFirst();
      if (!owner || owner.disabled) throw new AppError('unauthorized', 'this account was disabled; sign in again');
      await new UploadRequestsRepo(trx).insert(request, this.deps.integrity.lookup(token));
    });
    return { request, token };
  }

  /** A stable key for a request token in rate limits: its keyed hash, never the token itself. */
  tokenKey(token: string): string {
    return this.deps.integrity.lookup(token).toString('hex');
  }

  /**
   * The entry point (see the top of this file): a live request's upload target, or null for
   * an unknown, closed, expired or full request and for one whose owner is disabled, all
   * alike, so a caller learns nothing about which requests exist.
   */
  async resolveTarget(token: string): Promise<RequestUploadTarget | null> {
    if (!/^[A-Za-z0-9_-]{43}$/.test(token)) return null;
    const request = await this.repo.byTokenHash(this.deps.integrity.lookup(token));
    if (!request || requestStatus(request, this.now()) !== 'active') return null;
    const owner = await this.db.kysely.selectFrom('users').select(['username', 'disabled']).where('id', '=', request.ownerId).executeTakeFirst();
    if (!owner || owner.disabled) return null;
    return {
      request,
      requestId: request.id,
      ownerId: request.ownerId,
      ownerName: owner.username,
      limits: {
        maxFiles: request.maxFiles,
        maxBytes: request.maxBytes,
        maxFileBytes: Math.min(request.maxFileBytes, request.maxBytes, this.deps.maxFileSize),
        allowedTypes: request.allowedTypes,
      },
      openLease: () => new RequestLease(this, request.id),
    };
  }

  /** Checks a request's password (constant work whether or not it matches); true when it has none. */
  async checkPassword(request: UploadRequestRow, password: string): Promise<boolean> {
    if (!request.passwordHash) return true;
    return this.deps.hasher.verify(request.passwordHash, password);
  }

  /** A signed ticket that stands for the password on this request's page for a while (argon2 once, not per file). */
  issueTicket(request: UploadRequestRow): string {
    const exp = Math.floor((this.now() + UPLOAD_TICKET_TTL_MS) / 1000);
    return `${exp}.${this.ticketMac(request.id, exp)}`;
  }

  /** True when the ticket is unexpired and was issued for this very request. */
  checkTicket(request: UploadRequestRow, ticket: string): boolean {
    const m = /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(ticket);
    if (!m || Number(m[1]) * 1000 <= this.now()) return false;
    const expected = Buffer.from(this.ticketMac(request.id, Number(m[1])));
    const given = Buffer.from(m[2]!);
    return expected.length === given.length && timingSafeEqual(expected, given);
  }

  private ticketMac(requestId: string, exp: number): string {
    return createHmac('sha256', this.ticketKey).update(`upload ticket|${requestId}|${exp}`).digest('base64url');
  }

  /**
   * Wraps one file's plaintext stream: the per-file limit, the request's lease (files and
   * bytes in flight) and, when the request limits types, the sniffed first bytes, all
   * checked before the bytes go on to the encryption. Iterates by hand, so a refusal does not
   * destroy the socket before the 413/415 is answered.
   */
  guard(input: AsyncIterable<Buffer>, o: { name: string; target: RequestUploadTarget; lease: RequestLease; quota?: QuotaLease }): AsyncIterable<Buffer> {
    const { maxFileBytes, allowedTypes } = o.target.limits;
    return (async function* () {
      const it = input[Symbol.asyncIterator]();
      let size = 0;
      let head: Buffer[] | null = allowedTypes === null ? null : [];
      let headLength = 0;
      for (;;) {
        const next = await it.next();
        if (next.done) break;
        const data = next.value;
        size += data.length;
        if (size > maxFileBytes) throw new AppError('file_too_large', `this request takes files of at most ${maxFileBytes} bytes`, {}, true);
        await o.lease.grow(data.length);
        await o.quota?.grow(data.length).catch(hideQuota);
        if (head === null) {
          yield data;
          continue;
        }
        head.push(data);
        headLength += data.length;
        if (headLength >= SNIFF_BYTES) {
          checkTypeByContent(o.name, Buffer.concat(head), allowedTypes);
          yield* head;
          head = null;
        }
      }
      if (head !== null) {
        checkTypeByContent(o.name, Buffer.concat(head), allowedTypes);
        yield* head;
      }
    })();
  }

  /**
   * Commits staged files of an upload to the request: file rows owned by the request's owner
   * (with the request id and the uploader's name/email), the owner's quota lease and the
   * request's counters and lease, in one transaction. Not found when the request closed or
   * expired meanwhile; the blobs are removed whenever the commit fails.
   */
  async commit(target: RequestUploadTarget, staged: StagedFile[], origin: Omit<FileOrigin, 'requestId'>, quota: QuotaLease, lease: RequestLease): Promise<FileRow[]> {
    const rows = await this.deps.vault
      .commit(target.ownerId, staged, quota, {
        origin: { ...origin, requestId: target.requestId },
        // What arrives through a request gets the request's retention (re-read at resolve time,
        // so a PATCH applies to later arrivals), else the retention default.
        expiresAt: this.deps.fileExpiresAt?.(this.now(), target.request.fileRetentionSeconds ?? undefined) ?? null,
        within: (trx, inserted) => lease.commitIn(trx, inserted),
      })
      .catch(hideQuota);
    lease.committed();
    return rows;
  }

  /** The owner's request, or not_found (another owner's is indistinguishable from none). */
  async ownedBy(ownerId: string, id: string): Promise<UploadRequestRow> {
    const r = /^[0-9a-f]{32}$/.test(id) ? await this.repo.byId(id) : undefined;
    if (!r || r.ownerId !== ownerId) throw new AppError('not_found', 'no such upload request');
    return r;
  }

  /** Closes early, moves the expiry (from now) and/or sets the arriving files' retention; returns the updated row. */
  async update(ownerId: string, id: string, change: { close?: boolean; expiresInSeconds?: number; fileRetentionSeconds?: number | string | null }): Promise<{ request: UploadRequestRow; closed: boolean }> {
    const before = await this.ownedBy(ownerId, id);
    const fileRetentionSeconds = requestRetention(change.fileRetentionSeconds, this.deps.maxRetentionSeconds);
    if (change.expiresInSeconds !== undefined && change.expiresInSeconds > this.deps.maxTtlSeconds) {
      throw new AppError('validation_error', `expiresInSeconds: must be at most ${this.deps.maxTtlSeconds}`);
    }
    const closing = change.close === true && before.closedAt === null;
    const ok = await this.repo.update(before.id, ownerId, {
      expiresAt: change.expiresInSeconds === undefined ? undefined : this.now() + change.expiresInSeconds * 1000,
      closedAt: closing ? this.now() : undefined,
      fileRetentionSeconds,
    });
    if (!ok) throw new AppError('not_found', 'no such upload request');
    return { request: await this.ownedBy(ownerId, id), closed: closing };
  }

  /** Deletes the owner's request; the files that came through it stay theirs. */
  async delete(ownerId: string, id: string): Promise<UploadRequestRow> {
    const r = await this.ownedBy(ownerId, id);
    // Deleting the request unlinks its files, which would end a hold on it: refused while held
    // (checked in the deleting transaction, so a hold placed meanwhile is seen).
    const deleted = await this.deps.db.transaction(async (trx) => {
      if (await new HoldsRepo(trx).get('request', r.id)) throw new AppError('legal_hold', 'this upload request is under a legal hold and cannot be deleted; an administrator must release the hold first');
      return new UploadRequestsRepo(trx).delete(r.id, ownerId);
    });
    if (!deleted) throw new AppError('not_found', 'no such upload request');
    return r;
  }

  /**
   * A resumable upload's durable hold on the request (inside the transaction that creates the
   * upload row): one file slot and its whole declared length, as the lease row whose id is the
   * upload id, living as long as the upload does. Why durable: the upload's PATCHes come hours
   * apart, and the request must not hand the same room to another uploader meanwhile.
   */
  async reserveUploadIn(trx: Trx, requestId: string, uploadId: string, length: number, expiresAt: number): Promise<void> {
    const repo = new UploadRequestsRepo(trx);
    const now = this.now();
    const row = await repo.byId(requestId);
    if (!row || row.closedAt !== null || row.expiresAt <= now) throw gone();
    const other = await repo.leased(row.id, now, uploadId);
    if (row.filesReceived + other.files + 1 > row.maxFiles) throw tooManyFiles(row);
    if (length > row.maxBytes - row.bytesReceived - other.bytes) throw overLimit(row);
    await repo.putLease(uploadId, row.id, 1, length, expiresAt);
  }

  /** Completes a resumable upload into the request (inside the file's transaction): re-checks, counts, notifies, drops the hold. */
  commitUploadIn(trx: Trx, requestId: string, uploadId: string, file: FileRow): Promise<void> {
    return new RequestLease(this, requestId, uploadId).commitIn(trx, [file]);
  }

  /** Moves a resumable upload's hold to the upload's own expiry (it moves on with each PATCH). */
  async holdUploadUntil(uploadId: string, expiresAt: number): Promise<void> {
    await this.repo.renewLease(uploadId, expiresAt);
  }

  /** Gives a resumable upload's hold back (termination, refusal). */
  async dropUploadHold(uploadId: string): Promise<void> {
    await this.repo.deleteLease(uploadId);
  }

  /** The request a token names whatever its state (to drop uploads of a closed request), or null. */
  async requestOfToken(token: string): Promise<{ id: string; ownerId: string } | null> {
    if (!/^[A-Za-z0-9_-]{43}$/.test(token)) return null;
    const r = await this.repo.byTokenHash(this.deps.integrity.lookup(token));
    return r ? { id: r.id, ownerId: r.ownerId } : null;
  }

  /** Removes lapsed leases (housekeeping: they no longer count anyway). */
  sweep(): Promise<number> {
    return this.repo.sweepLeases(this.now());
  }
}
