/** Audit events written the same way by the API and the pages (which differ only in `via`). */
import type { Request } from 'express';
import type { FileRow } from '../db/files.js';
import type { ShareRow } from '../db/shares.js';
import type { AuditLog } from '../services/audit.js';
import { clientOf } from './context.js';

/** One `file.upload` event per stored file. */
export function recordUploads(audit: AuditLog, req: Request, rows: FileRow[], via: string): void {
  for (const f of rows) {
    req.log?.debug({ fileId: f.id, size: f.size, keyId: f.keyId, via }, 'file stored');
    audit.record({ actor: f.ownerId, action: 'file.upload', outcome: 'success', subjectUserId: f.ownerId, fileId: f.id, ...clientOf(req), details: { size: f.size, via } });
  }
}

/** The `share.create` event: limits and whether a password is set, never the token or password. */
export function recordShareCreated(audit: AuditLog, req: Request, userId: string, share: ShareRow, via?: string): void {
  audit.record({
    actor: userId,
    action: 'share.create',
    outcome: 'success',
    subjectUserId: userId,
    fileId: share.fileId,
    shareId: share.id,
    ...clientOf(req),
    details: { expiresAt: share.expiresAt, maxDownloads: share.maxDownloads, passwordProtected: share.passwordHash !== null, ...(via ? { via } : {}) },
  });
}
