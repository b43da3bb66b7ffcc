/** Audit events written the same way by the API and the pages (which differ only in `via`). */
import type { Request, Response } from 'express';
import { IntegrityError } from '../crypto/format.js';
import type { FileRow } from '../db/files.js';
import type { ShareRow } from '../db/shares.js';
import type { AuditLog } from '../services/audit.js';
import type { VaultService } from '../services/vault.js';
import { sendFileContent } from './content.js';
import { clientOf } from './context.js';

/** One `file.upload` event per stored file. */
export async function recordUploads(audit: AuditLog, req: Request, rows: FileRow[], via: string): Promise<void> {
  for (const f of rows) {
    req.log?.debug({ fileId: f.id, size: f.size, keyId: f.keyId, via }, 'file stored');
    await audit.record({ actor: f.ownerId, action: 'file.upload', outcome: 'success', subjectUserId: f.ownerId, fileId: f.id, ...clientOf(req), details: { size: f.size, via } });
  }
}

/** The `share.create` event: limits and whether a password is set, never the token or password. */
export async function recordShareCreated(audit: AuditLog, req: Request, userId: string, share: ShareRow, via?: string, emailedTo = 0): Promise<void> {
  await audit.record({
    actor: userId,
    action: 'share.create',
    outcome: 'success',
    subjectUserId: userId,
    fileId: share.fileId,
    shareId: share.id,
    ...clientOf(req),
    details: { expiresAt: share.expiresAt, maxDownloads: share.maxDownloads, passwordProtected: share.passwordHash !== null, ...(via ? { via } : {}), ...(emailedTo ? { emailedTo } : {}) },
  });
}

/**
 * Serves an owner's download (GET or HEAD) and records `file.download` with what was really
 * sent, including integrity failures before or after the headers.
 */
export async function sendOwnerDownload(audit: AuditLog, vault: VaultService, req: Request, res: Response, row: FileRow, via?: string): Promise<void> {
  const record = (outcome: 'success' | 'failure', details: Record<string, unknown>) =>
    audit.record({
      actor: row.ownerId,
      action: 'file.download',
      outcome,
      subjectUserId: row.ownerId,
      fileId: row.id,
      ...clientOf(req),
      details: { ...details, ...(via ? { via } : {}) },
    });
  let result;
  try {
    result = await sendFileContent(req, res, vault, row);
  } catch (err) {
    if (err instanceof IntegrityError) await record('failure', { integrityError: true, bytesSent: 0 });
    throw err;
  }
  if (req.method === 'GET') {
    await record(result.completed ? 'success' : 'failure', {
      start: result.range.start,
      end: result.range.end,
      bytesSent: result.bytesSent,
      completed: result.completed,
      integrityError: result.integrityError ?? false,
    });
  }
}
