/** Owner-side upload request API: create, list, one with its files, close/extend, delete. */
import type { Request } from 'express';
import type { AuditLog } from '../../services/audit.js';
import type { RequestsService, UploadRequestRow } from '../../services/requests.js';
import type { VaultService } from '../../services/vault.js';
import type { ApiRoutes } from '../api-router.js';
import { principal } from '../auth.js';
import { clientOf, publicBase } from '../context.js';
import { presentFile, presentRequest } from '../presenters.js';
import { parse, requestCreateBody, requestPatchBody } from '../schemas.js';

export interface RequestRoutesDeps {
  vault: VaultService;
  requests: RequestsService;
  audit: AuditLog;
  publicUrl: string | undefined;
}

/** The `request.create` event: the limits and whether a password is set, never the token or password. */
export async function recordRequestCreated(audit: AuditLog, req: Request, userId: string, r: UploadRequestRow, via?: string): Promise<void> {
  await audit.record({
    actor: userId,
    action: 'request.create',
    outcome: 'success',
    subjectUserId: userId,
    ...clientOf(req),
    details: {
      requestId: r.id,
      expiresAt: r.expiresAt,
      maxFiles: r.maxFiles,
      maxBytes: r.maxBytes,
      maxFileBytes: r.maxFileBytes,
      allowedTypes: r.allowedTypes,
      passwordProtected: r.passwordHash !== null,
      fileRetentionSeconds: r.fileRetentionSeconds,
      ...(via ? { via } : {}),
    },
  });
}

/** The `request.close` event (closing early, by the owner). */
export async function recordRequestClosed(audit: AuditLog, req: Request, userId: string, r: UploadRequestRow, via?: string): Promise<void> {
  await audit.record({
    actor: userId,
    action: 'request.close',
    outcome: 'success',
    subjectUserId: userId,
    ...clientOf(req),
    details: { requestId: r.id, filesReceived: r.filesReceived, bytesReceived: r.bytesReceived, ...(via ? { via } : {}) },
  });
}

/** The uploader's address of a request token. */
export function requestUrl(req: Request, publicUrl: string | undefined, token: string): string {
  return `${publicBase(req, publicUrl)}/r/${token}`;
}

/** Binds the upload request operations of the route table. */
export function requestRoutes(r: ApiRoutes, d: RequestRoutesDeps): void {
  r.op('createRequest', async (req, res) => {
    const { user } = principal(req);
    const body = parse(requestCreateBody, req.body);
    const { request, token } = await d.requests.create(user.id, body);
    await recordRequestCreated(d.audit, req, user.id, request);
    res
      .status(201)
      .location(`/api/v1/requests/${request.id}`)
      .json({ ...presentRequest(request), url: requestUrl(req, d.publicUrl, token), token });
  });

  r.op('listRequests', async (req, res) => {
    const { user } = principal(req);
    res.json({ requests: (await d.requests.repo.listForOwner(user.id)).map((x) => presentRequest(x)) });
  });

  r.op('getRequest', async (req, res) => {
    const { user } = principal(req);
    const request = await d.requests.ownedBy(user.id, String(req.params.id));
    // What has arrived and is still stored (a deleted file is gone from here too).
    const page = await d.vault.list(user.id, 1000, null, request.id);
    res.json({ ...presentRequest(request), files: page.files.map((f) => presentFile(f)) });
  });

  r.op('updateRequest', async (req, res) => {
    const { user } = principal(req);
    const body = parse(requestPatchBody, req.body);
    const { request, closed } = await d.requests.update(user.id, String(req.params.id), body);
    if (closed) await recordRequestClosed(d.audit, req, user.id, request);
    if (body.expiresInSeconds !== undefined || body.fileRetentionSeconds !== undefined) {
      await d.audit.record({ actor: user.id, action: 'request.update', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { requestId: request.id, expiresAt: request.expiresAt, fileRetentionSeconds: request.fileRetentionSeconds } });
    }
    res.json(presentRequest(request));
  });

  r.op('deleteRequest', async (req, res) => {
    const { user } = principal(req);
    const request = await d.requests.delete(user.id, String(req.params.id));
    await d.audit.record({ actor: user.id, action: 'request.delete', outcome: 'success', subjectUserId: user.id, ...clientOf(req), details: { requestId: request.id } });
    res.status(204).end();
  });
}
