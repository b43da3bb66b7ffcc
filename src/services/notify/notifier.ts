/**
 * Notifications: the outbox (rows written inside the transaction of the change they
 * describe), per-user settings, webhooks, and the worker that delivers the outbox at least
 * once, with the event id as idempotency key, retrying with exponential backoff for
 * NOTIFY_RETRY_WINDOW_SECONDS (a day), across restarts and instances.
 *
 * Secrets never sit in the clear: a webhook's signing secret and the link URL of a link sent
 * by email are sealed (AES-256-GCM) under a service secret that is itself wrapped by the
 * master key (db/secrets.ts, rotated by `sfs key rotate`), and the sealed URL is erased once
 * its delivery is done. Nothing secret is logged or kept in the delivery log.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import nodemailer, { type Transporter } from 'nodemailer';
import type { Logger } from 'pino';
import type { NotifyConfig } from '../../config.js';
import { deriveSubkey, type Keyring } from '../../crypto/keyring.js';
import type { Database, Executor, Trx } from '../../db/database.js';
import { FilesRepo } from '../../db/files.js';
import { NotificationSettingsRepo } from '../../db/notification-settings.js';
import { OutboxRepo, type NewDelivery, type OutboxRow } from '../../db/outbox.js';
import { SecretsRepo } from '../../db/secrets.js';
import { ShareRecipientsRepo } from '../../db/share-recipients.js';
import { SignInAddressesRepo } from '../../db/sign-in-addresses.js';
import { ADMIN_SCOPE, WebhooksRepo, type WebhookRow } from '../../db/webhooks.js';
import { AppError } from '../../errors.js';
import { newId } from '../ids.js';
import { renderEmail, type StoredEvent } from './messages.js';
import { bareHost, checkHostAllowed, checkWebhookUrlForm } from './net-guard.js';
import { postWebhook } from './webhook.js';

/** The events a user can choose, as named in PATCH /api/v1/me `notifications`. */
export const NOTIFICATION_KINDS = ['shareDownloaded', 'shareExhausted', 'requestUpload', 'expiringSoon', 'newSignIn', 'accountChanged'] as const;
export type NotificationKind = (typeof NOTIFICATION_KINDS)[number];
export const CHANNELS = ['email', 'webhook'] as const;
export type Channel = (typeof CHANNELS)[number];
export type NotificationPrefs = Record<NotificationKind, Channel[]>;

/** The event type (in the JSON body and SFS-Event-Type) an emitter may use for each choice. */
const TYPES_OF: Record<NotificationKind, string[]> = {
  shareDownloaded: ['share.downloaded'],
  shareExhausted: ['share.exhausted'],
  requestUpload: ['request.upload'],
  expiringSoon: ['share.expiring', 'file.expiring'],
  newSignIn: ['sign_in.new'],
  accountChanged: ['account.changed'],
};

const SEAL_SECRET = 'notify seal';
const SIGN_IN_LABEL = 'sfs/v1 sign-in address';
const MAX_BACKOFF_MS = 3600_000;
const BATCH = 20;
/** The longest error text kept in the delivery log (it never holds a secret: codes and statuses only). */
const MAX_ERROR = 200;

/** Normalises stored prefs to every kind with a known set of channels. */
export function fullPrefs(stored: Record<string, unknown>): NotificationPrefs {
  const out = {} as NotificationPrefs;
  for (const k of NOTIFICATION_KINDS) {
    const v = stored[k];
    out[k] = Array.isArray(v) ? CHANNELS.filter((c) => v.includes(c)) : [];
  }
  return out;
}

/** What an emitter hands in. */
export interface EmitInput {
  kind: NotificationKind;
  type: string;
  userId: string;
  data: Record<string, unknown>;
  /** Base URL for the owner's pages (PUBLIC_URL or the request's own). */
  base?: string | null;
  /** A deterministic id makes emitting the same event twice send it once (reminders). */
  eventId?: string;
}

export interface NotifierDeps {
  db: Database;
  keyring: Keyring;
  config: NotifyConfig;
  publicUrl: string | undefined;
  logger: Logger;
  now?: () => number;
}

export interface WebhookView {
  id: string;
  url: string;
  createdAt: number;
}

export class Notifier {
  private key: Buffer | undefined;
  private readonly transport: Transporter | null;
  private readonly now: () => number;
  private readonly addressKey: Buffer;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private stopped = true;
  private lastReminderScan = 0;
  /** This process's lease owner id (random per process: a restarted one is another owner). */
  readonly workerId = randomBytes(12).toString('hex');

  constructor(private readonly deps: NotifierDeps) {
    this.now = deps.now ?? Date.now;
    this.addressKey = deps.keyring.derive(SIGN_IN_LABEL);
    const c = deps.config;
    this.transport = c.smtpUrl
      ? nodemailer.createTransport({
          url: c.smtpUrl,
          requireTLS: c.smtpRequireTls,
          connectionTimeout: c.timeoutMs,
          greetingTimeout: c.timeoutMs,
          socketTimeout: c.timeoutMs,
          ...(c.smtpCaFile ? { tls: { ca: fs.readFileSync(c.smtpCaFile, 'utf8') } } : {}),
        } as unknown as Parameters<typeof nodemailer.createTransport>[0])
      : null;
  }

  /** Loads (creating on first use) the sealing key; call before any emit (createApp does). */
  async init(): Promise<void> {
    if (this.key) return;
    const root = await new SecretsRepo(this.deps.db.kysely).obtain(SEAL_SECRET, this.deps.keyring);
    this.key = deriveSubkey(root, 'sfs/v1 notify seal aes');
    root.fill(0);
  }

  /** True when SMTP_URL is set. */
  get emailEnabled(): boolean {
    return this.transport !== null;
  }

  private seal(purpose: string, id: string, plain: string): Buffer {
    if (!this.key) throw new Error('notifier not initialised');
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, nonce);
    c.setAAD(Buffer.from(`${purpose}|${id}`));
    const ct = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
    return Buffer.concat([nonce, ct, c.getAuthTag()]);
  }

  private unseal(purpose: string, id: string, sealed: Buffer): string {
    if (!this.key) throw new Error('notifier not initialised');
    const d = createDecipheriv('aes-256-gcm', this.key, sealed.subarray(0, 12));
    d.setAAD(Buffer.from(`${purpose}|${id}`));
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]).toString('utf8');
  }

  // --- settings ---

  /** The user's address and choices (every kind listed). */
  async settings(userId: string): Promise<{ email: string | null; notifications: NotificationPrefs }> {
    const s = await new NotificationSettingsRepo(this.deps.db.kysely).get(userId);
    return { email: s.email, notifications: fullPrefs(s.prefs) };
  }

  /** Changes the address and/or choices (kinds not named keep theirs). Email channels need an address. */
  async updateSettings(userId: string, changes: { email?: string | null; notifications?: Partial<Record<NotificationKind, Channel[]>> }): Promise<{ email: string | null; notifications: NotificationPrefs }> {
    return this.deps.db.transaction(async (trx) => {
      const repo = new NotificationSettingsRepo(trx);
      const current = await repo.get(userId);
      const email = changes.email === undefined ? current.email : changes.email;
      const prefs = fullPrefs({ ...fullPrefs(current.prefs), ...(changes.notifications ?? {}) });
      if (!email && Object.values(prefs).some((c) => c.includes('email'))) {
        throw new AppError('validation_error', 'email: set an address to receive notifications by email');
      }
      await repo.put({ userId, email: email ?? null, prefs, updatedAt: this.now() });
      return { email: email ?? null, notifications: prefs };
    });
  }

  // --- webhooks ---

  /** The scope's webhook (user id or ADMIN_SCOPE), without its secret. */
  async webhook(scope: string): Promise<WebhookView | null> {
    const w = await new WebhooksRepo(this.deps.db.kysely).forScope(scope);
    return w ? { id: w.id, url: w.url, createdAt: w.createdAt } : null;
  }

  /**
   * Sets the scope's webhook to `url` with a fresh secret, returned only here. Refuses URLs
   * that are not https (or loopback http) or that resolve to private addresses (unless allowed).
   */
  async setWebhook(scope: string, url: string): Promise<{ webhook: WebhookView; secret: string }> {
    const u = checkWebhookUrlForm(url);
    await checkHostAllowed(bareHost(u), this.deps.config.allowPrivateWebhooks);
    const id = newId();
    const secret = `whsec_${randomBytes(32).toString('base64url')}`;
    const row: WebhookRow = { id, scope, url: u.toString(), sealed: this.seal('webhook', id, secret), createdAt: this.now() };
    await this.deps.db.transaction((trx) => new WebhooksRepo(trx).replace(row));
    return { webhook: { id, url: row.url, createdAt: row.createdAt }, secret };
  }

  /** Removes the scope's webhook; true when there was one. */
  removeWebhook(scope: string): Promise<boolean> {
    return new WebhooksRepo(this.deps.db.kysely).remove(scope);
  }

  /** Queues a `webhook.test` event to the scope's webhook; not_found without one. */
  async sendTest(scope: string, base?: string | null): Promise<string> {
    return this.deps.db.transaction(async (trx) => {
      const w = await new WebhooksRepo(trx).forScope(scope);
      if (!w) throw new AppError('not_found', 'no webhook is set');
      const eventId = newId();
      await new OutboxRepo(trx).insert([this.delivery(eventId, 'webhook.test', scope === ADMIN_SCOPE ? null : scope, 'webhook', w.id, { message: 'a test event from the file sharing server', at: this.now() }, base ?? null)]);
      return eventId;
    });
  }

  /** The newest deliveries over a scope's channel (the delivery log). */
  deliveries(scope: string, channel: Channel = 'webhook', limit = 20): Promise<OutboxRow[]> {
    return new OutboxRepo(this.deps.db.kysely).recent(scope === ADMIN_SCOPE ? null : scope, channel, null, limit);
  }

  // --- emitting (inside the caller's transaction) ---

  private delivery(eventId: string, type: string, userId: string | null, channel: Channel, target: string, data: Record<string, unknown>, base: string | null, sealed: Buffer | null = null, id = newId()): NewDelivery {
    const now = this.now();
    const ev: StoredEvent = { id: eventId, type, createdAt: new Date(now).toISOString(), data, base };
    return { id, eventId, type, userId, channel, target, payload: JSON.stringify(ev), sealed, createdAt: now };
  }

  /**
   * Writes the event's deliveries (the user's chosen channels) into the outbox, inside `trx`:
   * they commit or roll back with the change they describe.
   */
  async emitIn(trx: Executor, e: EmitInput): Promise<void> {
    if (!TYPES_OF[e.kind].includes(e.type)) throw new Error(`event type ${e.type} is not a ${e.kind} event`);
    const settings = await new NotificationSettingsRepo(trx).get(e.userId);
    const channels = fullPrefs(settings.prefs)[e.kind];
    if (channels.length === 0) return;
    const eventId = e.eventId ?? newId();
    const base = e.base ?? this.deps.publicUrl ?? null;
    const rows: NewDelivery[] = [];
    if (channels.includes('email') && settings.email && this.transport) rows.push(this.delivery(eventId, e.type, e.userId, 'email', settings.email, e.data, base));
    if (channels.includes('webhook')) {
      const w = await new WebhooksRepo(trx).forScope(e.userId);
      if (w) rows.push(this.delivery(eventId, e.type, e.userId, 'webhook', w.id, e.data, base));
    }
    await new OutboxRepo(trx).insert(rows);
  }

  /** The admin-wide audit stream: every audit row goes to the admin webhook, if one is set (inside the audit append's transaction). */
  async auditAppendedIn(trx: Executor, row: { seq: number; at: number; actor: string; action: string; outcome: string; subjectUserId: string | null; fileId: string | null; shareId: string | null; ip: string | null; details: Record<string, unknown> }): Promise<void> {
    const w = await new WebhooksRepo(trx).forScope(ADMIN_SCOPE);
    if (!w) return;
    const data = { seq: row.seq, at: new Date(row.at).toISOString(), actor: row.actor, action: row.action, outcome: row.outcome, subjectUserId: row.subjectUserId, fileId: row.fileId, shareId: row.shareId, ip: row.ip, details: row.details };
    await new OutboxRepo(trx).insert([this.delivery(newId(), 'audit.event', null, 'webhook', w.id, data, null)]);
  }

  /**
   * Inside a link's creating transaction: one email per recipient with the link URL (sealed in
   * the outbox until sent), and the addresses recorded on the link. Never the password.
   */
  async linkEmailsIn(trx: Trx, input: { shareId: string; ownerId: string; ownerName: string; fileId: string; fileName: string; expiresAt: number; passwordProtected: boolean; url: string; recipients: string[]; message: string | null }): Promise<void> {
    if (input.recipients.length === 0) return;
    if (!this.transport) throw new AppError('email_not_configured', 'recipients: sending links by email needs SMTP_URL');
    const outbox = new OutboxRepo(trx);
    const recipients = new ShareRecipientsRepo(trx);
    for (const address of input.recipients) {
      const eventId = newId();
      const id = newId();
      const data = { shareId: input.shareId, fileName: input.fileName, ownerName: input.ownerName, expiresAt: new Date(input.expiresAt).toISOString(), passwordProtected: input.passwordProtected, message: input.message };
      await outbox.insert([this.delivery(eventId, 'link.sent', input.ownerId, 'email', address, data, null, this.seal('link', id, input.url), id)]);
      await recipients.insert({ shareId: input.shareId, address, eventId, message: input.message, createdAt: this.now() });
    }
  }

  /** Who each link was sent to by email, with how that delivery went. */
  async recipientsOf(shareIds: string[]): Promise<Map<string, { address: string; status: string; sentAt: number | null; createdAt: number }[]>> {
    const rows = await new ShareRecipientsRepo(this.deps.db.kysely).forShares(shareIds);
    const deliveries = new Map((await new OutboxRepo(this.deps.db.kysely).byEvents(rows.map((r) => r.eventId))).map((d) => [d.eventId, d]));
    const out = new Map<string, { address: string; status: string; sentAt: number | null; createdAt: number }[]>();
    for (const r of rows) {
      const d = deliveries.get(r.eventId);
      const list = out.get(r.shareId) ?? [];
      list.push({ address: r.address, status: d?.status ?? 'pending', sentAt: d?.deliveredAt ?? null, createdAt: r.createdAt });
      out.set(r.shareId, list);
    }
    return out;
  }

  /**
   * Records a successful sign-in's client address (as a keyed hash) and, in the same
   * transaction, a `sign_in.new` event when the user had signed in before but never from it.
   */
  async signedIn(userId: string, ip: string | null, via: string, base?: string | null): Promise<void> {
    if (!ip) return;
    const hash = createHmac('sha256', this.addressKey).update(ip).digest();
    await this.deps.db.transaction(async (trx) => {
      const seen = await new SignInAddressesRepo(trx).record(userId, hash, this.now());
      if (seen === 'new') await this.emitIn(trx, { kind: 'newSignIn', type: 'sign_in.new', userId, data: { at: new Date(this.now()).toISOString(), clientAddress: ip, via }, base });
    });
  }

  // --- the worker ---

  /** Starts the delivery loop (the server does; tests call runOnce). */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    const loop = async () => {
      if (this.stopped) return;
      let n = 0;
      try {
        n = await this.runOnce();
        if (this.now() - this.lastReminderScan >= 60_000) {
          this.lastReminderScan = this.now();
          await this.remindExpiring();
        }
      } catch (err) {
        this.deps.logger.warn({ err }, 'notification worker pass failed');
      }
      if (!this.stopped) {
        this.timer = setTimeout(() => void loop(), n >= BATCH ? 0 : this.deps.config.pollMs);
        this.timer.unref();
      }
    };
    void loop();
  }

  /** Stops the loop; deliveries in flight finish (or their lease runs out). */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** Claims due deliveries (one statement, with a lease) and attempts each; returns how many were attempted. */
  async runOnce(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      const now = this.now();
      const rows = await new OutboxRepo(this.deps.db.kysely).claim(this.workerId, now, this.deps.config.leaseMs, BATCH);
      for (const row of rows) await this.attempt(row);
      return rows.length;
    } finally {
      this.running = false;
    }
  }

  private async attempt(row: OutboxRow): Promise<void> {
    const outbox = new OutboxRepo(this.deps.db.kysely);
    let result: { ok: true } | { ok: false; error: string; retry: boolean };
    try {
      result = row.channel === 'email' ? await this.sendEmail(row) : await this.sendWebhook(row);
    } catch (err) {
      result = { ok: false, error: (err as NodeJS.ErrnoException).code ?? 'internal error', retry: true };
    }
    const now = this.now();
    if (result.ok) {
      await outbox.markSent(row.id, this.workerId, now);
      this.deps.logger.debug({ deliveryId: row.id, eventId: row.eventId, type: row.type, channel: row.channel }, 'notification delivered');
      return;
    }
    const delay = Math.min(this.deps.config.retryBaseMs * 2 ** Math.max(0, row.attempts - 1), MAX_BACKOFF_MS);
    const nextAt = result.retry && now + delay <= row.createdAt + this.deps.config.retryWindowMs ? now + delay : null;
    await outbox.markFailed(row.id, this.workerId, result.error.slice(0, MAX_ERROR), nextAt);
    this.deps.logger.info({ deliveryId: row.id, eventId: row.eventId, type: row.type, channel: row.channel, attempts: row.attempts, error: result.error, retryAt: nextAt }, 'notification delivery failed');
  }

  private async sendEmail(row: OutboxRow): Promise<{ ok: true } | { ok: false; error: string; retry: boolean }> {
    if (!this.transport) return { ok: false, error: 'email not configured', retry: false };
    const ev = JSON.parse(row.payload) as StoredEvent;
    const linkUrl = row.sealed ? this.unseal('link', row.id, row.sealed) : undefined;
    const mail = renderEmail(ev, linkUrl);
    try {
      await this.transport.sendMail({
        from: this.deps.config.smtpFrom,
        to: row.target,
        subject: mail.subject,
        text: mail.text,
        html: mail.html,
        // The event id is the idempotency key: a retried email has the same Message-ID.
        messageId: `<${row.eventId}@sfs.invalid>`,
        headers: { 'X-SFS-Event-Id': row.eventId, 'X-SFS-Event-Type': row.type, 'Auto-Submitted': 'auto-generated' },
      });
      return { ok: true };
    } catch (err) {
      const e = err as { responseCode?: number; code?: string };
      // A permanent refusal (5xx) is not retried; anything else (4xx, connection) is.
      if (typeof e.responseCode === 'number') return { ok: false, error: `SMTP ${e.responseCode}`, retry: e.responseCode < 500 };
      return { ok: false, error: e.code ?? 'SMTP connection failed', retry: true };
    }
  }

  private async sendWebhook(row: OutboxRow): Promise<{ ok: true } | { ok: false; error: string; retry: boolean }> {
    const w = await new WebhooksRepo(this.deps.db.kysely).byId(row.target);
    if (!w) return { ok: false, error: 'webhook removed', retry: false };
    const ev = JSON.parse(row.payload) as StoredEvent;
    const body = JSON.stringify({ id: ev.id, type: ev.type, createdAt: ev.createdAt, data: ev.data });
    const secret = this.unseal('webhook', w.id, w.sealed);
    return postWebhook(w.url, { id: ev.id, type: ev.type }, body, secret, { allowPrivate: this.deps.config.allowPrivateWebhooks, timeoutMs: this.deps.config.timeoutMs, now: this.now() });
  }

  /**
   * Expiry reminders: a live link expiring within NOTIFY_EXPIRY_REMINDER_SECONDS gets one
   * `share.expiring` event, and a file with live links expiring within it (its retention) one
   * `file.expiring` event; deterministic event ids, so every instance's scan emits each once.
   */
  async remindExpiring(): Promise<number> {
    const now = this.now();
    const soon = await this.deps.db.kysely
      .selectFrom('shares')
      .innerJoin('files', 'files.id', 'shares.file_id')
      .select(['shares.id as id', 'shares.owner_id as ownerId', 'shares.expires_at as expiresAt', 'files.id as fileId', 'files.name as fileName'])
      .where('shares.revoked_at', 'is', null)
      .where('shares.expired_at', 'is', null)
      .where('shares.expires_at', '>', now)
      .where('shares.expires_at', '<=', now + this.deps.config.reminderMs)
      .limit(500)
      .execute();
    let n = 0;
    for (const s of soon) {
      const eventId = createHmac('sha256', 'sfs share expiring').update(`${s.id}|${s.expiresAt}`).digest('hex').slice(0, 32);
      await this.deps.db.transaction(async (trx) => {
        const already = await trx.selectFrom('notification_outbox').select('id').where('event_id', '=', eventId).limit(1).executeTakeFirst();
        if (already) return;
        await this.emitIn(trx, { kind: 'expiringSoon', type: 'share.expiring', userId: s.ownerId, eventId, data: { shareId: s.id, fileId: s.fileId, fileName: s.fileName, expiresAt: new Date(Number(s.expiresAt)).toISOString() } });
        n++;
      });
    }
    // Files under retention that still have live links (held files never expire: left out).
    for (const f of await new FilesRepo(this.deps.db.kysely).expiringWithActiveLinks(now, this.deps.config.reminderMs)) {
      if (f.expiresAt === null || f.expiresAt === undefined) continue;
      const eventId = createHmac('sha256', 'sfs file expiring').update(`${f.id}|${f.expiresAt}`).digest('hex').slice(0, 32);
      await this.deps.db.transaction(async (trx) => {
        const already = await trx.selectFrom('notification_outbox').select('id').where('event_id', '=', eventId).limit(1).executeTakeFirst();
        if (already) return;
        await this.emitIn(trx, { kind: 'expiringSoon', type: 'file.expiring', userId: f.ownerId, eventId, data: { fileId: f.id, fileName: f.name, expiresAt: new Date(Number(f.expiresAt)).toISOString() } });
        n++;
      });
    }
    return n;
  }
}
