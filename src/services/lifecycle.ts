/**
 * File lifecycle: retention (a file's expiry, its default and ceiling), legal holds, and the
 * purge job that crypto-shreds expired files.
 *
 * A purge is the same crypto-shred as a delete, made crash-proof: ONE transaction zeroes the
 * wrapped DEK and deletes the row (only while the file is still due and under no hold: one
 * conditional statement decides, so racing instances shred each file exactly once), counts
 * the links that die with it, queues the ciphertext for removal (purge_queue) and appends the
 * file.purge audit row. Only then is the ciphertext removed and its queue row deleted. A pass
 * that dies in between leaves a queue row, and the next pass (on any instance) finishes it.
 * The job holds a lease row (ops/op-lock.ts tryLease) so one instance at a time runs it.
 */
import { Cron } from 'croner';
import type { Logger } from 'pino';
import type { Database } from '../db/database.js';
import { FilesRepo, purgeDue, shredIn, type FileRow } from '../db/files.js';
import { HoldsRepo, type HoldRow, type HoldScope } from '../db/holds.js';
import { PurgeQueueRepo } from '../db/purge-queue.js';
import { sql } from '../db/kysely.js';
import { AppError } from '../errors.js';
import { tryLease } from '../ops/op-lock.js';
import { blobIdOf, type BlobStore } from '../storage/blob-store.js';
import type { AuditLog } from './audit.js';

/** The purge job's lease (a row in op_locks, apart from the single-writer operation lock). */
export const PURGE_LEASE = 'purge';
const PURGE_LEASE_MS = 5 * 60_000;
const BATCH = 100;

export interface RetentionSettings {
  /** FILE_DEFAULT_RETENTION in seconds; null: none. */
  defaultSeconds: number | null;
  /** FILE_MAX_RETENTION in seconds, counted from the upload; null: no ceiling. */
  maxSeconds: number | null;
}

/** Turns upload and change requests into expiry instants, within the configured ceiling. */
export class RetentionPolicy {
  constructor(private readonly s: RetentionSettings) {}

  /** The ceiling in seconds, or null. */
  get maxSeconds(): number | null {
    return this.s.maxSeconds;
  }

  /** The lifetime a new file gets when its upload names none (the default, else the ceiling, else none). */
  get defaultSeconds(): number | null {
    return this.s.defaultSeconds ?? this.s.maxSeconds;
  }

  /**
   * The expiry (ms) of a file uploaded at `now` with `requested` seconds (undefined: the
   * default). Over the ceiling is validation_error: refused before anything is stored.
   */
  forUpload(now: number, requested: number | undefined): number | null {
    const seconds = requested ?? this.defaultSeconds;
    if (seconds === null) return null;
    this.check(seconds, this.s.maxSeconds);
    return now + seconds * 1000;
  }

  /**
   * A new expiry for a file uploaded at `createdAt`: `requested` seconds from `now`, or null
   * for none. The ceiling counts from the upload, so changes can never keep a file longer
   * than FILE_MAX_RETENTION in total.
   */
  forChange(createdAt: number, now: number, requested: number | null): number | null {
    if (requested === null) {
      if (this.s.maxSeconds !== null) throw new AppError('validation_error', `expiresInSeconds: files must expire (FILE_MAX_RETENTION is ${this.s.maxSeconds} s)`);
      return null;
    }
    const left = this.s.maxSeconds === null ? null : Math.floor((createdAt + this.s.maxSeconds * 1000 - now) / 1000);
    this.check(requested, left);
    return now + requested * 1000;
  }

  private check(seconds: number, max: number | null): void {
    if (!Number.isSafeInteger(seconds) || seconds < 60) throw new AppError('validation_error', 'expiresInSeconds: must be a whole number of seconds, at least 60');
    if (max !== null && seconds > max) {
      throw new AppError('validation_error', `expiresInSeconds: must be at most ${Math.max(0, max)} (FILE_MAX_RETENTION counts from the upload)`);
    }
  }
}

/** Reads an `expiresInSeconds` form field or query parameter: undefined when absent or empty. */
export function parseExpiresField(value: unknown): number | undefined {
  const v = Array.isArray(value) ? value.at(-1) : value;
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' || !/^\d{1,12}$/.test(v.trim())) throw new AppError('validation_error', 'expiresInSeconds: expected a whole number of seconds');
  return Number(v.trim());
}

export interface PurgedFile {
  id: string;
  ownerId: string;
  name: string;
  size: number;
  reason: 'expired' | 'last_download';
  expiresAt: number | null;
}

export interface PurgeReport {
  dryRun: boolean;
  /** False when another instance held the purge lease (nothing was done). */
  ran: boolean;
  purged: PurgedFile[];
  /** Ciphertext left by an earlier, interrupted purge that this pass removed. */
  resumed: number;
  /** Files due but under a hold (listed by the dry run only; never purged). */
  held: number;
}

export interface LifecycleDeps {
  db: Database;
  store: BlobStore;
  audit: AuditLog;
  logger?: Logger;
  now?: () => number;
}

/** Legal holds and the purge job over one database and blob store. */
export class LifecycleService {
  readonly holds: HoldsRepo;
  private readonly files: FilesRepo;
  private readonly queue: PurgeQueueRepo;
  private readonly now: () => number;

  constructor(private readonly d: LifecycleDeps) {
    this.holds = new HoldsRepo(d.db.kysely);
    this.files = new FilesRepo(d.db.kysely);
    this.queue = new PurgeQueueRepo(d.db.kysely);
    this.now = d.now ?? Date.now;
  }

  /** Places (or replaces) a hold, audited as hold.place; the target must exist (else not_found). */
  async placeHold(actorId: string, scope: HoldScope, targetId: string, reason: string, reference: string | null): Promise<HoldRow> {
    await this.requireTarget(scope, targetId);
    const hold = await this.holds.put({ scope, targetId, reason, reference, placedBy: actorId, placedAt: this.now() });
    await this.d.audit.record({
      actor: actorId,
      action: 'hold.place',
      outcome: 'success',
      subjectUserId: scope === 'user' ? targetId : await this.ownerOf(scope, targetId),
      fileId: scope === 'file' ? targetId : null,
      details: { scope, targetId, reason, reference },
    });
    return hold;
  }

  /** Releases a hold, audited as hold.release; not_found when there is none. */
  async releaseHold(actorId: string, scope: HoldScope, targetId: string): Promise<HoldRow> {
    const hold = await this.holds.release(scope, targetId);
    if (!hold) throw new AppError('not_found', `no legal hold on this ${scope}`);
    await this.d.audit.record({
      actor: actorId,
      action: 'hold.release',
      outcome: 'success',
      subjectUserId: scope === 'user' ? targetId : await this.ownerOf(scope, targetId),
      fileId: scope === 'file' ? targetId : null,
      details: { scope, targetId, reason: hold.reason, reference: hold.reference, placedBy: hold.placedBy, placedAt: hold.placedAt },
    });
    return hold;
  }

  private async requireTarget(scope: HoldScope, id: string): Promise<void> {
    const table = scope === 'file' ? 'files' : scope === 'user' ? 'users' : 'upload_requests';
    const r = await this.d.db.kysely.selectFrom(table).select('id').where('id', '=', id).executeTakeFirst();
    if (!r) throw new AppError('not_found', `no such ${scope}`);
  }

  private async ownerOf(scope: HoldScope, id: string): Promise<string | null> {
    if (scope === 'request') return (await this.d.db.kysely.selectFrom('upload_requests').select('owner_id').where('id', '=', id).executeTakeFirst())?.owner_id ?? null;
    if (scope !== 'file') return null;
    return (await this.files.byId(id))?.ownerId ?? null;
  }

  /**
   * One pass of the purge job: finishes interrupted purges, then crypto-shreds every file due
   * now. With `dryRun`, lists what would go and changes nothing (no lease needed). When
   * another instance holds the lease, does nothing (`ran: false`).
   */
  async runOnce(opts: { dryRun?: boolean } = {}): Promise<PurgeReport> {
    const now = this.now();
    if (opts.dryRun) {
      const due = await this.files.dueForPurge(now, 10_000);
      const held = await this.d.db.kysely.selectFrom('files').select((eb) => eb.fn.countAll<number>().as('n')).where(purgeDue(now)).executeTakeFirstOrThrow();
      return { dryRun: true, ran: true, purged: due.map((f) => describe(f, now)), resumed: (await this.queue.pending(10_000)).length, held: Number(held.n) - due.length };
    }
    const lease = await tryLease(this.d.db, PURGE_LEASE, 'purge', PURGE_LEASE_MS);
    if (!lease) return { dryRun: false, ran: false, purged: [], resumed: 0, held: 0 };
    try {
      const resumed = await this.finishQueued();
      const purged: PurgedFile[] = [];
      for (;;) {
        if (!lease.held()) break;
        const batch = await this.files.dueForPurge(this.now(), BATCH);
        let progress = false;
        for (const f of batch) {
          const p = await this.purgeFile(f);
          if (p) {
            purged.push(p);
            progress = true;
          }
        }
        if (batch.length < BATCH || !progress) break;
      }
      return { dryRun: false, ran: true, purged, resumed, held: 0 };
    } finally {
      await lease.release();
    }
  }

  /** Removes ciphertext queued by purges that committed but did not get to remove it. */
  private async finishQueued(): Promise<number> {
    let n = 0;
    for (;;) {
      const rows = await this.queue.pending(BATCH);
      for (const r of rows) {
        await this.d.store.delete(r.blobId);
        await this.queue.done(r.blobId);
        n++;
      }
      if (rows.length < BATCH) return n;
    }
  }

  /**
   * Purges one file if it is (still) due and not held: the shred, the link count, the queue
   * row and the audit row in one transaction; then the ciphertext. Null when another purge or
   * delete got there first, or a hold or a new expiry keeps it.
   */
  async purgeFile(f: FileRow): Promise<PurgedFile | null> {
    await this.d.audit.ready();
    const now = this.now();
    const info = describe(f, now);
    const blobId = blobIdOf(f);
    const result = await this.d.db.transaction(async (trx) => {
      // Links die with the row (ON DELETE CASCADE); count the live ones for the audit row first.
      const live = await trx
        .selectFrom('shares')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('file_id', '=', f.id)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', now)
        .executeTakeFirstOrThrow();
      if (!(await shredIn(trx, sql`id = ${f.id} AND ${purgeDue(now)}`, f.id))) return null;
      await new PurgeQueueRepo(trx).add({ blobId, fileId: f.id, queuedAt: now });
      return this.d.audit.appendIn(trx, {
        actor: 'system',
        action: 'file.purge',
        outcome: 'success',
        subjectUserId: f.ownerId,
        fileId: f.id,
        details: { reason: info.reason, size: f.size, expiresAt: f.expiresAt ?? null, revokedShares: Number(live.n) },
      });
    });
    if (!result) return null;
    await this.d.audit.committed(result);
    await this.checkpoint();
    try {
      await this.d.store.delete(blobId);
      await this.queue.done(blobId);
    } catch (err) {
      // The queue row stays: the next pass removes the ciphertext (the key is already gone).
      this.d.logger?.warn({ err, fileId: f.id }, 'purge: ciphertext removal failed; will retry');
    }
    return info;
  }

  /** After a counted link download: purges the file now if that was its last allowed download. */
  async afterDownload(fileId: string): Promise<boolean> {
    const f = await this.files.byId(fileId);
    return f !== undefined && (await this.purgeFile(f)) !== null;
  }

  private async checkpoint(): Promise<void> {
    if (this.d.db.dialect !== 'sqlite') return;
    try {
      // sqlite-only: push the freed pages out of the WAL so the old wrapped key does not linger there.
      await sql`PRAGMA wal_checkpoint(TRUNCATE)`.execute(this.d.db.kysely);
    } catch {
      /* a busy checkpoint is retried by SQLite's own auto-checkpoint later */
    }
  }
}

function describe(f: FileRow, now: number): PurgedFile {
  const expired = f.expiresAt !== null && f.expiresAt !== undefined && f.expiresAt <= now;
  return { id: f.id, ownerId: f.ownerId, name: f.name, size: f.size, reason: expired ? 'expired' : 'last_download', expiresAt: f.expiresAt ?? null };
}

/**
 * Runs the purge job inside the server on `pattern` (croner; `protect` skips a tick while
 * the previous pass still runs). Every instance schedules it; the lease lets one run at a time.
 */
export function startPurgeSchedule(lifecycle: LifecycleService, pattern: string, logger: Logger): Cron {
  return new Cron(pattern, { protect: true, unref: true }, async () => {
    try {
      const r = await lifecycle.runOnce();
      if (r.purged.length || r.resumed) logger.info({ purged: r.purged.length, resumed: r.resumed }, 'purge pass');
    } catch (err) {
      logger.warn({ err }, 'purge pass failed');
    }
  });
}
