/** GET /audit: admins see everything; users see events on their own files and account. */
import { Router } from 'express';
import { z } from 'zod';
import type { AuditLog, AuditRow } from '../../services/audit.js';
import { principal } from '../auth.js';
import { parse } from '../schemas.js';

const auditQuery = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().regex(/^\d{1,15}$/, 'not a cursor from this API').optional(),
  fileId: z.string().regex(/^[0-9a-f]{32}$/, 'not a file id').optional(),
});

/** Audit JSON: the event, not its MAC or key id. */
export function presentAudit(e: AuditRow) {
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

export function auditRoutes(audit: AuditLog): Router {
  const r = Router();
  r.get('/audit', (req, res) => {
    const { user } = principal(req);
    const q = parse(auditQuery, req.query);
    const rows = audit.list({
      viewerId: user.role === 'admin' ? null : user.id,
      limit: q.limit + 1,
      before: q.cursor === undefined ? undefined : Number(q.cursor),
      fileId: q.fileId,
    });
    const page = rows.slice(0, q.limit);
    res.json({ events: page.map(presentAudit), nextCursor: rows.length > q.limit ? String(page.at(-1)!.seq) : null });
  });
  return r;
}
