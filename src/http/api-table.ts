/**
 * The one table of API routes (everything under /api/v1). The Express router is built from
 * it (api-router.ts binds each entry's handlers by operation id and refuses unbound or unknown
 * ones), and so is the OpenAPI document (openapi.ts), so the two cannot drift: a route that is
 * not here cannot be served, and one that is here is documented with the very zod schemas its
 * handler validates with.
 */
import type { ErrorCode } from '../errors.js';
import * as M from './api-models.js';
import { auditQuery, bundleCreateBody, fileListQuery, filePatchBody, holdBody, idParam, listQuery, mePatchBody, requestCreateBody, requestPatchBody, setupBody, shareCreateBody, tokenCreateBody, userCreateBody, userPatchBody, webhookBody } from './schemas.js';
import { z } from './zod.js';

type Schema = z.ZodTypeAny;

/** What one API operation accepts and answers; see API below. */
export interface ApiOperation {
  method: 'get' | 'post' | 'put' | 'patch' | 'delete' | 'head' | 'options';
  /** Express path under /api/v1 (`:param` syntax), or under `mount` when set. */
  path: string;
  /** Set ('' = the site root) for routes served outside /api/v1 and only documented here (OUTSIDE_API). */
  mount?: string;
  tag: string;
  summary: string;
  description?: string;
  /** `none`: public; `token`: a bearer token; `admin`: a bearer token of an admin. Enforced by the router. */
  auth: 'none' | 'token' | 'admin';
  params?: z.AnyZodObject;
  query?: z.AnyZodObject;
  /** Request headers worth documenting (all optional). */
  headers?: z.AnyZodObject;
  /**
   * The request body. `json` bodies are parsed by the handler with exactly this schema;
   * `multipart` and `binary` bodies are streamed (multer / raw) and the schema only describes them.
   */
  body?: { kind: 'json'; schema: Schema } | { kind: 'multipart'; schema: Schema } | { kind: 'binary' };
  /** Success responses by status. Without `schema` the body is empty (204) or the file's bytes. */
  responses: Record<number, { description: string; schema?: Schema; binary?: boolean; headers?: z.AnyZodObject }>;
  /** Error codes the operation itself can answer with; the generic ones are added by commonErrors(). */
  errors: ErrorCode[];
}

const fileIdParams = z.object({ id: idParam.openapi({ description: 'file id' }) });
const shareIdParams = z.object({ id: idParam.openapi({ description: 'share id' }) });

const downloadHeaders = z.object({
  'Content-Disposition': z.string().openapi({ description: 'attachment, with an RFC 6266 filename* for any Unicode name' }),
  'Content-Length': z.string(),
  ETag: z.string().openapi({ description: '"<sha256 hex>"' }),
  'Repr-Digest': z.string().openapi({ description: 'sha-256=:<base64>: (RFC 9530), the whole file' }),
  'Accept-Ranges': z.literal('bytes'),
  'Content-Security-Policy': z.string().openapi({ description: "sandbox; default-src 'none'" }),
  'Cache-Control': z.string(),
});
const partialHeaders = downloadHeaders.extend({ 'Content-Range': z.string().openapi({ description: 'bytes START-END/SIZE' }) });
const rangeHeaders = z.object({
  Range: z.string().optional().openapi({ description: 'one range: bytes=a-b, bytes=a- or bytes=-n; others are ignored (200)' }),
  'If-Range': z.string().optional().openapi({ description: 'the ETag; a stale one yields the full file' }),
});
const location = z.object({ Location: z.string().openapi({ description: 'URL of the new resource' }) });

const multipartFiles = z
  .object({
    sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/)
      .optional()
      .openapi({ description: 'hex SHA-256 of the file part that FOLLOWS this field; a mismatch is 422 and stores nothing' }),
    file: z.array(z.string().openapi({ format: 'binary' })).min(1).openapi({ description: 'one or more file parts (MAX_FILES_PER_REQUEST, default 20)' }),
    expiresInSeconds: z
      .string()
      .regex(/^\d+$/)
      .optional()
      .openapi({ description: 'lifetime of the uploaded files in seconds (default FILE_DEFAULT_RETENTION, at most FILE_MAX_RETENTION); also as a query parameter' }),
  })
  .openapi('MultipartFiles');

const retentionQuery = z.object({
  expiresInSeconds: z
    .string()
    .regex(/^\d+$/)
    .optional()
    .openapi({ description: 'lifetime of the file in seconds (default FILE_DEFAULT_RETENTION; over FILE_MAX_RETENTION is 400 and stores nothing)' }),
});
const holdResponses = { 200: { description: 'the hold as stored (placing it again replaces reason and reference)', schema: M.Hold } };

const uploadErrors: ErrorCode[] = ['file_too_large', 'quota_exceeded', 'checksum_mismatch', 'insufficient_storage', 'validation_error', 'bad_request'];

/** Every API operation, by operation id. Order is the order routes are matched and documented. */
export const API = {
  // --- Setup and tokens (no token needed) ---
  setup: {
    method: 'post',
    path: '/setup',
    tag: 'Setup and tokens',
    summary: 'Create the first admin with the one-time setup code',
    description: 'Only while no user exists. The code is printed at first start and written to data/setup-code. Rate-limited.',
    auth: 'none',
    body: { kind: 'json', schema: setupBody },
    responses: { 201: { description: 'the first admin was created; setup is now closed for good', schema: M.SetupDone } },
    errors: ['validation_error', 'forbidden', 'setup_closed', 'rate_limited'],
  },
  createToken: {
    method: 'post',
    path: '/auth/tokens',
    tag: 'Setup and tokens',
    summary: 'Get an API token with a username and password',
    description:
      'The token is shown only in this response (the server keeps a hash). Rate-limited per IP and per IP+username (shared with password changes). A disabled account is named as such (403 account_disabled) only after its correct password; so is an account linked to single sign-on while OIDC_DISABLE_LOCAL_PASSWORDS is on (403 sso_required: create tokens on the /tokens page after signing in with the provider). An account with a second factor also needs `otp` (a TOTP code or a recovery code): without it 401 otp_required, a wrong or reused one 401 otp_invalid (counted like a wrong password). An account REQUIRE_2FA covers that has no factor yet gets 401 mfa_enrolment_required.',
    auth: 'none',
    body: { kind: 'json', schema: tokenCreateBody },
    responses: { 201: { description: 'the new token', schema: M.TokenCreated } },
    errors: ['validation_error', 'unauthorized', 'account_disabled', 'sso_required', 'rate_limited', 'otp_required', 'otp_invalid', 'mfa_enrolment_required', 'integrity_error'],
  },
  // --- The caller's own account ---
  listTokens: {
    method: 'get',
    path: '/auth/tokens',
    tag: 'Account',
    summary: 'List your API tokens (no secrets)',
    auth: 'token',
    responses: { 200: { description: 'your tokens, with lastUsedAt', schema: M.TokenList } },
    errors: [],
  },
  revokeToken: {
    method: 'delete',
    path: '/auth/tokens/:id',
    tag: 'Account',
    summary: 'Revoke one of your API tokens',
    auth: 'token',
    params: z.object({ id: idParam.openapi({ description: 'token id' }) }),
    responses: { 204: { description: 'revoked' } },
    errors: ['not_found'],
  },
  getMe: {
    method: 'get',
    path: '/me',
    tag: 'Account',
    summary: 'Who am I, with storage use and quota',
    auth: 'token',
    responses: { 200: { description: 'the caller', schema: M.Me } },
    errors: [],
  },
  updateMe: {
    method: 'patch',
    path: '/me',
    tag: 'Account',
    summary: 'Change your password (revokes your other tokens) and/or your notification settings',
    description:
      'Wrong current passwords count against the same per-IP and per-account budgets as sign-in (429 when spent). ' +
      '`email` is where notification emails go; `notifications` chooses, per event, the channels (`email`, `webhook`) it is sent on; events not named keep theirs.',
    auth: 'token',
    body: { kind: 'json', schema: mePatchBody },
    responses: { 200: { description: 'changed', schema: M.MeUpdated } },
    errors: ['validation_error', 'forbidden', 'rate_limited'],
  },
  // --- Notifications: webhooks ---
  getMyWebhook: {
    method: 'get',
    path: '/me/webhook',
    tag: 'Notifications',
    summary: 'Your webhook (no secret) and its latest deliveries',
    auth: 'token',
    responses: { 200: { description: 'the webhook (null when none) and the delivery log, newest first', schema: M.WebhookState } },
    errors: [],
  },
  setMyWebhook: {
    method: 'put',
    path: '/me/webhook',
    tag: 'Notifications',
    summary: 'Set your webhook URL (a new signing secret, shown once)',
    description:
      'https:// (or http:// to a loopback address). A URL resolving to a private, loopback or link-local address is refused unless WEBHOOK_ALLOW_PRIVATE is set; ' +
      'the address is checked again at every connection. Each delivery is signed: `SFS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.',
    auth: 'token',
    body: { kind: 'json', schema: webhookBody },
    responses: { 200: { description: 'set; `secret` is shown only here', schema: M.WebhookCreated } },
    errors: ['validation_error', 'webhook_url_refused'],
  },
  deleteMyWebhook: {
    method: 'delete',
    path: '/me/webhook',
    tag: 'Notifications',
    summary: 'Remove your webhook',
    auth: 'token',
    responses: { 204: { description: 'removed' } },
    errors: ['not_found'],
  },
  testMyWebhook: {
    method: 'post',
    path: '/me/webhook/test',
    tag: 'Notifications',
    summary: 'Queue a webhook.test event to your webhook',
    auth: 'token',
    responses: { 202: { description: 'queued; see the delivery log', schema: M.EventQueued } },
    errors: ['not_found'],
  },
  getAdminWebhook: {
    method: 'get',
    path: '/admin/webhook',
    tag: 'Notifications',
    summary: 'The admin-wide webhook (the audit stream) and its latest deliveries',
    auth: 'admin',
    responses: { 200: { description: 'the webhook (null when none) and the delivery log', schema: M.WebhookState } },
    errors: [],
  },
  setAdminWebhook: {
    method: 'put',
    path: '/admin/webhook',
    tag: 'Notifications',
    summary: 'Set the admin-wide webhook: every audit event is posted to it (a new secret, shown once)',
    auth: 'admin',
    body: { kind: 'json', schema: webhookBody },
    responses: { 200: { description: 'set; `secret` is shown only here', schema: M.WebhookCreated } },
    errors: ['validation_error', 'webhook_url_refused'],
  },
  deleteAdminWebhook: {
    method: 'delete',
    path: '/admin/webhook',
    tag: 'Notifications',
    summary: 'Remove the admin-wide webhook',
    auth: 'admin',
    responses: { 204: { description: 'removed' } },
    errors: ['not_found'],
  },
  testAdminWebhook: {
    method: 'post',
    path: '/admin/webhook/test',
    tag: 'Notifications',
    summary: 'Queue a webhook.test event to the admin-wide webhook',
    auth: 'admin',
    responses: { 202: { description: 'queued', schema: M.EventQueued } },
    errors: ['not_found'],
  },
  // --- Admin: users ---
  createUser: {
    method: 'post',
    path: '/users',
    tag: 'Users (admin)',
    summary: 'Create a user',
    auth: 'admin',
    body: { kind: 'json', schema: userCreateBody },
    responses: { 201: { description: 'created', schema: M.User, headers: location } },
    errors: ['validation_error', 'conflict'],
  },
  listUsers: {
    method: 'get',
    path: '/users',
    tag: 'Users (admin)',
    summary: 'List users',
    auth: 'admin',
    responses: { 200: { description: 'all users', schema: M.UserList } },
    errors: [],
  },
  updateUser: {
    method: 'patch',
    path: '/users/:id',
    tag: 'Users (admin)',
    summary: 'Disable, change role, reset password or set quota',
    description: "A disabled user's tokens stop working at once. The last active admin cannot be demoted or disabled.",
    auth: 'admin',
    params: z.object({ id: idParam.openapi({ description: 'user id' }) }),
    body: { kind: 'json', schema: userPatchBody },
    responses: { 200: { description: 'the updated user', schema: M.User } },
    errors: ['validation_error', 'not_found', 'conflict'],
  },
  listUserShares: {
    method: 'get',
    path: '/users/:id/shares',
    tag: 'Users (admin)',
    summary: "A user's share links, newest first (no tokens)",
    description: 'For revoking links of a user who left or whose account is at risk. Lists revoked and expired links too.',
    auth: 'admin',
    params: z.object({ id: idParam.openapi({ description: 'user id' }) }),
    responses: { 200: { description: 'the links', schema: M.ShareList } },
    errors: ['not_found'],
  },
  revokeUserShares: {
    method: 'delete',
    path: '/users/:id/shares',
    tag: 'Users (admin)',
    summary: "Revoke every live share link of a user at once",
    auth: 'admin',
    params: z.object({ id: idParam.openapi({ description: 'user id' }) }),
    responses: { 200: { description: 'how many links were revoked', schema: M.SharesRevoked } },
    errors: ['not_found'],
  },
  revokeUserShare: {
    method: 'delete',
    path: '/users/:id/shares/:shareId',
    tag: 'Users (admin)',
    summary: "Revoke one of a user's share links",
    auth: 'admin',
    params: z.object({ id: idParam.openapi({ description: 'user id' }), shareId: idParam.openapi({ description: 'share id' }) }),
    responses: { 204: { description: 'revoked' } },
    errors: ['not_found'],
  },
  // --- Files ---
  uploadFiles: {
    method: 'post',
    path: '/files',
    tag: 'Files',
    summary: 'Upload one or more files (multipart/form-data, parts named "file")',
    description:
      'Each part is encrypted as it streams. Over MAX_FILE_SIZE or the quota the upload is stopped at once with 413 and ' +
      '`Connection: close`; a failed upload leaves nothing behind.',
    auth: 'token',
    query: retentionQuery,
    body: { kind: 'multipart', schema: multipartFiles },
    responses: { 201: { description: 'stored', schema: M.FilesUploaded } },
    errors: [...uploadErrors, 'too_many_files', 'payload_too_large', 'unsupported_media_type', 'checksum_field_order'],
  },
  uploadRaw: {
    method: 'put',
    path: '/uploads/:name',
    tag: 'Files',
    summary: 'Upload one file as the raw request body (curl -T)',
    description:
      'The name comes from the path (`curl -T report.pdf $BASE/api/v1/uploads/` appends it). A Content-Length over the limit ' +
      'is refused before the body is read, also instead of `100 Continue`. Partial PUT is not supported: a request with ' +
      '`Content-Range` is refused with 400 `partial_put_unsupported` and stores nothing.',
    auth: 'token',
    params: z.object({ name: z.string().min(1).openapi({ description: 'file name (cleaned, never used as a path)' }) }),
    query: retentionQuery,
    headers: z.object({
      'Content-Digest': z.string().optional().openapi({ description: 'sha-256=:<base64>: checked against the received bytes (422 on mismatch)' }),
      'Repr-Digest': z.string().optional().openapi({ description: 'same as Content-Digest' }),
    }),
    body: { kind: 'binary' },
    responses: { 201: { description: 'stored', schema: M.FileUploaded, headers: location } },
    errors: [...uploadErrors, 'partial_put_unsupported'],
  },
  listFiles: {
    method: 'get',
    path: '/files',
    tag: 'Files',
    summary: 'List your files, newest first',
    description: 'Files that came through an upload request carry `requestId`, `uploaderName` and `uploaderEmail`; `requestId=` lists only those of one request.',
    auth: 'token',
    query: fileListQuery,
    responses: { 200: { description: 'one page', schema: M.FilePage } },
    errors: ['validation_error'],
  },
  getFile: {
    method: 'get',
    path: '/files/:id',
    tag: 'Files',
    summary: "A file's metadata",
    description: "Another user's file is 404, exactly like a missing one.",
    auth: 'token',
    params: fileIdParams,
    responses: { 200: { description: 'the metadata', schema: M.FileMeta } },
    errors: ['not_found'],
  },
  headFileContent: {
    method: 'head',
    path: '/files/:id/content',
    tag: 'Files',
    summary: 'Download headers only (nothing is decrypted)',
    auth: 'token',
    params: fileIdParams,
    headers: rangeHeaders,
    responses: {
      200: { description: 'headers of the whole file', headers: downloadHeaders },
      206: { description: 'headers of the range', headers: partialHeaders },
    },
    errors: ['not_found', 'range_not_satisfiable'],
  },
  getFileContent: {
    method: 'get',
    path: '/files/:id/content',
    tag: 'Files',
    summary: 'Download a file (Range supported)',
    description:
      'Every chunk is authenticated before it is sent and a full download is checked against the stored SHA-256; if anything ' +
      'fails after the headers went out, the connection is cut (never a clean end).',
    auth: 'token',
    params: fileIdParams,
    headers: rangeHeaders,
    responses: {
      200: { description: 'the whole file', binary: true, headers: downloadHeaders },
      206: { description: 'the requested range', binary: true, headers: partialHeaders },
    },
    // key_unavailable (503): the file is wrapped under a master key the server does not hold yet.
    errors: ['not_found', 'range_not_satisfiable', 'integrity_error', 'key_unavailable'],
  },
  updateFile: {
    method: 'patch',
    path: '/files/:id',
    tag: 'Files',
    summary: "Change a file's expiry",
    description:
      'The purge job crypto-shreds the file at `expiresAt`. The new expiry counts from now and may be at most FILE_MAX_RETENTION after ' +
      'the upload; `null` (keep until deleted) only when no FILE_MAX_RETENTION is set.',
    auth: 'token',
    params: fileIdParams,
    body: { kind: 'json', schema: filePatchBody },
    responses: { 200: { description: 'the file with its new expiry', schema: M.FileMeta } },
    errors: ['not_found', 'validation_error'],
  },
  deleteFile: {
    method: 'delete',
    path: '/files/:id',
    tag: 'Files',
    summary: 'Delete a file (its key is destroyed with the row) and revoke its links',
    description: 'A file under a legal hold (its own, or its owner\'s) cannot be deleted by anyone: 409 `legal_hold`.',
    auth: 'token',
    params: fileIdParams,
    responses: { 204: { description: 'deleted' } },
    errors: ['not_found', 'legal_hold'],
  },
  // --- Legal holds (admin) ---
  putFileHold: {
    method: 'put',
    path: '/files/:id/hold',
    tag: 'Legal holds (admin)',
    summary: 'Put a file under legal hold',
    description: 'A held file cannot be deleted by anyone and does not expire (the purge job skips it); its links can still be revoked. Audited (hold.place).',
    auth: 'admin',
    params: fileIdParams,
    body: { kind: 'json', schema: holdBody },
    responses: holdResponses,
    errors: ['not_found'],
  },
  deleteFileHold: {
    method: 'delete',
    path: '/files/:id/hold',
    tag: 'Legal holds (admin)',
    summary: "Release a file's legal hold",
    description: 'Audited (hold.release). A file past its expiry is purged at the next pass.',
    auth: 'admin',
    params: fileIdParams,
    responses: { 204: { description: 'released' } },
    errors: ['not_found'],
  },
  putUserHold: {
    method: 'put',
    path: '/users/:id/hold',
    tag: 'Legal holds (admin)',
    summary: "Put all of a user's files under legal hold",
    description: 'Holds every file the user owns now or uploads later; the user cannot be deleted meanwhile. Audited (hold.place).',
    auth: 'admin',
    params: z.object({ id: idParam.openapi({ description: 'user id' }) }),
    body: { kind: 'json', schema: holdBody },
    responses: holdResponses,
    errors: ['not_found'],
  },
  deleteUserHold: {
    method: 'delete',
    path: '/users/:id/hold',
    tag: 'Legal holds (admin)',
    summary: "Release a user's legal hold",
    auth: 'admin',
    params: z.object({ id: idParam.openapi({ description: 'user id' }) }),
    responses: { 204: { description: 'released' } },
    errors: ['not_found'],
  },
  // --- Sharing ---
  createShare: {
    method: 'post',
    path: '/files/:id/shares',
    tag: 'Sharing',
    summary: 'Create a share link (expiry, download limit, password)',
    description:
      'The recipient downloads with `GET /s/{token}/content` (no account; a password as HTTP Basic auth with any user name). ' +
      'Defaults: 7 days (SHARE_DEFAULT_TTL), at most SHARE_MAX_TTL; maxDownloads absent or null = unlimited. ' +
      '`recipients`: the server emails each address the link URL (with `message`), never the password; the addresses are recorded on the link (`recipients` in listShares).',
    auth: 'token',
    params: fileIdParams,
    body: { kind: 'json', schema: shareCreateBody },
    responses: { 201: { description: 'the link; `url` and `token` are shown only here', schema: M.ShareCreated } },
    errors: ['not_found', 'validation_error', 'email_not_configured'],
  },
  listShares: {
    method: 'get',
    path: '/files/:id/shares',
    tag: 'Sharing',
    summary: "A file's share links (no tokens)",
    auth: 'token',
    params: fileIdParams,
    responses: { 200: { description: 'the links', schema: M.ShareList } },
    errors: ['not_found'],
  },
  createBundle: {
    method: 'post',
    path: '/shares',
    tag: 'Sharing',
    summary: 'Create one link to several files (a bundle), with the same expiry, download limit and password options',
    description:
      'The recipient page lists each file (name, size, SHA-256) with its own download (`GET /s/{token}/files/{fileId}`) and ' +
      '"Download all (.zip)" (`GET /s/{token}/zip`: stored entries, ZIP64 where needed, Content-Length, strong ETag, Range). ' +
      'A bundle has one budget: a completed zip, or a completed file, is one download; downloads under one ticket (the page\'s links) ' +
      'count once together. At most BUNDLE_MAX_FILES files; every id must be one of your files (else 404 not_found). ' +
      'Deleting a file removes it from the bundle; the link keeps the others.',
    auth: 'token',
    body: { kind: 'json', schema: bundleCreateBody },
    responses: { 201: { description: 'the link; `url` and `token` are shown only here', schema: M.ShareCreated } },
    errors: ['not_found', 'validation_error'],
  },
  revokeShare: {
    method: 'delete',
    path: '/shares/:id',
    tag: 'Sharing',
    summary: 'Revoke a share link at once',
    auth: 'token',
    params: shareIdParams,
    responses: { 204: { description: 'revoked' } },
    errors: ['not_found'],
  },
  // --- Upload requests ---
  createRequest: {
    method: 'post',
    path: '/requests',
    tag: 'Upload requests',
    summary: 'Ask outsiders for files: an upload link with limits, expiry and an optional password',
    description:
      'Uploaders need no account: they open `url` in a browser, or send with curl (`curl -T FILE URL/`, `curl -F file=@a -F file=@b URL`; ' +
      '`-u :PASSWORD` when protected). Files arrive encrypted like your own uploads, owned by you and counted in your quota. ' +
      '`token` and `url` are shown only here. Unknown, expired, closed and full requests all answer uploaders the same 404.',
    auth: 'token',
    body: { kind: 'json', schema: requestCreateBody },
    responses: { 201: { description: 'the request; `url` and `token` are shown only here', schema: M.UploadRequestCreated, headers: location } },
    errors: ['validation_error', 'retention_exceeded'],
  },
  listRequests: {
    method: 'get',
    path: '/requests',
    tag: 'Upload requests',
    summary: 'Your upload requests, newest first (no tokens)',
    auth: 'token',
    responses: { 200: { description: 'the requests', schema: M.UploadRequestList } },
    errors: [],
  },
  getRequest: {
    method: 'get',
    path: '/requests/:id',
    tag: 'Upload requests',
    summary: 'An upload request with the files that have arrived through it',
    auth: 'token',
    params: z.object({ id: idParam.openapi({ description: 'request id' }) }),
    responses: { 200: { description: 'the request and its files', schema: M.UploadRequestDetail } },
    errors: ['not_found'],
  },
  updateRequest: {
    method: 'patch',
    path: '/requests/:id',
    tag: 'Upload requests',
    summary: 'Close a request early, move its expiry, or change the retention of later arrivals',
    description: 'Closing is for good, and takes effect for uploads already in flight: they are refused at their commit.',
    auth: 'token',
    params: z.object({ id: idParam.openapi({ description: 'request id' }) }),
    body: { kind: 'json', schema: requestPatchBody },
    responses: { 200: { description: 'the updated request', schema: M.UploadRequest } },
    errors: ['not_found', 'validation_error', 'retention_exceeded'],
  },
  deleteRequest: {
    method: 'delete',
    path: '/requests/:id',
    tag: 'Upload requests',
    summary: 'Delete an upload request (the files that came through it stay yours)',
    auth: 'token',
    params: z.object({ id: idParam.openapi({ description: 'request id' }) }),
    responses: { 204: { description: 'deleted' } },
    errors: ['not_found', 'legal_hold'],
  },
  putRequestHold: {
    method: 'put',
    path: '/requests/:id/hold',
    tag: 'Legal holds (admin)',
    summary: 'Put every file that came through an upload request under legal hold',
    description: 'The request cannot be deleted meanwhile (409 legal_hold). Audited (hold.place).',
    auth: 'admin',
    params: z.object({ id: idParam.openapi({ description: 'request id' }) }),
    body: { kind: 'json', schema: holdBody },
    responses: holdResponses,
    errors: ['not_found'],
  },
  deleteRequestHold: {
    method: 'delete',
    path: '/requests/:id/hold',
    tag: 'Legal holds (admin)',
    summary: "Release an upload request's legal hold",
    auth: 'admin',
    params: z.object({ id: idParam.openapi({ description: 'request id' }) }),
    responses: { 204: { description: 'released' } },
    errors: ['not_found'],
  },
  // --- Audit ---
  listAudit: {
    method: 'get',
    path: '/audit',
    tag: 'Audit',
    summary: 'The audit log, newest first',
    description: 'Admins see every event; users see events on their own files and account.',
    auth: 'token',
    query: auditQuery,
    responses: { 200: { description: 'one page', schema: M.AuditPage } },
    errors: ['validation_error'],
  },
  // --- This document ---
  getOpenApi: {
    method: 'get',
    path: '/openapi.json',
    tag: 'Meta',
    summary: 'This OpenAPI 3.1 document',
    auth: 'none',
    responses: { 200: { description: 'the document', schema: M.OpenApiDocument } },
    errors: [],
  },
} as const satisfies Record<string, ApiOperation>;

export type OperationId = keyof typeof API;

const shareTokenParams = z.object({ token: z.string().openapi({ description: 'the link secret (43 characters) from createShare' }) });
const health = z.object({ status: z.literal('ok') }).strict().openapi('Health');
const bundleFileParams = shareTokenParams.extend({ fileId: idParam.openapi({ description: 'a file id from the bundle page' }) });
const zipHeaders = z.object({
  'Content-Disposition': z.string().openapi({ description: 'attachment; filename="shared-files.zip"' }),
  'Content-Length': z.string(),
  ETag: z.string().openapi({ description: 'a strong validator of the zip\'s bytes: changes when a file leaves the bundle' }),
  'Accept-Ranges': z.literal('bytes'),
  'Content-Security-Policy': z.string().openapi({ description: "sandbox; default-src 'none'" }),
  'Cache-Control': z.string(),
});
const zipPartialHeaders = zipHeaders.extend({ 'Content-Range': z.string().openapi({ description: 'bytes START-END/SIZE' }) });
const shareContentDescription =
  'No account needed. A link with a password takes it as HTTP Basic auth with any user name (`curl -u :PASSWORD -OJ URL`); ' +
  'without it, or with a wrong one, the answer is 401 with `WWW-Authenticate: Basic`, and wrong passwords are rate-limited ' +
  'per address and per link. Unknown, revoked, expired and used-up links all answer the same 404.';

const requestTokenParams = z.object({ token: z.string().openapi({ description: 'the upload link secret (43 characters) from createRequest' }) });
const requestMultipart = z
  .object({
    name: z.string().max(200).optional().openapi({ description: "the uploader's name (required when the request says so)" }),
    email: z.string().max(254).optional().openapi({ description: "the uploader's email (required when the request says so)" }),
    file: z.array(z.string().openapi({ format: 'binary' })).min(1),
  })
  .openapi('RequestMultipartFiles');
const requestUploadDescription =
  'No account needed. A protected request takes its password as HTTP Basic auth with any user name (`curl -u :PASSWORD`). ' +
  'Every limit is enforced while the bytes stream (413 with `Connection: close`, nothing stored): maxFileBytes (`file_too_large`), ' +
  'maxFiles (`too_many_files`), maxBytes across all uploads in flight (`request_limit_exceeded`); a type the request does not take, ' +
  'by extension or by content, is 415 `file_type_not_allowed`. Unknown, expired, closed and full requests all answer the same 404. ' +
  'A browser (Origin, Sec-Fetch-Site or a cookie) must send the page\'s CSRF token (X-CSRF-Token or `_csrf`). Rate-limited per address and per request.';
const requestUploadErrors: ErrorCode[] = [
  'not_found',
  'unauthorized',
  'csrf_invalid',
  'rate_limited',
  'file_too_large',
  'too_many_files',
  'request_limit_exceeded',
  'file_type_not_allowed',
  'quota_exceeded',
  'payload_too_large',
  'unsupported_media_type',
  'insufficient_storage',
  'validation_error',
  'bad_request',
];
const API_MOUNT = '/api/v1';
const tusIdParams = z.object({ id: idParam.openapi({ description: 'upload id (the file id once complete)' }) });
const tusRequestHeaders = z.object({ 'Tus-Resumable': z.literal('1.0.0') });
const tusDiscovery = z.object({
  'Tus-Resumable': z.literal('1.0.0'),
  'Tus-Version': z.literal('1.0.0'),
  'Tus-Extension': z.string().openapi({ description: 'creation,creation-with-upload,termination,expiration,checksum' }),
  'Tus-Max-Size': z.string().openapi({ description: 'MAX_FILE_SIZE' }),
  'Tus-Checksum-Algorithm': z.literal('sha256'),
});
const tusResult = z.object({
  'Tus-Resumable': z.literal('1.0.0'),
  'Upload-Offset': z.string().openapi({ description: 'committed plaintext bytes' }),
  'Upload-Expires': z.string().openapi({ description: 'HTTP date; moved on by every committed PATCH (TUS_EXPIRY_SECONDS)' }),
  'Upload-File-Id': z.string().optional().openapi({ description: 'once complete: the id of the file the upload became' }),
  'Upload-File-Sha256': z.string().optional().openapi({ description: 'once complete: hex SHA-256 of the whole file' }),
});
const tusPatchErrors: ErrorCode[] = ['upload_offset_mismatch', 'upload_locked', 'upload_expired', 'upload_length_exceeded', 'tus_checksum_mismatch', 'insufficient_storage', 'integrity_error', 'key_unavailable'];
const requestTusErrors: ErrorCode[] = ['not_found', 'unauthorized', 'rate_limited', 'file_too_large', 'file_type_not_allowed', 'request_limit_exceeded', 'tus_version_unsupported'];
const requestTusDescription =
  'tus 1.0 (as /api/v1/tus/) for outsiders: no account, the password of a protected request as HTTP Basic (any user name) or ' +
  "the page's ticket (`X-Upload-Ticket`). Unknown, expired, closed and full requests, and another request's upload, are all the same 404.";
const tusDescription =
  'tus 1.0 with the creation, creation-with-upload, termination, expiration and checksum (sha256) extensions, for any tus ' +
  'client (tus-js-client, Uppy, tus-py-client, curl). Every other request needs `Tus-Resumable: 1.0.0` (412 otherwise) and a ' +
  'bearer token.';

/**
 * Routes served outside /api/v1 (the recipient download and the health checks, bound in
 * app.ts and routes/recipient.ts) or outside its router (tus, routes/tus.ts), documented in the same OpenAPI document so clients and
 * monitoring can find them. The API router does not serve these.
 */
export const OUTSIDE_API = {
  getShareContent: {
    method: 'get',
    mount: '',
    path: '/s/:token/content',
    tag: 'Recipients',
    summary: 'Download a shared file (Range supported)',
    description: shareContentDescription,
    auth: 'none',
    params: shareTokenParams,
    headers: rangeHeaders,
    responses: {
      200: { description: 'the whole file', binary: true, headers: downloadHeaders },
      206: { description: 'the requested range', binary: true, headers: partialHeaders },
    },
    errors: ['not_found', 'unauthorized', 'rate_limited', 'range_not_satisfiable', 'integrity_error'],
  },
  headShareContent: {
    method: 'head',
    mount: '',
    path: '/s/:token/content',
    tag: 'Recipients',
    summary: 'Download headers of a shared file (nothing is decrypted, no download is counted)',
    description: shareContentDescription,
    auth: 'none',
    params: shareTokenParams,
    headers: rangeHeaders,
    responses: {
      200: { description: 'headers of the whole file', headers: downloadHeaders },
      206: { description: 'headers of the range', headers: partialHeaders },
    },
    errors: ['not_found', 'unauthorized', 'rate_limited', 'range_not_satisfiable'],
  },
  getShareFile: {
    method: 'get',
    mount: '',
    path: '/s/:token/files/:fileId',
    tag: 'Recipients',
    summary: 'Download one file of a bundle link (Range supported)',
    description: shareContentDescription + ' A file deleted by its owner since answers 404.',
    auth: 'none',
    params: bundleFileParams,
    headers: rangeHeaders,
    responses: {
      200: { description: 'the whole file', binary: true, headers: downloadHeaders },
      206: { description: 'the requested range', binary: true, headers: partialHeaders },
    },
    errors: ['not_found', 'unauthorized', 'rate_limited', 'range_not_satisfiable', 'integrity_error', 'key_unavailable'],
  },
  headShareFile: {
    method: 'head',
    mount: '',
    path: '/s/:token/files/:fileId',
    tag: 'Recipients',
    summary: 'Download headers of one file of a bundle link (nothing is decrypted, no download is counted)',
    description: shareContentDescription,
    auth: 'none',
    params: bundleFileParams,
    headers: rangeHeaders,
    responses: {
      200: { description: 'headers of the whole file', headers: downloadHeaders },
      206: { description: 'headers of the range', headers: partialHeaders },
    },
    errors: ['not_found', 'unauthorized', 'rate_limited', 'range_not_satisfiable'],
  },
  getShareZip: {
    method: 'get',
    mount: '',
    path: '/s/:token/zip',
    tag: 'Recipients',
    summary: 'Download every file of a bundle link as one zip (Range supported: `curl -C -` resumes)',
    description:
      shareContentDescription +
      ' The zip is streamed from the decrypted, verified files, never stored: entries are stored (no compression) with UTF-8 names, ' +
      'ZIP64 where a size or offset needs it (or always with BUNDLE_ZIP64=always), and fixed dates, so its bytes are known before ' +
      'streaming. A Range answer decrypts only the chunks of the files it covers. Damage found after the headers cuts the connection.',
    auth: 'none',
    params: shareTokenParams,
    headers: rangeHeaders,
    responses: {
      200: { description: 'the whole zip', binary: true, headers: zipHeaders },
      206: { description: 'the requested range of the zip', binary: true, headers: zipPartialHeaders },
    },
    errors: ['not_found', 'unauthorized', 'rate_limited', 'range_not_satisfiable', 'integrity_error', 'key_unavailable'],
  },
  headShareZip: {
    method: 'head',
    mount: '',
    path: '/s/:token/zip',
    tag: 'Recipients',
    summary: "Headers of a bundle's zip: its exact length and ETag (nothing is decrypted, no download is counted)",
    description: shareContentDescription,
    auth: 'none',
    params: shareTokenParams,
    headers: rangeHeaders,
    responses: {
      200: { description: 'headers of the whole zip', headers: zipHeaders },
      206: { description: 'headers of the range', headers: zipPartialHeaders },
    },
    errors: ['not_found', 'unauthorized', 'rate_limited', 'range_not_satisfiable'],
  },
  uploadToRequest: {
    method: 'post',
    mount: '',
    path: '/r/:token',
    tag: 'Uploaders',
    summary: 'Send files to an upload request (multipart, parts named "file")',
    description: requestUploadDescription + ' Fields `name` and `email` (before the file parts) give the uploader\'s name and email when the request asks for them.',
    auth: 'none',
    params: requestTokenParams,
    body: { kind: 'multipart', schema: requestMultipart },
    responses: { 201: { description: 'stored; the receipt lists only this upload\'s files', schema: M.UploadReceipt } },
    errors: requestUploadErrors,
  },
  putToRequest: {
    method: 'put',
    mount: '',
    path: '/r/:token/:name',
    tag: 'Uploaders',
    summary: 'Send one file to an upload request as the raw body (curl -T FILE URL/)',
    description: requestUploadDescription + ' Name and email go in the `X-Uploader-Name` and `X-Uploader-Email` headers.',
    auth: 'none',
    params: requestTokenParams.extend({ name: z.string().min(1).openapi({ description: 'file name (cleaned, never used as a path)' }) }),
    body: { kind: 'binary' },
    responses: { 201: { description: 'stored', schema: M.UploadReceipt } },
    errors: [...requestUploadErrors, 'partial_put_unsupported'],
  },
  // --- The same tus endpoint for uploaders of an upload request, at /r/<token>/tus/ ---
  requestTusOptions: {
    method: 'options',
    mount: '',
    path: '/r/:token/tus/',
    tag: 'Uploaders',
    summary: "tus discovery for an upload request's resumable endpoint",
    auth: 'none',
    params: requestTokenParams,
    responses: { 204: { description: 'what this server speaks', headers: tusDiscovery } },
    errors: [],
  },
  requestTusCreate: {
    method: 'post',
    mount: '',
    path: '/r/:token/tus/',
    tag: 'Uploaders',
    summary: 'Create a resumable upload to an upload request',
    description:
      requestTusDescription +
      ' At creation the Upload-Length is checked against maxFileBytes (413) and the name in Upload-Metadata against the ' +
      "allowed types (415); one file slot and the whole length are then held against the request's maxFiles/maxBytes " +
      '(413 too_many_files or request_limit_exceeded) until the upload completes, is terminated or expires. Name and ' +
      'email go in `X-Uploader-Name` and `X-Uploader-Email`.',
    auth: 'none',
    params: requestTokenParams,
    headers: tusRequestHeaders.extend({
      'Upload-Length': z.string().openapi({ description: 'the whole file size in bytes' }),
      'Upload-Metadata': z.string().optional().openapi({ description: '`filename <base64>,filetype <base64>`' }),
    }),
    body: { kind: 'binary' },
    responses: { 201: { description: 'created; Location is the upload URL', headers: tusResult.extend({ Location: z.string().openapi({ description: '/r/{token}/tus/{id}' }) }) } },
    errors: [...requestTusErrors, 'validation_error', 'too_many_files', 'unsupported_media_type', ...tusPatchErrors],
  },
  requestTusHead: {
    method: 'head',
    mount: '',
    path: '/r/:token/tus/:id',
    tag: 'Uploaders',
    summary: "An upload request's resumable upload: its committed offset",
    description: requestTusDescription,
    auth: 'none',
    params: requestTokenParams.merge(tusIdParams),
    headers: tusRequestHeaders,
    responses: { 200: { description: 'the offset', headers: tusResult.extend({ 'Upload-Length': z.string() }) } },
    errors: [...requestTusErrors, 'upload_expired'],
  },
  requestTusPatch: {
    method: 'patch',
    mount: '',
    path: '/r/:token/tus/:id',
    tag: 'Uploaders',
    summary: "Append bytes to an upload request's resumable upload",
    description:
      requestTusDescription +
      ' The first chunk is checked against the allowed types by its content before anything of it is stored (415, and the ' +
      'upload is dropped). The last byte commits the file to the request in one transaction that re-checks that the request ' +
      'is still open; if it closed or expired meanwhile the answer is 404, nothing is stored and the upload is dropped.',
    auth: 'none',
    params: requestTokenParams.merge(tusIdParams),
    headers: tusRequestHeaders.extend({
      'Upload-Offset': z.string().openapi({ description: 'must equal the committed offset (HEAD)' }),
      'Upload-Checksum': z.string().optional().openapi({ description: 'sha256 <base64 of the SHA-256 of this body>' }),
    }),
    body: { kind: 'binary' },
    responses: { 204: { description: 'appended; the new offset', headers: tusResult } },
    errors: [...requestTusErrors, 'validation_error', 'too_many_files', 'unsupported_media_type', ...tusPatchErrors],
  },
  requestTusDelete: {
    method: 'delete',
    mount: '',
    path: '/r/:token/tus/:id',
    tag: 'Uploaders',
    summary: "Terminate an upload request's resumable upload (its hold on the request goes too)",
    auth: 'none',
    params: requestTokenParams.merge(tusIdParams),
    headers: tusRequestHeaders,
    responses: { 204: { description: 'terminated' } },
    errors: requestTusErrors,
  },
  // --- Resumable uploads (tus 1.0), served by http/routes/tus.ts at /api/v1/tus/ ---
  tusOptions: {
    method: 'options',
    mount: API_MOUNT,
    path: '/tus/',
    tag: 'Resumable uploads (tus)',
    summary: 'tus discovery: versions, extensions, the size limit, checksum algorithms',
    description: tusDescription,
    auth: 'none',
    responses: { 204: { description: 'what this server speaks', headers: tusDiscovery } },
    errors: [],
  },
  tusCreate: {
    method: 'post',
    mount: API_MOUNT,
    path: '/tus/',
    tag: 'Resumable uploads (tus)',
    summary: 'Create a resumable upload (optionally with its first bytes)',
    description:
      'Upload-Length is required (Upload-Defer-Length is refused: the quota is reserved at creation). Over MAX_FILE_SIZE or ' +
      'the quota is 413 at creation; more than TUS_MAX_OPEN_UPLOADS open uploads is 429. A body (creation-with-upload, ' +
      '`Content-Type: application/offset+octet-stream`) is handled as the first PATCH. The DEK is generated now and stored ' +
      'wrapped; nothing is ever stored in plaintext.',
    auth: 'token',
    headers: tusRequestHeaders.extend({
      'Upload-Length': z.string().openapi({ description: 'the whole file size in bytes' }),
      'Upload-Metadata': z.string().optional().openapi({ description: '`filename <base64>,filetype <base64>`' }),
    }),
    body: { kind: 'binary' },
    responses: { 201: { description: 'created; Location is the upload URL', headers: tusResult.extend({ Location: z.string().openapi({ description: '/api/v1/tus/{id}' }) }) } },
    errors: ['validation_error', 'file_too_large', 'quota_exceeded', 'too_many_uploads', 'tus_version_unsupported', 'unsupported_media_type', ...tusPatchErrors],
  },
  tusHead: {
    method: 'head',
    mount: API_MOUNT,
    path: '/tus/:id',
    tag: 'Resumable uploads (tus)',
    summary: "An upload's committed offset (resume from there)",
    description: 'Upload-Offset is the last committed 64 KiB chunk boundary (or Upload-Length once complete). Another user\'s upload is 404.',
    auth: 'token',
    params: tusIdParams,
    headers: tusRequestHeaders,
    responses: { 200: { description: 'the offset', headers: tusResult.extend({ 'Upload-Length': z.string() }) } },
    errors: ['not_found', 'upload_expired', 'tus_version_unsupported'],
  },
  tusPatch: {
    method: 'patch',
    mount: API_MOUNT,
    path: '/tus/:id',
    tag: 'Resumable uploads (tus)',
    summary: 'Append bytes at Upload-Offset',
    description:
      'Bytes are sealed into 64 KiB chunks as they arrive; only whole chunks are committed, so after a cut the offset is a ' +
      'multiple of 65536 and the client resends the rest. The request that brings the last byte turns the upload into an ' +
      'ordinary file and names it in `Upload-File-Id` and `Upload-File-Sha256`. A second PATCH while one runs (any instance) ' +
      'is 423; a wrong offset 409; a body not matching `Upload-Checksum: sha256 <base64>` is 460 and commits nothing.',
    auth: 'token',
    params: tusIdParams,
    headers: tusRequestHeaders.extend({
      'Upload-Offset': z.string().openapi({ description: 'must equal the committed offset (HEAD)' }),
      'Upload-Checksum': z.string().optional().openapi({ description: 'sha256 <base64 of the SHA-256 of this body>' }),
    }),
    body: { kind: 'binary' },
    responses: { 204: { description: 'appended; the new offset', headers: tusResult } },
    errors: ['not_found', 'validation_error', 'tus_version_unsupported', 'unsupported_media_type', ...tusPatchErrors],
  },
  tusDelete: {
    method: 'delete',
    mount: API_MOUNT,
    path: '/tus/:id',
    tag: 'Resumable uploads (tus)',
    summary: 'Terminate an upload (its stored ciphertext is removed; a running PATCH stops)',
    auth: 'token',
    params: tusIdParams,
    headers: tusRequestHeaders,
    responses: { 204: { description: 'terminated' } },
    errors: ['not_found', 'tus_version_unsupported'],
  },
  healthz: {
    method: 'get',
    mount: '',
    path: '/healthz',
    tag: 'Meta',
    summary: 'Liveness: the process answers',
    auth: 'none',
    responses: { 200: { description: 'alive', schema: health } },
    errors: [],
  },
  readyz: {
    method: 'get',
    mount: '',
    path: '/readyz',
    tag: 'Meta',
    summary: 'Readiness: the database answers and the upload store is writable',
    auth: 'none',
    responses: { 200: { description: 'ready', schema: health } },
    errors: ['not_ready'],
  },
} as const satisfies Record<string, ApiOperation>;

/** The mount point of the API. */
export const API_PREFIX = '/api/v1';

/** Express `:param` path to OpenAPI `{param}` path, with the API prefix (or the operation's own mount). */
export function openApiPath(op: Pick<ApiOperation, 'path' | 'mount'>): string {
  return (op.mount ?? API_PREFIX) + op.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

/**
 * Error codes every operation of its kind can answer with, in addition to its own: a bad or
 * missing token, a non-admin, and the JSON body parser's refusals.
 */
export function commonErrors(op: ApiOperation): ErrorCode[] {
  const out: ErrorCode[] = ['internal_error'];
  // A token of a user REQUIRE_2FA covers who has not enrolled yet is refused on every route.
  if (op.auth !== 'none') out.push('unauthorized', 'mfa_enrolment_required');
  if (op.auth === 'admin') out.push('forbidden');
  if (op.body?.kind === 'json') out.push('validation_error', 'invalid_json', 'payload_too_large', 'unsupported_media_type', 'body_timeout');
  return out;
}

/** All error codes an operation can answer with, deduplicated. */
export function errorsOf(op: ApiOperation): ErrorCode[] {
  return [...new Set([...op.errors, ...commonErrors(op)])];
}
