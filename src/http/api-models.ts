/**
 * Response schemas: what the presenters return, as zod. The presenters are typed with these
 * (so the compiler catches a missing or extra field), the OpenAPI document is generated from
 * them, and in tests every API response is checked against them (see api-router.ts).
 * All objects are strict: a presenter that starts leaking a field fails the check.
 */
import { ERROR_CODES, type ErrorCode } from '../errors.js';
import { z } from './zod.js';

const time = z.string().datetime().openapi({ example: '2025-01-31T12:00:00.000Z' });
const id = z.string().regex(/^[0-9a-f]{32}$/).openapi({ example: '3f2a6c0e9b1d4e7f8a5b2c1d0e9f8a7b' });
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/).openapi({ description: 'SHA-256 of the plaintext, lowercase hex' });

export const FileMeta = z
  .object({
    id,
    name: z.string().openapi({ example: 'report.pdf' }),
    size: z.number().int().min(0).openapi({ description: 'bytes' }),
    mimeType: z.string().openapi({ example: 'application/pdf' }),
    sha256: sha256Hex,
    createdAt: time,
    expiresAt: time.nullable().openapi({ description: 'when the purge job crypto-shreds the file; null = kept until deleted' }),
    legalHold: z.boolean().optional().openapi({ description: 'true while the file (or its owner) is under a legal hold: it cannot be deleted and does not expire' }),
    requestId: id.optional().openapi({ description: 'only on files that came through an upload request: its id' }),
    uploaderName: z.string().nullable().optional().openapi({ description: 'only on request files: the name the uploader gave (their word)' }),
    uploaderEmail: z.string().nullable().optional().openapi({ description: 'only on request files: the email the uploader gave (their word)' }),
  })
  .strict()
  .openapi('FileMeta');

export const Hold = z
  .object({
    scope: z.enum(['file', 'user', 'request']),
    targetId: id,
    reason: z.string(),
    reference: z.string().nullable(),
    placedBy: id.openapi({ description: 'the admin who placed it' }),
    placedAt: time,
  })
  .strict()
  .openapi('LegalHold');

// Objects that add fields to another are built from its field list, not with .extend():
// extending a closed (strict) registered schema is rendered as allOf of two closed
// schemas, which no instance can satisfy.
const userFields = {
  id,
  username: z.string(),
  role: z.enum(['admin', 'user']),
  disabled: z.boolean(),
  quotaBytes: z.number().int().min(0).nullable().openapi({ description: 'per-user override; null = the server default' }),
  createdAt: time,
};
export const User = z.object(userFields).strict().openapi('User');

const channelList = z.array(z.enum(['email', 'webhook']));
export const NotificationPrefs = z
  .object({
    shareDownloaded: channelList,
    shareExhausted: channelList,
    requestUpload: channelList,
    expiringSoon: channelList,
    newSignIn: channelList,
    accountChanged: channelList,
  })
  .strict()
  .openapi('NotificationPrefs');
const notificationFields = {
  email: z.string().nullable().openapi({ description: 'where notification emails go' }),
  notifications: NotificationPrefs,
};

export const Me = z
  .object({
    ...userFields,
    ...notificationFields,
    quotaBytes: z.number().int().min(0).nullable().openapi({ description: 'effective quota; null = unlimited' }),
    usageBytes: z.number().int().min(0).openapi({ description: 'bytes stored' }),
    passwordResetAt: time.nullable().openapi({ description: 'when an administrator last set your password; null once you chose your own' }),
  })
  .strict()
  .openapi('Me');

export const MeUpdated = z
  .object({ ...userFields, ...notificationFields, revokedTokens: z.number().int().min(0).openapi({ description: 'other tokens revoked by the change (0 without a password change)' }) })
  .strict()
  .openapi('MeUpdated');

const tokenFields = { id, name: z.string(), createdAt: time, expiresAt: time, lastUsedAt: time.nullable() };
export const Token = z.object(tokenFields).strict().openapi('Token');

export const TokenCreated = z
  .object({
    ...tokenFields,
    token: z.string().regex(/^sfs_[A-Za-z0-9_-]{43}$/).openapi({ description: 'the secret: shown only in this response' }),
  })
  .strict()
  .openapi('TokenCreated');

const shareFields = {
  id,
  fileId: id.openapi({ description: "the shared file; for a bundle, its first file that is still in it" }),
  bundle: z.boolean().openapi({ description: 'true for a link to several files (createBundle)' }),
  fileIds: z.array(id).openapi({ description: 'the files behind the link, in order (one for a single-file link); deleted files are left out' }),
  expiresAt: time,
  maxDownloads: z.number().int().min(1).nullable().openapi({ description: 'null = unlimited' }),
  downloads: z.number().int().min(0).openapi({ description: 'completed downloads' }),
  bytesServed: z.number().int().min(0),
  passwordProtected: z.boolean(),
  note: z.string().nullable(),
  createdAt: time,
  revokedAt: time.nullable(),
  status: z.enum(['active', 'revoked', 'expired', 'exhausted']),
  deleteFileAfterLastDownload: z.boolean().openapi({ description: 'the file is purged once the last allowed download completed' }),
  recipients: z
    .array(z.object({ address: z.string(), status: z.enum(['pending', 'sent', 'failed']), sentAt: time.nullable() }).strict())
    .optional()
    .openapi({ description: 'who the server emailed the link to, and how each email went' }),
};
export const Share = z.object(shareFields).strict().openapi('Share');

export const ShareCreated = z
  .object({
    ...shareFields,
    url: z.string().url().openapi({ description: 'the link for the recipient (built from PUBLIC_URL when set)' }),
    token: z.string().regex(/^[A-Za-z0-9_-]{43}$/).openapi({ description: 'the link secret: shown only in this response' }),
  })
  .strict()
  .openapi('ShareCreated');

const uploadRequestFields = {
  id,
  title: z.string(),
  message: z.string(),
  createdAt: time,
  expiresAt: time,
  closedAt: time.nullable(),
  passwordProtected: z.boolean(),
  maxFiles: z.number().int().min(1),
  maxBytes: z.number().int().min(1),
  maxFileBytes: z.number().int().min(1),
  allowedTypes: z.array(z.string()).nullable().openapi({ description: 'allowed extensions; null = any' }),
  requireName: z.boolean(),
  requireEmail: z.boolean(),
  filesReceived: z.number().int().min(0),
  bytesReceived: z.number().int().min(0),
  fileRetentionSeconds: z.number().int().min(60).nullable().openapi({ description: 'seconds files arriving through it are kept; null = the retention default' }),
  status: z.enum(['active', 'closed', 'expired', 'full']),
};
export const UploadRequest = z.object(uploadRequestFields).strict().openapi('UploadRequest');
export const UploadRequestCreated = z
  .object({
    ...uploadRequestFields,
    url: z.string().url().openapi({ description: 'the link for uploaders (built from PUBLIC_URL when set)' }),
    token: z.string().regex(/^[A-Za-z0-9_-]{43}$/).openapi({ description: 'the link secret: shown only in this response' }),
  })
  .strict()
  .openapi('UploadRequestCreated');
export const UploadRequestList = z.object({ requests: z.array(UploadRequest) }).strict().openapi('UploadRequestList');
export const UploadRequestDetail = z
  .object({ ...uploadRequestFields, files: z.array(FileMeta).openapi({ description: 'what has arrived (still stored), newest first' }) })
  .strict()
  .openapi('UploadRequestDetail');
export const UploadReceipt = z
  .object({
    receivedAt: time,
    files: z.array(z.object({ name: z.string(), size: z.number().int().min(0), sha256: sha256Hex }).strict()),
  })
  .strict()
  .openapi('UploadReceipt');

export const AuditEvent = z
  .object({
    seq: z.number().int().min(1),
    at: time,
    actor: z.string().openapi({ description: 'a user id, share:<id> or anonymous' }),
    action: z.string().openapi({ example: 'file.upload' }),
    outcome: z.string().openapi({ example: 'success' }),
    fileId: id.nullable(),
    shareId: id.nullable(),
    ip: z.string().nullable(),
    userAgent: z.string().nullable(),
    details: z.record(z.unknown()),
  })
  .strict()
  .openapi('AuditEvent');

const cursor = z.string().nullable().openapi({ description: 'pass as `cursor` for the next page; null on the last page' });

export const SetupDone = z.object({ user: User }).strict().openapi('SetupDone');
export const TokenList = z.object({ tokens: z.array(Token) }).strict().openapi('TokenList');
export const UserList = z.object({ users: z.array(User) }).strict().openapi('UserList');
export const FilesUploaded = z.object({ files: z.array(FileMeta) }).strict().openapi('FilesUploaded');
export const FileUploaded = z.object({ file: FileMeta }).strict().openapi('FileUploaded');
export const FilePage = z.object({ files: z.array(FileMeta), nextCursor: cursor }).strict().openapi('FilePage');
export const ShareList = z.object({ shares: z.array(Share) }).strict().openapi('ShareList');
export const SharesRevoked = z.object({ revoked: z.number().int().min(0).openapi({ description: 'links revoked by this call' }) }).strict().openapi('SharesRevoked');
export const AuditPage = z.object({ events: z.array(AuditEvent), nextCursor: cursor }).strict().openapi('AuditPage');
/** The OpenAPI document itself (checked only loosely here; test/openapi.test.ts validates it fully). */
export const OpenApiDocument = z.object({ openapi: z.literal('3.1.0') }).passthrough().openapi('OpenApiDocument');

const codes = Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]];

const problemFields = {
  type: z.string().openapi({ example: 'urn:sfs:problem:not_found' }),
  title: z.string(),
  status: z.number().int().min(400).max(599),
  detail: z.string(),
  code: z.enum(codes).openapi({ description: 'stable machine-readable code' }),
  requestId: z.string().openapi({ description: 'quote it when reporting a problem; also in X-Request-Id' }),
};

/** RFC 9457 problem details, as every error is sent (see error-handler.ts). */
export const Problem = z.object(problemFields).strict().openapi('Problem');

/**
 * The problem schema narrowed to the codes one operation can answer with for one status.
 * A fresh object, not Problem.extend(): that would be rendered as allOf with two closed
 * schemas, which no problem could satisfy.
 */
export function problemWith(only: ErrorCode[]) {
  return z
    .object({ ...problemFields, code: z.enum(only as [ErrorCode, ...ErrorCode[]]).openapi({ description: 'stable machine-readable code' }) })
    .strict();
}

const webhookFields = { id, url: z.string(), createdAt: time };
export const Webhook = z.object(webhookFields).strict().openapi('Webhook');
export const WebhookCreated = z
  .object({ ...webhookFields, secret: z.string().regex(/^whsec_[A-Za-z0-9_-]{43}$/).openapi({ description: 'the signing secret: shown only in this response' }) })
  .strict()
  .openapi('WebhookCreated');
export const Delivery = z
  .object({
    id,
    eventId: id.openapi({ description: 'the idempotency key (SFS-Event-Id)' }),
    type: z.string().openapi({ example: 'share.downloaded' }),
    status: z.enum(['pending', 'sent', 'failed']),
    attempts: z.number().int().min(0),
    lastError: z.string().nullable().openapi({ description: 'an HTTP status or connection error code; never a secret' }),
    createdAt: time,
    lastAttemptAt: time.nullable(),
    deliveredAt: time.nullable(),
    nextAttemptAt: time.nullable(),
  })
  .strict()
  .openapi('Delivery');
export const WebhookState = z.object({ webhook: Webhook.nullable(), deliveries: z.array(Delivery) }).strict().openapi('WebhookState');
export const EventQueued = z.object({ eventId: id }).strict().openapi('EventQueued');
