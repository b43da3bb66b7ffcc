/**
 * Share links: unguessable tokens (stored as a keyed hash, rows MAC'd: services/integrity.ts), expiry, download budgets that allow
 * resuming, optional passwords (argon2id), and signed short-lived download tickets.
 *
 * Download budget: a response that delivers the file's last byte needs a completion slot
 * (completed + in flight < N), taken atomically before it starts and counted only if it
 * completes. Every response also reserves its bytes against a ceiling of (N + 1) × size, and
 * gives back the unsent part when it ends. Reservations expire, so a crash cannot burn a budget.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db } from '../db/database.js';
import type { FileRow } from '../db/files.js';
import { SharesRepo, type ShareRow } from '../db/shares.js';
import type { Keyring } from '../crypto/keyring.js';
import { AppError } from '../errors.js';
import { newId } from './ids.js';
import type { IntegrityKeys } from './integrity.js';
import type { IntegrityFailure } from './accounts.js';
import type { PasswordHasher } from './passwords.js';
import { checkPassword } from './accounts.js';

const TICKET_LABEL = 'sfs/v1 share download ticket';
export const TICKET_TTL_MS = 60 * 60 * 1000;
/** A reservation lives this long unless the response refreshes it. */
export const RESERVATION_TTL_MS = 5 * 60 * 1000;

export interface SharesDeps {
  db: Db;
  /** Keys for link lookups and link row MACs (services/integrity.ts openIntegrity). */
  integrity: IntegrityKeys;
  /** Told about every link refused for a failed MAC. */
  onIntegrityFailure?: (f: IntegrityFailure) => void;
  hasher: PasswordHasher;
  keyring: Keyring;
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  now?: () => number;
}

export interface ShareInput {
  expiresInSeconds?: number;
  maxDownloads?: number | null;
  password?: string;
  note?: string;
}

/** What a live link resolves to. */
export interface ResolvedShare {
  share: ShareRow;
  file: FileRow;
}

/** A response's hold on a share's budget; settle it exactly once. */
export interface Reservation {
  id: string;
  shareId: string;
  bytes: number;
  completionSlot: boolean;
}

export class SharesService {
  readonly repo: SharesRepo;
  private readonly now: () => number;
  private readonly ticketKey: Buffer;

  constructor(private readonly deps: SharesDeps) {
    this.repo = new SharesRepo(deps.db, deps.integrity);
    this.now = deps.now ?? Date.now;
    this.ticketKey = deps.keyring.derive(TICKET_LABEL);
  }

  /** Creates a link for the owner's file; the token is returned only here. */
  async create(ownerId: string, file: FileRow, input: ShareInput): Promise<{ share: ShareRow; token: string }> {
    const ttl = input.expiresInSeconds ?? this.deps.defaultTtlSeconds;
    if (ttl > this.deps.maxTtlSeconds) {
      throw new AppError('validation_error', `expiresInSeconds: must be at most ${this.deps.maxTtlSeconds}`);
    }
    let passwordHash: string | null = null;
    if (input.password !== undefined && input.password !== '') {
      checkPassword(input.password);
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
    };
    this.repo.insert({ ...share, tokenHash: this.deps.integrity.lookup(token) });
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

  /** Resolves a link token to a live share and its file, or null (unknown, revoked, expired, exhausted, or a row that fails its MAC). */
  resolve(token: string, files: { byId(id: string): FileRow | undefined }): ResolvedShare | null {
    if (!/^[A-Za-z0-9_-]{43}$/.test(token)) return null;
    const found = this.repo.byTokenHash(this.deps.integrity.lookup(token));
    if (found && !found.intact) this.deps.onIntegrityFailure?.({ table: 'shares', id: found.share.id, userId: found.share.ownerId });
    const share = found?.intact ? found.share : undefined;
    const file = share && files.byId(share.fileId);
    if (!share || !file || SharesService.unavailableReason(share, file.size, this.now())) return null;
    return { share, file };
  }

  /** Checks a share password (constant work whether or not it matches). */
  async checkPassword(share: ShareRow, password: string): Promise<boolean> {
    if (!share.passwordHash) return true;
    return this.deps.hasher.verify(share.passwordHash, password);
  }

  /** A signed ticket that lets the browser download this share for about an hour without the password. */
  issueTicket(share: ShareRow): string {
    const exp = Math.floor((this.now() + TICKET_TTL_MS) / 1000);
    return `${exp}.${this.ticketMac(share.id, exp)}`;
  }

  /** True for an unexpired ticket issued for this share. */
  checkTicket(share: ShareRow, ticket: string): boolean {
    const m = /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(ticket);
    if (!m) return false;
    const exp = Number(m[1]);
    if (exp * 1000 <= this.now()) return false;
    const expected = Buffer.from(this.ticketMac(share.id, exp));
    const given = Buffer.from(m[2]!);
    return expected.length === given.length && timingSafeEqual(expected, given);
  }

  private ticketMac(shareId: string, exp: number): string {
    return createHmac('sha256', this.ticketKey).update(`ticket|${shareId}|${exp}`).digest('base64url');
  }

  /**
   * Reserves `bytes` of the share's budget for one response, and a completion slot when the
   * response will deliver the file's last byte. Null when the budget cannot cover it.
   */
  reserve(share: ShareRow, file: FileRow, bytes: number, deliversLastByte: boolean): Reservation | null {
    const now = this.now();
    return this.deps.db
      .transaction((): Reservation | null => {
        const current = this.repo.byId(share.id);
        if (!current || SharesService.unavailableReason(current, file.size, now)) return null;
        const held = this.repo.inFlight(share.id, now);
        if (deliversLastByte && current.maxDownloads !== null && current.downloads + held.slots >= current.maxDownloads) return null;
        const ceiling = SharesService.ceiling(current, file.size);
        if (ceiling !== null && current.bytesServed + held.bytes + bytes > ceiling) return null;
        const r: Reservation = { id: newId(), shareId: share.id, bytes, completionSlot: deliversLastByte };
        this.repo.insertReservation({ ...r, expiresAt: now + RESERVATION_TTL_MS });
        return r;
      })
      .immediate();
  }

  /** Keeps a long response's reservation alive. */
  refresh(r: Reservation): void {
    this.repo.extendReservation(r.id, this.now() + RESERVATION_TTL_MS);
  }

  /** Releases a reservation: records the bytes really sent, and one download if the response completed. */
  settle(r: Reservation, bytesSent: number, completed: boolean): void {
    this.repo.settle(r.id, r.shareId, bytesSent, r.completionSlot && completed);
  }

  /** The owner's share, or not_found. */
  ownedBy(ownerId: string, shareId: string): ShareRow {
    const s = /^[0-9a-f]{32}$/.test(shareId) ? this.repo.byId(shareId) : undefined;
    if (!s || s.ownerId !== ownerId) throw new AppError('not_found', 'no such share');
    return s;
  }

  /** Marks expired shares and clears stale reservations (the periodic sweep). */
  sweep(): number {
    return this.repo.sweep(this.now());
  }
}
