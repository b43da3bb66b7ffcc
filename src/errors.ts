/**
 * The one error type services throw. `code` is stable and machine-readable; the HTTP
 * status for each code is decided here, in one table, and nowhere else.
 */
export const ERROR_CODES = {
  validation_error: { status: 400, title: 'Invalid request' },
  /** A retention (an upload request's fileRetentionSeconds) above FILE_MAX_RETENTION. */
  retention_exceeded: { status: 400, title: 'Retention above FILE_MAX_RETENTION' },
  invalid_json: { status: 400, title: 'Malformed JSON body' },
  bad_request: { status: 400, title: 'Bad request' },
  partial_put_unsupported: { status: 400, title: 'Partial PUT is not supported' },
  checksum_field_order: { status: 400, title: 'Checksum field after its file' },
  unauthorized: { status: 401, title: 'Authentication required' },
  /** The account has a second factor: send `otp` (a TOTP code or a recovery code). */
  otp_required: { status: 401, title: 'One-time code required' },
  otp_invalid: { status: 401, title: 'One-time code not accepted' },
  /** REQUIRE_2FA covers the account and it has no second factor yet: enrol on the web page first. */
  mfa_enrolment_required: { status: 401, title: 'Second factor enrolment required' },
  forbidden: { status: 403, title: 'Forbidden' },
  /** A sensitive action needs a fresh password or factor proof (sudo mode). */
  reauth_required: { status: 403, title: 'Re-authentication required' },
  account_disabled: { status: 403, title: 'Account disabled' },
  /** The account is linked to single sign-on and local passwords are disabled for such accounts. */
  sso_required: { status: 403, title: 'Single sign-on required' },
  csrf_invalid: { status: 403, title: 'Missing or invalid CSRF token' },
  setup_closed: { status: 409, title: 'Setup is closed' },
  not_found: { status: 404, title: 'Not found' },
  method_not_allowed: { status: 405, title: 'Method not allowed' },
  body_timeout: { status: 408, title: 'Request body too slow' },
  conflict: { status: 409, title: 'Conflict' },
  /** The file (or its owner, or its upload request) is under a legal hold: nobody may delete it. */
  legal_hold: { status: 409, title: 'Under legal hold' },
  file_too_large: { status: 413, title: 'File too large' },
  too_many_files: { status: 413, title: 'Too many files' },
  payload_too_large: { status: 413, title: 'Request body too large' },
  quota_exceeded: { status: 413, title: 'Storage quota exceeded' },
  /** An upload request's total bytes (maxBytes) would be exceeded. */
  request_limit_exceeded: { status: 413, title: 'Upload request limit reached' },
  unsupported_media_type: { status: 415, title: 'Unsupported media type' },
  /** A file an upload request does not take (by its extension or its sniffed content). */
  file_type_not_allowed: { status: 415, title: 'File type not allowed' },
  range_not_satisfiable: { status: 416, title: 'Range not satisfiable' },
  expectation_failed: { status: 417, title: 'Expectation failed' },
  checksum_mismatch: { status: 422, title: 'Checksum mismatch' },
  /** A webhook URL that is not HTTPS (or loopback HTTP), or resolves to a private, loopback or link-local address. */
  webhook_url_refused: { status: 422, title: 'Webhook address refused' },
  /** Sending by email was asked for but no SMTP server is configured (SMTP_URL). */
  email_not_configured: { status: 409, title: 'Email is not configured' },
  rate_limited: { status: 429, title: 'Too many requests' },
  headers_too_large: { status: 431, title: 'Request headers too large' },
  integrity_error: { status: 500, title: 'Stored data failed verification' },
  internal_error: { status: 500, title: 'Internal server error' },
  not_ready: { status: 503, title: 'Not ready' },
  /** A file is wrapped under a master key this process does not hold (yet): not corruption. */
  key_unavailable: { status: 503, title: 'Master key not available' },
  /** tus: the request's Tus-Resumable names a version this server does not speak. */
  tus_version_unsupported: { status: 412, title: 'Unsupported tus version' },
  /** tus: Upload-Offset is not the upload's committed offset (ask with HEAD). */
  upload_offset_mismatch: { status: 409, title: 'Upload offset mismatch' },
  /** tus: another PATCH (on any instance) is writing this upload right now. */
  upload_locked: { status: 423, title: 'Upload busy' },
  /** tus: the upload expired (Upload-Expires passed) and is being removed. */
  upload_expired: { status: 410, title: 'Upload expired' },
  /** tus: more bytes than the declared Upload-Length. */
  upload_length_exceeded: { status: 413, title: 'Upload longer than declared' },
  /** tus: the user has TUS_MAX_OPEN_UPLOADS uploads open already. */
  too_many_uploads: { status: 429, title: 'Too many open uploads' },
  /** tus checksum extension: the PATCH body does not match Upload-Checksum; nothing of it was committed. */
  tus_checksum_mismatch: { status: 460, title: 'Checksum mismatch' },
  insufficient_storage: { status: 507, title: 'Insufficient storage' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class AppError extends Error {
  readonly status: number;

  constructor(
    readonly code: ErrorCode,
    /** Human-readable, safe to show to the client: never secrets, never internals. */
    readonly detail: string,
    /** Extra response headers (e.g. Retry-After, Content-Range). */
    readonly headers: Record<string, string> = {},
    /** Close the connection after answering (e.g. an upload that must not be read to its end). */
    readonly closeConnection = false,
  ) {
    super(detail);
    this.name = 'AppError';
    this.status = ERROR_CODES[code].status;
  }
}

/** True for an AppError with the given code. */
export function isAppError(err: unknown, code?: ErrorCode): err is AppError {
  return err instanceof AppError && (code === undefined || err.code === code);
}
