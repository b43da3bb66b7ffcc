/**
 * Request schemas: input is validated at the edge and handed inward as plain objects. The
 * route table (api-table.ts) references these same objects, so the OpenAPI document is
 * generated from exactly what the routes validate with.
 */
import { AppError } from '../errors.js';
import { z } from './zod.js';

const username = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'use 1-64 letters, digits, dot, underscore or hyphen');
// Length policy is enforced by the accounts service (one rule for API, pages and CLI).
const password = z.string().min(1).max(1024);
const role = z.enum(['admin', 'user']);

export const setupBody = z.object({ setupCode: z.string().min(1).max(200), username, password }).strict();

export const tokenCreateBody = z
  .object({
    username: z.string().min(1).max(64),
    password,
    name: z.string().trim().min(1).max(100).default('api'),
    expiresInSeconds: z.number().int().min(60).optional(),
    otp: z
      .string()
      .min(1)
      .max(64)
      .optional()
      .openapi({ description: 'for an account with a second factor: the current code of its authenticator app (6 digits), or one of its recovery codes (used up)' }),
  })
  .strict();

export const userCreateBody = z.object({ username, password, role: role.default('user') }).strict();

export const userPatchBody = z
  .object({
    disabled: z.boolean().optional(),
    role: role.optional(),
    password: password.optional(),
    quotaBytes: z.number().int().min(0).nullable().optional(),
  })
  .strict()
  .refine((o) => Object.keys(o).length > 0, 'give at least one of disabled, role, password, quotaBytes');

/** An email address for notifications and link recipients: one plain address, no display name, no line breaks. */
export const emailAddress = z
  .string()
  .trim()
  .max(254)
  .regex(/^[^\s@<>()[\],;:"\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$/, 'expected an email address such as name@example.com');

const channels = z.array(z.enum(['email', 'webhook'])).max(2);

/** Per event: the channels it is sent on ([] = not at all). */
export const notificationPrefsBody = z
  .object({
    shareDownloaded: channels.optional(),
    shareExhausted: channels.optional(),
    requestUpload: channels.optional(),
    expiringSoon: channels.optional(),
    newSignIn: channels.optional(),
    accountChanged: channels.optional(),
  })
  .strict();

export const mePatchBody = z
  .object({
    currentPassword: password.optional(),
    newPassword: password.optional(),
    email: emailAddress.nullable().optional().openapi({ description: 'where notification emails go; null removes it' }),
    notifications: notificationPrefsBody.optional(),
  })
  .strict()
  .refine((o) => (o.currentPassword === undefined) === (o.newPassword === undefined), 'give currentPassword and newPassword together')
  .refine((o) => Object.keys(o).length > 0, 'give a new password, an email address or notification settings');

export const webhookBody = z.object({ url: z.string().min(1).max(2000).openapi({ description: 'https:// (or http:// to a loopback address)' }) }).strict();

export const listQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(50),
  cursor: z.string().max(200).optional(),
});

export const idParam = z.string().regex(/^[0-9a-f]{32}$/);

export const shareCreateBody = z
  .object({
    expiresInSeconds: z.number().int().min(60).optional(),
    maxDownloads: z.number().int().min(1).max(1_000_000).nullable().optional(),
    password: z.string().max(1024).optional(),
    note: z.string().max(500).optional(),
    recipients: z.array(emailAddress).max(20).optional().openapi({ description: 'addresses the server emails the link to (never the password)' }),
    message: z.string().max(2000).optional().openapi({ description: 'a message for the recipients, in the email' }),
    deleteFileAfterLastDownload: z
      .boolean()
      .optional()
      .openapi({ description: 'purge the file once the last allowed download completed (needs maxDownloads; an interrupted download does not count)' }),
  })
  .strict();

export const filePatchBody = z
  .object({
    expiresInSeconds: z
      .number()
      .int()
      .min(60)
      .nullable()
      .openapi({ description: 'new lifetime from now; null keeps the file until deleted (refused under FILE_MAX_RETENTION). At most FILE_MAX_RETENTION after the upload' }),
  })
  .strict();

export const holdBody = z
  .object({
    reason: z.string().trim().min(1).max(500).openapi({ description: 'why the data must be kept (shown to admins and in the audit log)' }),
    reference: z.string().trim().max(200).optional().openapi({ description: 'case or matter number' }),
  })
  .strict();

/** A bundle: one link to several of the caller's files (their order is the zip's order). */
export const bundleCreateBody = shareCreateBody
  // Sending a bundle by email and deleting its files after the last download are not built
  // yet: refused as unknown fields rather than ignored.
  .omit({ recipients: true, message: true, deleteFileAfterLastDownload: true })
  .extend({
    fileIds: z
      .array(idParam.openapi({ description: 'a file id' }))
      .min(1)
      .max(1000)
      .refine((ids) => new Set(ids).size === ids.length, 'each file may appear only once'),
  })
  .strict();

const retentionField = z
  .union([z.number().int().min(60), z.string().max(20)])
  .nullable()
  .optional()
  .openapi({ description: 'how long files arriving through the request are kept: seconds or "30d"-style, at most FILE_MAX_RETENTION (else 400 retention_exceeded); null = the retention default; a change applies to later arrivals' });

export const requestCreateBody = z
  .object({
    title: z.string().trim().min(1).max(200),
    message: z.string().max(5000).optional(),
    expiresInSeconds: z.number().int().min(60).optional().openapi({ description: 'default 7 days (at most REQUEST_MAX_TTL)' }),
    password: z.string().max(1024).optional(),
    maxFiles: z.number().int().min(1).max(10_000).optional().openapi({ description: 'files in all; default 10' }),
    maxBytes: z.number().int().min(1).optional().openapi({ description: 'bytes in all; default 10 × MAX_FILE_SIZE, at most 10 GiB' }),
    maxFileBytes: z.number().int().min(1).optional().openapi({ description: 'bytes per file; default and at most MAX_FILE_SIZE' }),
    allowedTypes: z.array(z.string().max(20)).max(50).nullable().optional().openapi({ description: 'file extensions ("pdf", ".docx"); the content must match the extension too; absent or null = any' }),
    requireName: z.boolean().optional(),
    requireEmail: z.boolean().optional(),
    fileRetentionSeconds: retentionField,
  })
  .strict();

export const requestPatchBody = z
  .object({
    close: z.literal(true).optional().openapi({ description: 'close the request now (for good)' }),
    expiresInSeconds: z.number().int().min(60).optional().openapi({ description: 'new expiry, counted from now' }),
    fileRetentionSeconds: retentionField,
  })
  .strict()
  .refine((o) => o.close !== undefined || o.expiresInSeconds !== undefined || o.fileRetentionSeconds !== undefined, 'give close, expiresInSeconds or fileRetentionSeconds');

export const fileListQuery = listQuery.extend({
  requestId: z.string().regex(/^[0-9a-f]{32}$/, 'not a request id').optional().openapi({ description: 'only files that came through this upload request' }),
});

export const auditQuery = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().regex(/^\d{1,15}$/, 'not a cursor from this API').optional(),
  fileId: z.string().regex(/^[0-9a-f]{32}$/, 'not a file id').optional(),
});

/** Parses `input` with `schema`, or throws validation_error naming the fields. */
export function parse<T extends z.ZodTypeAny>(schema: T, input: unknown): z.output<T> {
  const r = schema.safeParse(input ?? {});
  if (r.success) return r.data;
  const detail = r.error.issues.map((i) => `${i.path.length ? i.path.join('.') : 'body'}: ${i.message}`).join('; ');
  throw new AppError('validation_error', detail);
}
