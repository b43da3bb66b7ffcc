/** Owner-side share API: create, list, revoke. */
import type { ShareRow } from '../../db/shares.js';
import { AppError } from '../../errors.js';
import type { AuditLog } from '../../services/audit.js';
import type { SharesService } from '../../services/shares.js';
import type { VaultService } from '../../services/vault.js';
import type { Notifier } from '../../services/notify/notifier.js';
import type { Share } from '../api-models.js';
import type { ApiRoutes } from '../api-router.js';
import { principal } from '../auth.js';
import { clientOf, publicBase } from '../context.js';
import { recordShareCreated } from '../events.js';
import type { z } from '../zod.js';
import { bundleCreateBody, parse, shareCreateBody } from '../schemas.js';
import type { BundlesService } from '../../services/bundles.js';

export { shareCreateBody };

export interface ShareRoutesDeps {
  vault: VaultService;
  shares: SharesService;
  bundles: BundlesService;
  audit: AuditLog;
  /** Sends links by email (recipients) and shows who was sent what. */
  notify: Notifier;
  publicUrl: string | undefined;
  maxTtlSeconds: number;
  /** Most files one bundle may hold (BUNDLE_MAX_FILES). */
  bundleMaxFiles: number;
}

/**
 * Share JSON for its owner: never the token hash or password hash. `fileIds` are a bundle's
 * files still in it (from BundlesService.members.fileIdsOf); a single-file link has its one file.
 */
export function presentShare(s: ShareRow, fileIds?: string[]): z.infer<typeof Share> {
  return {
    id: s.id,
    fileId: s.fileId,
    bundle: s.bundle,
    fileIds: fileIds ?? [s.fileId],
    expiresAt: new Date(s.expiresAt).toISOString(),
    maxDownloads: s.maxDownloads,
    downloads: s.downloads,
    bytesServed: s.bytesServed,
    passwordProtected: s.passwordHash !== null,
    note: s.note,
    createdAt: new Date(s.createdAt).toISOString(),
    revokedAt: s.revokedAt === null ? null : new Date(s.revokedAt).toISOString(),
    deleteFileAfterLastDownload: s.deleteFileAfter === true,
    status: s.revokedAt !== null ? 'revoked' : s.expiresAt <= Date.now() ? 'expired' : s.maxDownloads !== null && s.downloads >= s.maxDownloads ? 'exhausted' : 'active',
  };
}

/** Adds who a link was emailed to (when it was), for its owner. */
export function withRecipients(
  s: z.infer<typeof Share>,
  sent: { address: string; status: string; sentAt: number | null }[] | undefined,
): z.infer<typeof Share> {
  if (!sent?.length) return s;
  return { ...s, recipients: sent.map((r) => ({ address: r.address, status: r.status as 'pending' | 'sent' | 'failed', sentAt: r.sentAt === null ? null : new Date(r.sentAt).toISOString() })) };
}

/** Binds the owner-side sharing operations of the route table. */
export function shareRoutes(r: ApiRoutes, d: ShareRoutesDeps): void {
  r.op('createShare', async (req, res) => {
    const { user } = principal(req);
    const file = await d.vault.get(user.id, String(req.params.id));
    const body = parse(shareCreateBody, req.body);
    if (body.expiresInSeconds !== undefined && body.expiresInSeconds > d.maxTtlSeconds) {
      throw new AppError('validation_error', `expiresInSeconds: must be at most ${d.maxTtlSeconds}`);
    }
    const base = publicBase(req, d.publicUrl);
    const recipients = [...new Set((body.recipients ?? []).map((a) => a.toLowerCase()))];
    if (recipients.length && !d.notify.emailEnabled) throw new AppError('email_not_configured', 'recipients: sending links by email needs SMTP_URL');
    const { share, token } = await d.shares.create(user.id, file, body, (trx, s, t) =>
      d.notify.linkEmailsIn(trx, {
        shareId: s.id,
        ownerId: user.id,
        ownerName: user.username,
        fileId: file.id,
        fileName: file.name,
        expiresAt: s.expiresAt,
        passwordProtected: s.passwordHash !== null,
        url: `${base}/s/${t}`,
        recipients,
        message: body.message?.trim() || null,
      }),
    );
    await recordShareCreated(d.audit, req, user.id, share, undefined, recipients.length);
    const url = `${base}/s/${token}`;
    const sent = recipients.map((address) => ({ address, status: 'pending' as const, sentAt: null }));
    res.status(201).json({ ...presentShare(share), ...(sent.length ? { recipients: sent } : {}), url, token });
  });

  r.op('createBundle', async (req, res) => {
    const { user } = principal(req);
    const body = parse(bundleCreateBody, req.body);
    if (body.fileIds.length > d.bundleMaxFiles) throw new AppError('validation_error', `fileIds: at most ${d.bundleMaxFiles} files in one link`);
    if (body.expiresInSeconds !== undefined && body.expiresInSeconds > d.maxTtlSeconds) {
      throw new AppError('validation_error', `expiresInSeconds: must be at most ${d.maxTtlSeconds}`);
    }
    // Another user's file is indistinguishable from none (vault.get answers not_found for both).
    const files = [];
    for (const id of body.fileIds) files.push(await d.vault.get(user.id, id));
    const { fileIds: _ids, ...options } = body;
    const { share, token } = await d.shares.createBundle(user.id, files, options);
    await recordShareCreated(d.audit, req, user.id, share);
    const url = `${publicBase(req, d.publicUrl)}/s/${token}`;
    res.status(201).json({ ...presentShare(share, body.fileIds), url, token });
  });

  r.op('listShares', async (req, res) => {
    const { user } = principal(req);
    const file = await d.vault.get(user.id, String(req.params.id));
    const list = await d.shares.repo.listForFile(file.id);
    const sentTo = await d.notify.recipientsOf(list.map((s) => s.id));
    const presented = await presentShares(d.bundles, list);
    res.json({ shares: presented.map((s) => withRecipients(s, sentTo.get(s.id))) });
  });

  r.op('revokeShare', async (req, res) => {
    const { user } = principal(req);
    const share = await d.shares.ownedBy(user.id, String(req.params.id));
    if (!(await d.shares.repo.revoke(share.id, user.id, Date.now()))) throw new AppError('not_found', 'no such share');
    await d.audit.record({ actor: user.id, action: 'share.revoke', outcome: 'success', subjectUserId: user.id, fileId: share.fileId, shareId: share.id, ...clientOf(req) });
    res.status(204).end();
  });
}

/** Share JSON for a list of links, with each bundle's current files. */
export async function presentShares(bundles: Pick<BundlesService, 'members'>, list: ShareRow[]): Promise<z.infer<typeof Share>[]> {
  const ids = await bundles.members.fileIdsOf(list.filter((s) => s.bundle).map((s) => s.id));
  return list.map((s) => presentShare(s, s.bundle ? (ids.get(s.id) ?? []) : [s.fileId]));
}
