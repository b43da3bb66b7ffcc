/**
 * Share links: unguessable tokens (stored as a keyed hash, rows MAC'd: services/integrity.ts), expiry, download budgets that allow
 * resuming, optional passwords (argon2id), and signed short-lived download tickets.
 *
 * Download budget: a response that delivers the file's last byte needs a completion slot
 * (completed + in flight < N), taken atomically before it starts and counted only if it
 * completes. Every response also reserves its bytes against a ceiling of (N + 1) × size, and
 * gives back the unsent part when it ends. Reservations expire, so a crash cannot burn a budget.
 *
 * A response reports its progress with every heartbeat. One that has moved less than the
 * minimum rate for the grace period gives way when another request would otherwise be
 * refused: it loses its slot (in the same transaction that grants the new one) and stops at
 * its next heartbeat, so a stalled reader cannot keep a one-download link from its recipient.
 *
 * Tickets carry a random id. When a ticket's download is counted the id is recorded on the
 * share (in the settling transaction), and the same ticket may fetch the file again until it
 * expires without spending the budget again, even once the link is used up for everyone else.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Database, Executor, Trx } from '../db/database.js';
import type { Notifier } from './notify/notifier.js';
import type { FileRow } from '../db/files.js';
import { SharesRepo, type ShareRow } from '../db/shares.js';
import { ShareFilesRepo } from '../db/share-files.js';
import { HoldsRepo } from '../db/holds.js';
import type { Keyring } from '../crypto/keyring.js';
import { AppError } from '../errors.js';
import { newId } from './ids.js';
import type { IntegrityKeys } from './integrity.js';
import type { IntegrityFailure } from './accounts.js';
import type { PasswordHasher } from './passwords.js';
import { checkPasswordLength } from './accounts.js';

const TICKET_LABEL = 'sfs/v1 share download ticket';
export const TICKET_TTL_MS = 60 * 60 * 1000;
/** A reservation lives this long unless the response refreshes it. */
export const RESERVATION_TTL_MS = 5 * 60 * 1000;
/** Longest gap between two heartbeats of a response. */
const MAX_HEARTBEAT_MS = 60_000;

export interface SharesDeps {
  db: Database;
  /** Keys for link lookups and link row MACs (services/integrity.ts openIntegrity). */
  integrity: IntegrityKeys;
  /** Told about every link refused for a failed MAC. */
  onIntegrityFailure?: (f: IntegrityFailure) => unknown;
  hasher: PasswordHasher;
  keyring: Keyring;
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  /**
   * A response slower than `minBytesPerSecond` for `graceMs` gives way to another request
   * for the same link (0 bytes per second: never).
   */
  slowReader?: { minBytesPerSecond: number; graceMs: number };
  /** Writes the owner's notifications into the outbox, in the transactions that count downloads. */
  notifier?: Notifier;
  now?: () => number;
}

export interface ShareInput {
  expiresInSeconds?: number;
  maxDownloads?: number | null;
  password?: string;
  note?: string;
  /** Purge the file once the last allowed download completed (needs maxDownloads). */
  deleteFileAfterLastDownload?: boolean;
}

/** A download ticket whose signature and expiry have been checked. */
export interface Ticket {
  /** Random id: what makes two downloads "the same download". */
  id: string;
  /** Expiry, in ms. */
  expiresAt: number;
}

/** What a live link resolves to. */
export interface ResolvedShare {
  share: ShareRow;
  file: FileRow;
  /** The request's valid ticket for this share, if it carried one. */
  ticket: Ticket | null;
  /** True when that ticket's download was counted already: fetching again is free. */
  repeat: boolean;
}

/** A response's hold on a share's budget; settle it exactly once. */
export interface Reservation {
  id: string;
  shareId: string;
  bytes: number;
  completionSlot: boolean;
  ticket: Ticket | null;
  /** A repeat of a counted ticket download: nothing is held and nothing is counted. */
  repeat: boolean;
  /** Progress at the previous heartbeat, for the rate since then. */
  lastBytes: number;
  lastAt: number;
}

export class SharesService {
  readonly repo: SharesRepo;
  private readonly now: () => number;
  private readonly ticketKey: Buffer;

  constructor(private readonly deps: SharesDeps) {
    this.repo = new SharesRepo(deps.db.kysely, deps.integrity);
    this.now = deps.now ?? Date.now;
    this.ticketKey = deps.keyring.derive(TICKET_LABEL);
  }

  /** Creates a link for the owner's file; the token is returned only here. */
  create(
    ownerId: string,
    file: FileRow,
    input: ShareInput,
    /** Runs inside the insert's transaction with the new link and its token (sending the link by email). */
    alsoIn?: (trx: Trx, share: ShareRow, token: string) => Promise<void>,
  ): Promise<{ share: ShareRow; token: string }> {
    return this.createLink(ownerId, [file], input, false, alsoIn);
  }

  /**
   * Creates one link to several of the owner's files (a bundle), in the given order; the
   * token is returned only here. The files are recorded in share_files, each row sealed.
   */
  createBundle(ownerId: string, files: FileRow[], input: ShareInput): Promise<{ share: ShareRow; token: string }> {
    if (files.length === 0) throw new AppError('validation_error', 'fileIds: choose at least one file');
    return this.createLink(ownerId, files, input, true);
  }

  private async createLink(
    ownerId: string,
    files: FileRow[],
    input: ShareInput,
    bundle: boolean,
    alsoIn?: (trx: Trx, share: ShareRow, token: string) => Promise<void>,
  ): Promise<{ share: ShareRow; token: string }> {
    const file = files[0]!;
    const ttl = input.expiresInSeconds ?? this.deps.defaultTtlSeconds;
    if (ttl > this.deps.maxTtlSeconds) {
      throw new AppError('validation_error', `expiresInSeconds: must be at most ${this.deps.maxTtlSeconds}`);
    }
    if (input.deleteFileAfterLastDownload && (input.maxDownloads === undefined || input.maxDownloads === null)) {
      throw new AppError('validation_error', 'deleteFileAfterLastDownload: needs maxDownloads (the last allowed download is what deletes the file)');
    }
    let passwordHash: string | null = null;
    if (input.password !== undefined && input.password !== '') {
      checkPasswordLength(input.password);
      passwordHash = await this.deps.hasher.hash(input.password);
    }
    const token = randomBytes(32).toString('base64url');
    const now = this.now();
    const share: ShareRow = {
      id: newId(),
      fileId: file.id,
      ownerId,
      passwordHash,
      note: input.note ?? null,
      createdAt: now,
      expiresAt: now + ttl * 1000,
      maxDownloads: input.maxDownloads ?? null,
      downloads: 0,
      bytesServed: 0,
      revokedAt: null,
      expiredAt: null,
      bundle,
      deleteFileAfter: input.deleteFileAfterLastDownload === true,
    };
    await this.deps.db.transaction(async (trx) => {
      // The password hash above is slow: an admin may have disabled the owner (revoking their
      // links for good) meanwhile. Check in the insert's transaction, so no link outlives that.
      const owner = await trx.selectFrom('users').select('disabled').where('id', '=', ownerId).executeTakeFirst();
      if (!owner || owner.disabled) throw new AppError('unauthorized', 'this account was disabled; sign in again');
      await new SharesRepo(trx, this.deps.integrity).insert({ ...share, tokenHash: this.deps.integrity.lookup(token) });
      if (bundle) {
        // The files must still be the owner's (one could have been deleted meanwhile).
        const found = await trx.selectFrom('files').select('id').where('owner_id', '=', ownerId).where('id', 'in', files.map((f) => f.id)).execute();
        if (found.length !== files.length) throw new AppError('not_found', 'no such file');
        await new ShareFilesRepo(trx, this.deps.integrity).insert(share.id, files.map((f) => f.id));
      }
      await alsoIn?.(trx, share, token);
    });
    return { share, token };
  }

  /** Byte ceiling of a share: (N + 1) × size, or null when unlimited (or the file is empty). */
  static ceiling(share: ShareRow, size: number): number | null {
    return share.maxDownloads === null || size === 0 ? null : (share.maxDownloads + 1) * size;
  }

  /** Why a share no longer works, or null if it does (checked on every request, not only by the sweeper). */
  static unavailableReason(share: ShareRow, size: number, now: number): string | null {
    if (share.revokedAt !== null) return 'revoked';
    if (share.expiresAt <= now) return 'expired';
    if (share.maxDownloads !== null && share.downloads >= share.maxDownloads) return 'exhausted';
    const ceiling = SharesService.ceiling(share, size);
    if (ceiling !== null && share.bytesServed >= ceiling) return 'exhausted';
    return null;
  }

  /** A stable in-memory key for a link token (rate limits): its keyed hash, so the token itself is never a map key. */
  tokenKey(token: string): string {
    return this.deps.integrity.lookup(token).toString('hex');
  }

  /**
   * Resolves a link token to a live share and its file, or null (unknown, revoked, expired,
   * exhausted, or a row that fails its MAC). A used-up link still resolves for a ticket whose
   * own download was counted.
   */
  async resolve(token: string, files: { byId(id: string): Promise<FileRow | undefined> }, ticketText?: string): Promise<ResolvedShare | null> {
    const found = await this.lookup(token, ticketText);
    // A bundle is served by services/bundles.ts (its page, its files, its zip), never as one file.
    if (!found || found.share.bundle) return null;
    const { share, ticket, repeat } = found;
    const file = await files.byId(share.fileId);
    if (!file) return null;
    const now = this.now();
    const reason = SharesService.unavailableReason(share, file.size, now);
    if (reason && !(reason === 'exhausted' && repeat)) return null;
    if (await this.expired(file, now)) return null;
    return { share, file, ticket, repeat };
  }

  /**
   * True when the file is past its expiry and no legal hold keeps it: gone for recipients at
   * once, not only when the purge job gets to it (single links and bundles alike).
   */
  async expired(file: FileRow, now = this.now()): Promise<boolean> {
    return file.expiresAt != null && file.expiresAt <= now && (await new HoldsRepo(this.deps.db.kysely).holdsOnFile(file)).length === 0;
  }

  /**
   * The intact link row of a token (its owner enabled) with the request's ticket, before any
   * availability check; null for a malformed or unknown token or a row that fails its MAC.
   */
  async lookup(token: string, ticketText?: string): Promise<{ share: ShareRow; ticket: Ticket | null; repeat: boolean } | null> {
    if (!/^[A-Za-z0-9_-]{43}$/.test(token)) return null;
    const found = await this.repo.byTokenHash(this.deps.integrity.lookup(token));
    if (found && !found.intact) await this.deps.onIntegrityFailure?.({ table: 'shares', id: found.share.id, userId: found.share.ownerId });
    const share = found?.intact ? found.share : undefined;
    if (!share) return null;
    const ticket = ticketText === undefined ? null : this.checkTicket(share, ticketText);
    const repeat = ticket !== null && (await this.repo.ticketCounted(share.id, ticket.id, this.now()));
    return { share, ticket, repeat };
  }

  /** Checks a share password (constant work whether or not it matches). */
  async checkPassword(share: ShareRow, password: string): Promise<boolean> {
    if (!share.passwordHash) return true;
    return this.deps.hasher.verify(share.passwordHash, password);
  }

  /**
   * A signed ticket for one download of this share, valid for about an hour: the browser
   * downloads (and resumes) with it without the password, and repeats of it count once.
   */
  issueTicket(share: ShareRow): string {
    const exp = Math.floor((this.now() + TICKET_TTL_MS) / 1000);
    const id = randomBytes(16).toString('base64url');
    return `${exp}.${id}.${this.ticketMac(share.id, exp, id)}`;
  }

  /** The ticket, if it is unexpired and was issued for this share; otherwise null. */
  checkTicket(share: ShareRow, ticket: string): Ticket | null {
    const m = /^(\d{1,12})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/.exec(ticket);
    if (!m) return null;
    const exp = Number(m[1]);
    if (exp * 1000 <= this.now()) return null;
    const expected = Buffer.from(this.ticketMac(share.id, exp, m[2]!));
    const given = Buffer.from(m[3]!);
    if (!(expected.length === given.length && timingSafeEqual(expected, given))) return null;
    return { id: m[2]!, expiresAt: exp * 1000 };
  }

  private ticketMac(shareId: string, exp: number, id: string): string {
    return createHmac('sha256', this.ticketKey).update(`ticket|${shareId}|${exp}|${id}`).digest('base64url');
  }

  /** How often a response should report its progress (about twice per grace period, at most a minute apart). */
  get heartbeatMs(): number {
    const grace = this.deps.slowReader?.graceMs ?? MAX_HEARTBEAT_MS;
    return Math.max(100, Math.min(MAX_HEARTBEAT_MS, Math.floor(grace / 2)));
  }

  /**
   * Reserves `bytes` of the share's budget for one response, and a completion slot when the
   * response will deliver the file's last byte (one slot per ticket). When the budget cannot
   * cover it, reservations that have been slow for the grace period give way first, in the
   * same transaction. Null when it still cannot. A repeat of a counted ticket download holds
   * nothing.
   */
  reserve(resolved: Pick<ResolvedShare, 'share' | 'ticket'> & { file?: FileRow }, bytes: number, deliversLastByte: boolean, size = resolved.file?.size ?? 0): Promise<Reservation | null> {
    const { share, ticket } = resolved;
    // `size` is what the byte ceiling multiplies: the file, or a bundle's zip (services/bundles.ts).
    const file = { size };
    const now = this.now();
    const base = { id: newId(), shareId: share.id, bytes, completionSlot: deliversLastByte, ticket, lastBytes: 0, lastAt: now };
    return this.deps.db.transaction(async (trx): Promise<Reservation | null> => {
        const repo = new SharesRepo(trx, this.deps.integrity);
        const current = await repo.byId(share.id);
        if (!current) return null;
        const reason = SharesService.unavailableReason(current, file.size, now);
        const repeat = ticket !== null && (await repo.ticketCounted(share.id, ticket.id, now));
        if (repeat && (reason === null || reason === 'exhausted')) return { ...base, completionSlot: false, repeat: true };
        if (reason) return null;
        const fits = async () => {
          const held = await repo.inFlight(share.id, now, ticket?.id ?? null);
          const needsSlot = deliversLastByte && current.maxDownloads !== null && !held.ticketHolds;
          if (needsSlot && current.downloads + held.slots >= current.maxDownloads!) return false;
          const ceiling = SharesService.ceiling(current, file.size);
          return ceiling === null || current.bytesServed + held.bytes + bytes <= ceiling;
        };
        const slow = this.deps.slowReader;
        if (!(await fits()) && !(slow && slow.minBytesPerSecond > 0 && (await repo.yieldSlow(share.id, now - slow.graceMs, now)) > 0 && (await fits()))) return null;
        await repo.insertReservation({ ...base, expiresAt: now + RESERVATION_TTL_MS, ticketId: ticket?.id ?? null });
        return { ...base, repeat: false };
      });
  }

  /**
   * A long response's heartbeat: keeps its reservation alive and reports progress. False
   * when the reservation has given way (or expired): the response must stop.
   */
  async refresh(r: Reservation, bytesSent: number): Promise<boolean> {
    if (r.repeat) return true;
    const now = this.now();
    const minRate = this.deps.slowReader?.minBytesPerSecond ?? 0;
    const slow = minRate > 0 && (bytesSent - r.lastBytes) * 1000 < minRate * (now - r.lastAt);
    r.lastBytes = bytesSent;
    r.lastAt = now;
    return this.repo.heartbeat(r.id, now + RESERVATION_TTL_MS, bytesSent, slow, now);
  }

  /**
   * Releases a reservation: records the bytes really sent, and one download if the response
   * completed while it still held its slot. Returns whether a download was counted.
   */
  async settle(r: Reservation, bytesSent: number, completed: boolean, client: { ip: string | null; base?: string | null } = { ip: null }): Promise<boolean> {
    if (r.repeat) return false;
    const notifier = this.deps.notifier;
    // The owner's "downloaded" and "used up" events commit with the count itself.
    const onCounted = notifier
      ? async (trx: Executor, share: ShareRow) => {
          const file = await trx.selectFrom('files').select(['id', 'name']).where('id', '=', share.fileId).executeTakeFirst();
          const at = new Date(this.now()).toISOString();
          const data = { shareId: share.id, fileId: share.fileId, fileName: file?.name ?? '', at, clientAddress: client.ip, downloads: share.downloads, maxDownloads: share.maxDownloads };
          await notifier.emitIn(trx, { kind: 'shareDownloaded', type: 'share.downloaded', userId: share.ownerId, data, base: client.base });
          if (share.maxDownloads !== null && share.downloads >= share.maxDownloads) {
            await notifier.emitIn(trx, { kind: 'shareExhausted', type: 'share.exhausted', userId: share.ownerId, data, base: client.base });
          }
        }
      : undefined;
    return this.repo.settle(r.id, r.shareId, bytesSent, completed, this.now(), r.ticket, onCounted);
  }

  /** The owner's share, or not_found. */
  async ownedBy(ownerId: string, shareId: string): Promise<ShareRow> {
    const s = /^[0-9a-f]{32}$/.test(shareId) ? await this.repo.byId(shareId) : undefined;
    if (!s || s.ownerId !== ownerId) throw new AppError('not_found', 'no such share');
    return s;
  }

  /** Marks expired shares and clears stale reservations (the periodic sweep). */
  sweep(): Promise<number> {
    return this.repo.sweep(this.now());
  }
}
