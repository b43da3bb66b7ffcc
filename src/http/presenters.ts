/**
 * Shape rows into API JSON. Whitelists only: a wrapped key, a hash or a secret can never
 * reach a response by being added to a row.
 */
import type { FileRow } from '../db/files.js';
import type { TokenRow } from '../db/tokens.js';
import type { UserRow } from '../db/users.js';
import type { FileMeta, Hold, Token, UploadRequest, User } from './api-models.js';
import type { HoldRow } from '../db/holds.js';
import type { UploadRequestRow } from '../db/requests.js';
import { requestStatus } from '../services/requests.js';
import type { z } from './zod.js';

/** ISO 8601 time of a millisecond timestamp (null stays null). */
function iso(ms: number): string;
function iso(ms: number | null): string | null;
function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** FileMeta for the API; `legalHold` only where the caller looked it up. */
export function presentFile(f: FileRow, legalHold?: boolean): z.infer<typeof FileMeta> {
  const out: z.infer<typeof FileMeta> = {
    id: f.id,
    name: f.name,
    size: f.size,
    mimeType: f.mimeType,
    sha256: f.sha256.toString('hex'),
    createdAt: iso(f.createdAt),
    expiresAt: iso(f.expiresAt ?? null),
    ...(legalHold === undefined ? {} : { legalHold }),
  };
  // Only files that came through an upload request carry where from (and what the uploader said).
  if (f.requestId) Object.assign(out, { requestId: f.requestId, uploaderName: f.uploaderName ?? null, uploaderEmail: f.uploaderEmail ?? null });
  return out;
}

/** A legal hold for the API. */
export function presentHold(h: HoldRow): z.infer<typeof Hold> {
  return { scope: h.scope, targetId: h.targetId, reason: h.reason, reference: h.reference, placedBy: h.placedBy, placedAt: iso(h.placedAt) };
}

/** An upload request for its owner: never the token hash or password hash. */
export function presentRequest(r: UploadRequestRow, now = Date.now()): z.infer<typeof UploadRequest> {
  return {
    id: r.id,
    title: r.title,
    message: r.message,
    createdAt: iso(r.createdAt),
    expiresAt: iso(r.expiresAt),
    closedAt: iso(r.closedAt),
    passwordProtected: r.passwordHash !== null,
    maxFiles: r.maxFiles,
    maxBytes: r.maxBytes,
    maxFileBytes: r.maxFileBytes,
    allowedTypes: r.allowedTypes,
    requireName: r.requireName,
    requireEmail: r.requireEmail,
    filesReceived: r.filesReceived,
    bytesReceived: r.bytesReceived,
    fileRetentionSeconds: r.fileRetentionSeconds,
    status: requestStatus(r, now),
  };
}

/** A user for the API (never the password hash). */
export function presentUser(u: UserRow): z.infer<typeof User> {
  return { id: u.id, username: u.username, role: u.role, disabled: u.disabled, quotaBytes: u.quotaBytes, createdAt: iso(u.createdAt) };
}

/** A token for the API (never the secret or its hash). */
export function presentToken(t: TokenRow): z.infer<typeof Token> {
  return { id: t.id, name: t.name, createdAt: iso(t.createdAt), expiresAt: iso(t.expiresAt), lastUsedAt: iso(t.lastUsedAt) };
}

/** Opaque page cursor: base64url of "createdAt:id". */
export function encodeCursor(c: { createdAt: number; id: string } | null): string | null {
  return c ? Buffer.from(`${c.createdAt}:${c.id}`).toString('base64url') : null;
}

/** Reads a cursor from encodeCursor; null when it is not one. */
export function decodeCursor(s: string): { createdAt: number; id: string } | null {
  const m = /^(\d{1,15}):([0-9a-f]{32})$/.exec(Buffer.from(s, 'base64url').toString('utf8'));
  return m ? { createdAt: Number(m[1]), id: m[2]! } : null;
}
