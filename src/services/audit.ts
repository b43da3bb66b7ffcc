/**
 * Tamper-evident audit log. Each row stores
 *   mac = HMAC-SHA256(k_audit, previous mac ‖ RFC 8785 canonical JSON of the row)
 * with k_audit = HKDF(audit root, "sfs/v1 audit mac"). The audit root is a random secret kept
 * in the database wrapped under the master key (and rewrapped on key rotation), so someone who
 * can write to the database but lacks the master key cannot recompute the chain, and rotating
 * and removing an old master key does not make the old part of the chain unverifiable.
 * The latest head is also kept outside the database (a small file and the log), so cutting
 * rows off the end shows. Rows never hold secrets: callers pass ids, names and outcomes only.
 */
import canonicalize from 'canonicalize';
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { Database, Executor, Trx } from '../db/database.js';
import { unwrapSecret } from '../crypto/envelope.js';
import { deriveSubkey, type Keyring } from '../crypto/keyring.js';
import { SecretsRepo } from '../db/secrets.js';
import type { Selectable } from 'kysely';
import type { AuditEventsTable } from '../db/schema.js';
import { FileAuditHeads, type AuditHead, type AuditHeadStore } from '../storage/audit-heads.js';

const AUDIT_LABEL = 'sfs/v1 audit mac';
const AUDIT_ID_LABEL = 'sfs/v1 audit key id';
/** Name of the wrapped secret the audit MAC key is derived from. */
export const AUDIT_ROOT_SECRET = 'audit-mac-root';
const GENESIS: Buffer = Buffer.alloc(32);

export type Outcome = 'success' | 'failure' | 'denied';

export interface AuditInput {
  /** User id, `share:<id>`, `cli`, `system` (the server itself: integrity events), or `anonymous`. */
  actor: string;
  action: string;
  outcome: Outcome;
  /** The user whose account or file the event concerns (for per-user views). */
  subjectUserId?: string | null;
  fileId?: string | null;
  shareId?: string | null;
  ip?: string | null;
  userAgent?: string | null;
  details?: Record<string, unknown>;
}

export interface AuditRow {
  seq: number;
  at: number;
  actor: string;
  action: string;
  subjectUserId: string | null;
  fileId: string | null;
  shareId: string | null;
  ip: string | null;
  userAgent: string | null;
  outcome: string;
  details: Record<string, unknown>;
  keyId: string;
  mac: Buffer;
}

/** An audit_events row as the database returns it. */
export type RawRow = Selectable<AuditEventsTable>;

const toRow = (r: RawRow): AuditRow => ({
  seq: r.seq,
  at: r.at,
  actor: r.actor,
  action: r.action,
  subjectUserId: r.subject_user_id,
  fileId: r.file_id,
  shareId: r.share_id,
  ip: r.ip,
  userAgent: r.user_agent,
  outcome: r.outcome,
  details: JSON.parse(r.details) as Record<string, unknown>,
  keyId: r.key_id,
  mac: r.mac,
});

/** The bytes a row's MAC covers (everything but the MAC itself). */
function canonicalBytes(r: Omit<AuditRow, 'mac'>): Buffer {
  const text = canonicalize({
    seq: r.seq,
    at: r.at,
    actor: r.actor,
    action: r.action,
    subjectUserId: r.subjectUserId,
    fileId: r.fileId,
    shareId: r.shareId,
    ip: r.ip,
    userAgent: r.userAgent,
    outcome: r.outcome,
    details: r.details,
    keyId: r.keyId,
  });
  if (text === undefined) throw new Error('audit row cannot be canonicalised');
  return Buffer.from(text, 'utf8');
}

function macOf(key: Buffer, prev: Buffer, r: Omit<AuditRow, 'mac'>): Buffer {
  return createHmac('sha256', key).update(prev).update(canonicalBytes(r)).digest();
}

interface AuditKey {
  id: string;
  mac: Buffer;
}

function auditKeyFrom(root: Buffer): AuditKey {
  return { id: deriveSubkey(root, AUDIT_ID_LABEL, 8).toString('hex'), mac: deriveSubkey(root, AUDIT_LABEL) };
}

export type { AuditHead } from '../storage/audit-heads.js';

/** Reads the chain head kept in a head file (the single-node layout), or null if there is none. */
export function readHead(file: string): AuditHead | null {
  return new FileAuditHeads(file).readSync();
}

export interface AuditDeps {
  db: Database;
  keyring: Keyring;
  /** Write the head asynchronously (the server); the CLI writes it before record() returns. */
  asyncHead?: boolean;
  /** Where the latest {seq, mac} is kept outside the database (storage/index.ts auditHeadsFor). */
  heads?: AuditHeadStore;
  /** Shorthand for `heads` in a head file (the single-node layout). */
  headFile?: string;
  logger?: Logger;
  now?: () => number;
  /** Called inside each append's transaction (the admin-wide webhook's outbox rows commit with the row). */
  onAppend?: (trx: Trx, row: Omit<AuditRow, 'mac'>) => Promise<void>;
}

export class AuditLog {
  private readonly now: () => number;
  private readonly summaries = new Map<string, { writtenAt: number; suppressed: number }>();

  /** Where this log publishes its head; null when it keeps none (some tests). */
  readonly heads: AuditHeadStore | null;

  constructor(private readonly deps: AuditDeps) {
    this.now = deps.now ?? Date.now;
    this.heads = deps.heads ?? (deps.headFile ? new FileAuditHeads(deps.headFile) : null);
  }

  private key: AuditKey | undefined;

  /**
   * Appends one event. The read of the previous MAC and the insert share one (immediate)
   * transaction, so concurrent appends, in this process or another, form one chain.
   */
  async record(e: AuditInput): Promise<AuditRow> {
    await this.ready();
    const row = await this.deps.db.transaction((trx) => this.appendIn(trx, e));
    await this.publishHead(row);
    return row;
  }

  /** Loads the audit key (may write its wrapped root on first use): call before appendIn, outside any transaction. */
  async ready(): Promise<void> {
    if (this.key) return;
    const root = await new SecretsRepo(this.deps.db.kysely).obtain(AUDIT_ROOT_SECRET, this.deps.keyring);
    this.key ??= auditKeyFrom(root);
    root.fill(0);
  }

  /**
   * Appends one event inside the caller's open transaction, so the event and the change it
   * describes commit together or not at all (the purge: exactly one file.purge row per file,
   * whatever crashes). Call ready() first; hand the row to committed() after the commit.
   */
  async appendIn(trx: Trx, e: AuditInput): Promise<AuditRow> {
    if (!this.key) throw new Error('AuditLog.ready() must be awaited before appendIn');
    const keyId = this.key.id;
    const key = this.key.mac;
    const last = await trx.selectFrom('audit_events').select(['seq', 'mac']).orderBy('seq', 'desc').limit(1).executeTakeFirst();
    const base: Omit<AuditRow, 'mac'> = {
      seq: (last?.seq ?? 0) + 1,
      at: this.now(),
      actor: e.actor,
      action: e.action,
      subjectUserId: e.subjectUserId ?? null,
      fileId: e.fileId ?? null,
      shareId: e.shareId ?? null,
      ip: e.ip ?? null,
      userAgent: e.userAgent ? e.userAgent.slice(0, 300) : null,
      outcome: e.outcome,
      details: e.details ?? {},
      keyId,
    };
    const mac = macOf(key, last?.mac ?? GENESIS, base);
    await trx
      .insertInto('audit_events')
      .values({
        seq: base.seq,
        at: base.at,
        actor: base.actor,
        action: base.action,
        subject_user_id: base.subjectUserId,
        file_id: base.fileId,
        share_id: base.shareId,
        ip: base.ip,
        user_agent: base.userAgent,
        outcome: base.outcome,
        details: JSON.stringify(base.details),
        key_id: base.keyId,
        mac,
      })
      .execute();
    await this.deps.onAppend?.(trx, base);
    return { ...base, mac };
  }

  /** Publishes the head after the transaction holding an appendIn row committed. */
  async committed(row: AuditRow): Promise<void> {
    await this.publishHead(row);
  }

  /**
   * Records repeated identical events (e.g. rate-limit hits) at most once per window per key;
   * the next row carries how many were folded into it.
   */
  async recordSummarised(key: string, e: AuditInput, windowMs = 60_000): Promise<AuditRow | null> {
    const now = this.now();
    const s = this.summaries.get(key);
    if (s && now - s.writtenAt < windowMs) {
      s.suppressed++;
      return null;
    }
    const suppressed = s?.suppressed ?? 0;
    this.summaries.set(key, { writtenAt: now, suppressed: 0 });
    if (this.summaries.size > 10_000) this.summaries.clear();
    return this.record({ ...e, details: { ...e.details, repeatsSincePrevious: suppressed } });
  }

  private pendingHead: AuditHead | null = null;
  private headWrite: Promise<void> | null = null;

  private async publishHead(row: AuditRow): Promise<void> {
    const head: AuditHead = { seq: row.seq, mac: row.mac.toString('hex') };
    this.deps.logger?.info({ auditHead: head, action: row.action }, 'audit event');
    const heads = this.heads;
    if (!heads) return;
    if (!this.deps.asyncHead) return heads.write(head);
    // The server writes the head off the request path: one write in flight, the newest head
    // wins, even if two appends' continuations run out of order. (A crash can lose the last
    // head of that short window; the log has it too.)
    if (!this.pendingHead || head.seq > this.pendingHead.seq) this.pendingHead = head;
    this.headWrite ??= this.drainHeads(heads).finally(() => {
      this.headWrite = null;
    });
  }

  private async drainHeads(heads: AuditHeadStore): Promise<void> {
    while (this.pendingHead) {
      const head = this.pendingHead;
      this.pendingHead = null;
      try {
        await heads.write(head);
      } catch (err) {
        this.deps.logger?.warn({ err, heads: heads.describe() }, 'could not write the audit head');
      }
    }
  }

  /** Walks the whole chain against the heads this log publishes to (verifyAuditChain). */
  async verify(): Promise<VerifyResult> {
    return verifyAuditChain(this.deps.db.kysely, this.deps.keyring, this.heads ?? undefined);
  }

  /** Resolves once the head store reflects every event recorded so far. */
  async flush(): Promise<void> {
    while (this.headWrite) await this.headWrite;
  }

  /** Events newest first. `viewerId` null means everything (admins); the other fields narrow it down. */
  async list(opts: { viewerId: string | null; limit: number; before?: number; fileId?: string; action?: string; outcome?: string; actor?: string }): Promise<AuditRow[]> {
    let q = this.deps.db.kysely.selectFrom('audit_events').selectAll();
    if (opts.action) q = q.where('action', '=', opts.action);
    if (opts.outcome) q = q.where('outcome', '=', opts.outcome);
    if (opts.actor) q = q.where('actor', '=', opts.actor);
    const viewer = opts.viewerId;
    if (viewer !== null) q = q.where((eb) => eb.or([eb('subject_user_id', '=', viewer), eb('actor', '=', viewer)]));
    if (opts.fileId) q = q.where('file_id', '=', opts.fileId);
    if (opts.before !== undefined) q = q.where('seq', '<', opts.before);
    const rows = await q.orderBy('seq', 'desc').limit(opts.limit).execute();
    return (rows as RawRow[]).map(toRow);
  }

  /** The distinct actions recorded so far (for the admin page's filter). */
  async actions(): Promise<string[]> {
    const rows = await this.deps.db.kysely.selectFrom('audit_events').select('action').distinct().orderBy('action').execute();
    return rows.map((r) => r.action);
  }
}

/** Every audit row in order, read in pages (no connection or transaction held across the walk). */
export async function* auditRows(db: Executor, since?: number): AsyncGenerator<RawRow> {
  let after = 0;
  for (;;) {
    let q = db.selectFrom('audit_events').selectAll().where('seq', '>', after);
    if (since !== undefined) q = q.where('at', '>=', since);
    const page = (await q.orderBy('seq').limit(1000).execute()) as RawRow[];
    for (const r of page) yield r;
    if (page.length < 1000) return;
    after = page.at(-1)!.seq;
  }
}

export type VerifyResult =
  /** `head`: the highest head found outside the database; `heads`: how many were found. */
  | { ok: true; count: number; head: AuditHead | null; heads: number }
  | { ok: false; count: number; brokenAt: number; reason: string };

/**
 * Walks the whole chain. Reports the first row whose sequence number, MAC or key does not
 * check out, and compares the chain with every head kept outside the database (a head file
 * path, or a head store): each head must name a row of the chain with that very MAC, so the
 * chain must reach the highest. The heads are read before the walk: rows only grow while it
 * runs, and a head is published only after its row committed.
 */
export async function verifyAuditChain(db: Executor, keyring: Keyring, heads?: AuditHeadStore | string): Promise<VerifyResult> {
  let prev: Buffer = GENESIS;
  let expectedSeq = 1;
  let count = 0;
  const store = typeof heads === 'string' ? new FileAuditHeads(heads) : heads;
  const found = store ? await store.readAll() : [];
  const head = found.reduce<AuditHead | null>((a, b) => (a && a.seq >= b.seq ? a : b), null);
  const macsAt = new Map<number, Set<string>>();
  for (const h of found) macsAt.set(h.seq, (macsAt.get(h.seq) ?? new Set()).add(h.mac));
  let key: AuditKey | undefined;
  let keyProblem: string | undefined;
  const stored = await new SecretsRepo(db).get(AUDIT_ROOT_SECRET);
  if (stored) {
    const master = keyring.get(stored.keyId);
    if (!master) keyProblem = `the audit key is wrapped under master key ${stored.keyId}, which is not loaded`;
    else {
      try {
        const root = unwrapSecret(master, AUDIT_ROOT_SECRET, stored.wrapped);
        key = auditKeyFrom(root);
        root.fill(0);
      } catch {
        keyProblem = 'the audit key does not unwrap under the configured master key';
      }
    }
  } else keyProblem = 'no audit key in the database';
  for await (const raw of auditRows(db)) {
    let row: AuditRow;
    try {
      row = toRow(raw);
    } catch {
      return { ok: false, count, brokenAt: raw.seq, reason: 'row details are not valid JSON' };
    }
    if (row.seq !== expectedSeq) {
      return { ok: false, count, brokenAt: expectedSeq, reason: `row ${expectedSeq} is missing (next row is ${row.seq})` };
    }
    if (!key) return { ok: false, count, brokenAt: row.seq, reason: keyProblem ?? 'no audit key' };
    if (row.keyId !== key.id) return { ok: false, count, brokenAt: row.seq, reason: `row names audit key ${row.keyId}, not ${key.id}` };
    const { mac, ...rest } = row;
    const expected = macOf(key.mac, prev, rest);
    if (mac.length !== expected.length || !timingSafeEqual(mac, expected)) {
      return { ok: false, count, brokenAt: row.seq, reason: 'MAC does not match (row edited, reordered, or an earlier row removed)' };
    }
    const recorded = macsAt.get(row.seq);
    if (recorded && (recorded.size > 1 || !recorded.has(mac.toString('hex')))) {
      return { ok: false, count, brokenAt: row.seq, reason: 'row does not match the head recorded outside the database' };
    }
    prev = mac;
    expectedSeq++;
    count++;
  }
  const lastSeq = expectedSeq - 1;
  if (head && head.seq > lastSeq) {
    return { ok: false, count, brokenAt: lastSeq + 1, reason: `chain ends at ${lastSeq} but the recorded head is ${head.seq} (rows cut off the end)` };
  }
  return { ok: true, count, head, heads: found.length };
}
