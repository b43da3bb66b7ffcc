/** GET /audit: admins see everything; users see events on their own files and account. */
import type { AuditLog, AuditRow } from '../../services/audit.js';
import type { AuditEvent } from '../api-models.js';
import type { ApiRoutes } from '../api-router.js';
import { principal } from '../auth.js';
import { auditQuery, parse } from '../schemas.js';
import type { z } from '../zod.js';

/** Audit JSON: the event, not its MAC or key id. */
export function presentAudit(e: AuditRow): z.infer<typeof AuditEvent> {
  return {
    seq: e.seq,
    at: new Date(e.at).toISOString(),
    actor: e.actor,
    action: e.action,
    outcome: e.outcome,
    fileId: e.fileId,
    shareId: e.shareId,
    ip: e.ip,
    userAgent: e.userAgent,
    details: e.details,
  };
}

/** Binds the audit operation of the route table. */
export function auditRoutes(r: ApiRoutes, audit: AuditLog): void {
  r.op('listAudit', async (req, res) => {
    const { user } = principal(req);
    const q = parse(auditQuery, req.query);
    const rows = await audit.list({
      viewerId: user.role === 'admin' ? null : user.id,
      limit: q.limit + 1,
      before: q.cursor === undefined ? undefined : Number(q.cursor),
      fileId: q.fileId,
    });
    const page = rows.slice(0, q.limit);
    res.json({ events: page.map(presentAudit), nextCursor: rows.length > q.limit ? String(page.at(-1)!.seq) : null });
  });
}
