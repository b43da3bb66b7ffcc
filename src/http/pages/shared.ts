/**
 * What every page module shares: the dependencies they are built from, the fixed flash
 * messages, and turning a service error into form text. Kept apart from index.ts so the page
 * modules do not import the module that imports them.
 */
import type { Config } from '../../config.js';
import type { Keyring } from '../../crypto/keyring.js';
import type { Database } from '../../db/database.js';
import { isAppError, type AppError } from '../../errors.js';
import type { AccountsService, SetupCode } from '../../services/accounts.js';
import type { AuditLog } from '../../services/audit.js';
import type { MfaService } from '../../services/mfa.js';
import type { WebSessions } from '../../services/sessions.js';
import type { SharesService } from '../../services/shares.js';
import type { BundlesService } from '../../services/bundles.js';
import type { RequestsService } from '../../services/requests.js';
import type { SsoService } from '../../services/sso.js';
import type { VaultService } from '../../services/vault.js';
import type { Notifier } from '../../services/notify/notifier.js';
import type { Csrf } from '../csrf.js';
import type { TusService } from '../../services/tus.js';
import type { PasswordLimits } from '../rate-limit.js';
import type { LifecycleService, RetentionPolicy } from '../../services/lifecycle.js';

export interface PagesDeps {
  config: Config;
  db: Database;
  keyring: Keyring;
  accounts: AccountsService;
  vault: VaultService;
  /** Resumable uploads (the upload page's large files go through tus). */
  tus: TusService;
  shares: SharesService;
  bundles: BundlesService;
  requests: RequestsService;
  audit: AuditLog;
  lifecycle: LifecycleService;
  retention: RetentionPolicy;
  sessions: WebSessions;
  /** A stored session failed its seal (logged and audited by the app). */
  onSessionTampered?: (key: string, uid: string | null) => void;
  setup: SetupCode;
  csrf: Csrf;
  limits: PasswordLimits;
  /** Second factors and the REQUIRE_2FA policy. */
  mfa: MfaService;
  /** The clock for sudo mode and second steps (tests move it). */
  now: () => number;
  /** Notification settings, webhooks, and sending links by email. */
  notify: Notifier;
  /** Single sign-on (OIDC_ISSUER), or null when not configured. */
  sso?: SsoService | null;
}

/** Flash messages are fixed texts picked by a code in the query, so nothing a link carries is reflected. */
export const MESSAGES: Record<string, string> = {
  welcome: 'Your admin account is ready. Upload a first file below.',
  'signed-out': 'You are signed out.',
  'session-ended': 'That session has been ended.',
  'password-changed': 'Your password has been changed. Your other sessions and your API tokens were ended.',
  deleted: 'The file was deleted, and its links stopped working.',
  revoked: 'The link was revoked. It stopped working at once.',
  'token-revoked': 'The token was revoked.',
  'user-created': 'The user was created.',
  'user-updated': 'The user was updated.',
  'user-deleted': 'The user was deleted.',
  'link-revoked': 'The link was revoked.',
  'links-revoked': 'Every live link of this user was revoked.',
  'mfa-enrolled': 'Your authenticator app is set up.',
  'mfa-removed': 'The authenticator app was removed.',
  'mfa-reset': 'An administrator reset your second factors. Set up a new one below, on the two-factor page.',
  'mfa-user-reset': "The user's second factors were reset. They are told at their next sign-in.",
  'recovery-used': 'You signed in with a recovery code; it cannot be used again. Make new codes if you are running low.',
  'passkey-added': 'The passkey was added.',
  'passkey-renamed': 'The passkey was renamed.',
  'passkey-removed': 'The passkey was removed.',
  'policy-updated': 'The two-factor policy was changed.',
  'expiry-changed': 'The expiry was changed.',
  'request-closed': 'The upload request was closed. Its link takes no more files.',
  'request-extended': 'The upload request now works longer.',
  'request-retention': 'Files that arrive from now on are kept as chosen.',
  'hold-placed': 'The legal hold is in place.',
  'hold-released': 'The legal hold was released.',
  'request-deleted': 'The upload request was deleted. The files that came through it are still yours.',
  'notifications-saved': 'Your notification settings were saved.',
  'webhook-removed': 'The webhook was removed.',
  'webhook-test': 'A test event was queued. Its delivery shows in the log below within a few seconds.',
  'sso-linked': 'Your single sign-on identity is linked: you can now sign in with it.',
  'sso-link-taken': 'That single sign-on identity is already linked to another account; nothing was changed.',
  'sso-link-failed': 'The single sign-on identity could not be linked; nothing was changed.',
  'sso-policy': 'The single sign-on setting was saved.',
};

/** "password: must be at least 10 characters" -> "The password must be at least 10 characters." */
export function pageText(detail: string): string {
  const m = /^(\w+): (.*)$/.exec(detail);
  const text = m ? `The ${m[1]} ${m[2]}` : detail;
  return text.charAt(0).toUpperCase() + text.slice(1) + (text.endsWith('.') ? '' : '.');
}

/** Turns a service's validation or conflict error into a message for the form; rethrows anything else. */
export function formError(err: unknown): string {
  if (isAppError(err, 'validation_error') || isAppError(err, 'retention_exceeded') || isAppError(err, 'conflict') || isAppError(err, 'legal_hold') || isAppError(err, 'forbidden')) return pageText((err as AppError).detail);
  throw err;
}
