/** Webhook settings over the API: the caller's own, and the admin-wide one (the audit stream). */
import type { Request } from 'express';
import type { OutboxRow } from '../../db/outbox.js';
import { ADMIN_SCOPE } from '../../db/webhooks.js';
import { AppError } from '../../errors.js';
import type { AuditLog } from '../../services/audit.js';
import type { Notifier, WebhookView } from '../../services/notify/notifier.js';
import type { Delivery, Webhook } from '../api-models.js';
import type { ApiRoutes } from '../api-router.js';
import { principal } from '../auth.js';
import { clientOf } from '../context.js';
import { parse, webhookBody } from '../schemas.js';
import type { z } from '../zod.js';

export interface NotifyRoutesDeps {
  notify: Notifier;
  audit: AuditLog;
  publicUrl: string | undefined;
}

const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());

/** A webhook for its owner: never the secret. */
export function presentWebhook(w: WebhookView): z.infer<typeof Webhook> {
  return { id: w.id, url: w.url, createdAt: new Date(w.createdAt).toISOString() };
}

/** One line of the delivery log: status, attempts and the last error code, never the body's secrets or the webhook secret. */
export function presentDelivery(d: OutboxRow): z.infer<typeof Delivery> {
  return {
    id: d.id,
    eventId: d.eventId,
    type: d.type,
    status: d.status,
    attempts: d.attempts,
    lastError: d.lastError,
    createdAt: new Date(d.createdAt).toISOString(),
    lastAttemptAt: iso(d.lastAttemptAt),
    deliveredAt: iso(d.deliveredAt),
    nextAttemptAt: d.status === 'pending' ? iso(d.nextAttemptAt) : null,
  };
}

/** Binds the webhook operations of the route table. */
export function notifyRoutes(r: ApiRoutes, d: NotifyRoutesDeps): void {
  const scopeOf = (req: Request, admin: boolean) => (admin ? ADMIN_SCOPE : principal(req).user.id);
  for (const admin of [false, true]) {
    const ids = admin
      ? (['getAdminWebhook', 'setAdminWebhook', 'deleteAdminWebhook', 'testAdminWebhook'] as const)
      : (['getMyWebhook', 'setMyWebhook', 'deleteMyWebhook', 'testMyWebhook'] as const);
    r.op(ids[0], async (req, res) => {
      const scope = scopeOf(req, admin);
      const w = await d.notify.webhook(scope);
      res.json({ webhook: w && presentWebhook(w), deliveries: (await d.notify.deliveries(scope)).map(presentDelivery) });
    });
    r.op(ids[1], async (req, res) => {
      const body = parse(webhookBody, req.body);
      const user = principal(req).user;
      const { webhook, secret } = await d.notify.setWebhook(scopeOf(req, admin), body.url);
      // The URL's host only: a path may carry a token of the receiver's.
      await d.audit.record({ actor: user.id, action: 'webhook.set', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { scope: admin ? 'admin' : 'user', webhookId: webhook.id, host: new URL(webhook.url).host } });
      res.json({ ...presentWebhook(webhook), secret });
    });
    r.op(ids[2], async (req, res) => {
      const user = principal(req).user;
      if (!(await d.notify.removeWebhook(scopeOf(req, admin)))) throw new AppError('not_found', 'no webhook is set');
      await d.audit.record({ actor: user.id, action: 'webhook.remove', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { scope: admin ? 'admin' : 'user' } });
      res.status(204).end();
    });
    r.op(ids[3], async (req, res) => {
      res.status(202).json({ eventId: await d.notify.sendTest(scopeOf(req, admin)) });
    });
  }
}
