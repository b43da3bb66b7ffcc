/**
 * Every setting is read here, once, validated, and handed inward as a plain object.
 * A bad value throws ConfigError naming the variable and what is expected.
 */
import path from 'node:path';
import proxyaddr from 'proxy-addr';
import { Cron } from 'croner';

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    expected: string,
  ) {
    super(`${variable}: ${expected}`);
    this.name = 'ConfigError';
  }
}

export interface Config {
  env: 'production' | 'development' | 'test';
  host: string;
  port: number;
  dataDir: string;
  uploadsDir: string;
  dbFile: string;
  masterKey: string | undefined;
  masterKeyFile: string;
  masterKeysPrevious: string[];
  /** MASTER_KEY_NEW=1: accept an active key the database does not know yet (a deliberate rotation). */
  acceptNewKey: boolean;
  maxFileSize: number;
  maxFilesPerRequest: number;
  trustProxy: boolean | number | string;
  logLevel: string;
  publicUrl: string | undefined;
  tokenDefaultTtl: number;
  tokenMaxTtl: number;
  hashConcurrency: number;
  loginRateLimit: number;
  loginRateLimitPerIp: number;
  rateLimitWindowMs: number;
  socketIdleTimeoutMs: number;
  /** Total time a small (JSON or form) request body may take to arrive; file uploads are exempt. */
  smallBodyTimeoutMs: number;
  shutdownGraceMs: number;
  shareDefaultTtl: number;
  shareMaxTtl: number;
  /** Most files one bundle link may hold (BUNDLE_MAX_FILES). */
  bundleMaxFiles: number;
  /** Write every bundle zip in ZIP64 form, not only when an entry or offset needs it (BUNDLE_ZIP64=always). */
  bundleForceZip64: boolean;
  userQuotaBytes: number | null;
  /** How long an upload's quota lease counts without renewal (a killed instance's uploads stop counting after this). */
  quotaLeaseMs: number;
  /** A resumable (tus) upload untouched this long expires and is swept (TUS_EXPIRY_SECONDS). */
  tusExpiryMs: number;
  /** Resumable uploads a user may have open at once (TUS_MAX_OPEN_UPLOADS). */
  tusMaxOpenUploads: number;
  /** How long a PATCH's hold on its upload counts without renewal (a killed instance's hold lapses after this). */
  tusLeaseMs: number;
  /** The upload page sends files of at least this size with tus (TUS_PAGE_THRESHOLD; 0: always). */
  tusPageThreshold: number;
  sharePasswordRateLimit: number;
  sharePasswordRateLimitPerShare: number;
  /** Longest lifetime of an upload request (seconds). */
  requestMaxTtl: number;
  /** Uploads to upload requests per client address, and per request, per rate-limit window. */
  requestUploadRateLimit: number;
  requestUploadRateLimitPerRequest: number;
  /** A link download slower than this (bytes per second) for `shareSlowGraceMs` gives way to another recipient; 0: never. */
  shareMinRate: number;
  shareSlowGraceMs: number;
  auditHeadFile: string;
  /** Browser sessions end after this long without a request... */
  sessionIdleMs: number;
  /** ...and this long after sign-in, whatever happens. */
  sessionMaxMs: number;
  /** REQUIRE_2FA: who must have a second factor (the admin page's switch overrides it once set). */
  require2fa: 'off' | 'admins' | 'all';
  /** How long a password or factor proof lets sensitive actions through (sudo mode). */
  sudoMs: number;
  /** PEM files for serving HTTPS directly; both or neither. */
  tls: { certFile: string; keyFile: string } | null;
  /** Where ciphertext lives: UPLOADS_DIR (default) or an S3-compatible bucket. */
  storage: StorageConfig;
  /** Where metadata lives: the SQLite file `dbFile` (default) or PostgreSQL (DATABASE_URL). */
  database: DatabaseConfig;
  /** A new file's lifetime in seconds when the upload names none (FILE_DEFAULT_RETENTION); null: kept until deleted. */
  fileDefaultRetention: number | null;
  /** The longest lifetime a file may have, counted from its upload (FILE_MAX_RETENTION); null: no ceiling. */
  fileMaxRetention: number | null;
  /** When the purge job runs (PURGE_SCHEDULE, a cron pattern; croner syntax); null: never in the server. */
  purgeSchedule: string | null;
  /** Single sign-on through an OpenID Connect provider (OIDC_ISSUER and friends); null when off. */
  oidc: OidcConfig | null;
  /** Notifications: email (SMTP), webhooks, and the outbox worker (services/notify). */
  notify: NotifyConfig;
}

export interface OidcConfig {
  /** The provider's issuer identifier, exactly as its discovery document states it. */
  issuer: string;
  clientId: string;
  /** The client secret (never log it). */
  clientSecret: string;
  /** Space-separated scopes asked for; always includes openid. */
  scopes: string;
  /** Lower-case email domains allowed to sign in; empty: any. */
  allowedDomains: string[];
  /** An ID token claim (and the value it must have or contain) that makes the user an admin. */
  adminClaim: { name: string; value: string } | null;
  /** Create a user on the first sign-in of an unknown identity (just in time). */
  autoCreate: boolean;
  /** The button label's provider name ("Sign in with <name>"). */
  name: string;
  /** Users linked to the provider may not use a local password (page sign-in and token by password). */
  disableLocalPasswords: boolean;
  /** Where the provider sends the browser back: PUBLIC_URL + /login/sso/callback. */
  redirectUri: string;
  /**
   * OIDC_TRUST_PROVIDER_MFA: a provider sign-in whose ID token says it used a second factor
   * (amr mfa/otp/hwk/swk, or acr in mfaAcr) counts as both factors; off: the local second step always.
   */
  trustProviderMfa: boolean;
  /** OIDC_MFA_ACR: acr values that mean the provider checked a second factor (with trustProviderMfa). */
  mfaAcr: string[];
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** An off|on setting (default off); anything else is a configuration error. */
function onOff(env: Env, name: string): boolean {
  const v = (env[name]?.trim() || 'off').toLowerCase();
  if (v !== 'off' && v !== 'on') throw new ConfigError(name, `expected off or on, got "${v}"`);
  return v === 'on';
}

/** OIDC_*: all off unless OIDC_ISSUER is set; then the client id and secret and PUBLIC_URL are required. */
function oidcConfig(env: Env, publicUrl: string | undefined): OidcConfig | null {
  const issuer = env.OIDC_ISSUER?.trim();
  if (!issuer) {
    for (const v of ['OIDC_CLIENT_ID', 'OIDC_CLIENT_SECRET']) if (env[v]?.trim()) throw new ConfigError(v, 'is only used with OIDC_ISSUER');
    return null;
  }
  let u: URL;
  try {
    u = new URL(issuer);
  } catch {
    throw new ConfigError('OIDC_ISSUER', `expected the provider's issuer URL (https://...), got "${issuer}"`);
  }
  // Plain HTTP would let anyone on the path forge the discovery document and the keys: only
  // for a provider on this machine (development, tests).
  const okProtocol = u.protocol === 'https:' || (u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.hostname));
  if (!okProtocol || u.search || u.hash || u.username) throw new ConfigError('OIDC_ISSUER', `expected an https URL without query (http only on localhost), got "${issuer}"`);
  const clientId = str(env, 'OIDC_CLIENT_ID', '');
  if (!clientId) throw new ConfigError('OIDC_CLIENT_ID', 'must be set with OIDC_ISSUER');
  const clientSecret = env.OIDC_CLIENT_SECRET?.trim() ?? '';
  if (!clientSecret) throw new ConfigError('OIDC_CLIENT_SECRET', 'must be set with OIDC_ISSUER (a confidential client)');
  // The redirect URI comes from the configured public address, never from a request's Host.
  if (!publicUrl) throw new ConfigError('PUBLIC_URL', 'must be set with OIDC_ISSUER (the sign-in redirect URI is built from it)');
  const scopeList = str(env, 'OIDC_SCOPES', 'openid email profile').split(/[\s,]+/).filter(Boolean);
  if (scopeList.some((s) => !/^[\x21\x23-\x5b\x5d-\x7e]+$/.test(s))) throw new ConfigError('OIDC_SCOPES', 'expected space-separated scope names');
  if (!scopeList.includes('openid')) scopeList.unshift('openid');
  const allowedDomains = str(env, 'OIDC_ALLOWED_DOMAINS', '')
    .split(',')
    .map((d) => d.trim().toLowerCase().replace(/^@/, ''))
    .filter(Boolean);
  for (const d of allowedDomains) if (!/^[a-z0-9.-]+\.[a-z0-9-]+$/.test(d)) throw new ConfigError('OIDC_ALLOWED_DOMAINS', `expected comma-separated email domains such as example.com, got "${d}"`);
  const claimName = str(env, 'OIDC_ADMIN_CLAIM', '');
  const claimValue = str(env, 'OIDC_ADMIN_VALUE', '');
  if (claimName && !claimValue) throw new ConfigError('OIDC_ADMIN_VALUE', 'must be set with OIDC_ADMIN_CLAIM (the value that makes a user an admin)');
  if (claimValue && !claimName) throw new ConfigError('OIDC_ADMIN_CLAIM', 'must be set with OIDC_ADMIN_VALUE');
  const name = str(env, 'OIDC_NAME', 'single sign-on');
  if (name.length > 60) throw new ConfigError('OIDC_NAME', 'expected a short provider name (at most 60 characters)');
  return {
    issuer,
    clientId,
    clientSecret,
    scopes: scopeList.join(' '),
    allowedDomains,
    adminClaim: claimName ? { name: claimName, value: claimValue } : null,
    autoCreate: bool(env, 'OIDC_AUTO_CREATE', false),
    name,
    disableLocalPasswords: bool(env, 'OIDC_DISABLE_LOCAL_PASSWORDS', false),
    redirectUri: `${publicUrl}/login/sso/callback`,
    trustProviderMfa: onOff(env, 'OIDC_TRUST_PROVIDER_MFA'),
    mfaAcr: str(env, 'OIDC_MFA_ACR', '')
      .split(/[\s,]+/)
      .filter(Boolean),
  };
}

export interface NotifyConfig {
  /** SMTP server (SMTP_URL, smtp:// or smtps://, may carry a password: never log it); null: no email. */
  smtpUrl: string | null;
  /** The From address of every email (SMTP_FROM). */
  smtpFrom: string;
  /** SMTP_REQUIRE_TLS: refuse to send unless STARTTLS succeeds (smtp://). */
  smtpRequireTls: boolean;
  /** SMTP_TLS_CA_FILE: PEM of the CA that signed the SMTP server's certificate. */
  smtpCaFile: string | undefined;
  /** WEBHOOK_ALLOW_PRIVATE: webhooks may reach private, loopback and link-local addresses. */
  allowPrivateWebhooks: boolean;
  /** First retry delay; each further one doubles (capped at an hour). */
  retryBaseMs: number;
  /** A delivery is given up this long after its event. */
  retryWindowMs: number;
  /** How long a claimed delivery stays with its worker before another may take it. */
  leaseMs: number;
  /** Timeout of one webhook request or SMTP exchange (below the lease). */
  timeoutMs: number;
  /** How often the worker looks for due deliveries. */
  pollMs: number;
  /** Link-expiry reminders go this long before a live link expires. */
  reminderMs: number;
}

function notifyConfig(env: Env, cwd: string): NotifyConfig {
  const smtpUrl = env.SMTP_URL?.trim() || null;
  if (smtpUrl !== null) {
    let ok = false;
    try {
      const u = new URL(smtpUrl);
      ok = (u.protocol === 'smtp:' || u.protocol === 'smtps:') && u.hostname !== '';
    } catch {
      ok = false;
    }
    // Never echo the URL: it may hold the password.
    if (!ok) throw new ConfigError('SMTP_URL', 'expected smtp://[USER:PASSWORD@]HOST[:PORT] or smtps://...');
  }
  const smtpFrom = str(env, 'SMTP_FROM', 'sfs@localhost');
  if (!/^[^\s@<>]+@[^\s@<>]+$/.test(smtpFrom) && !/^[^<>\r\n]*<[^\s@<>]+@[^\s@<>]+>$/.test(smtpFrom)) {
    throw new ConfigError('SMTP_FROM', `expected an address such as files@example.com or "Files <files@example.com>", got "${smtpFrom}"`);
  }
  const ca = env.SMTP_TLS_CA_FILE?.trim();
  const leaseMs = int(env, 'NOTIFY_LEASE_SECONDS', 120, 2, 3600) * 1000;
  const timeoutMs = int(env, 'NOTIFY_TIMEOUT_SECONDS', 15, 1, 600) * 1000;
  if (timeoutMs >= leaseMs) throw new ConfigError('NOTIFY_TIMEOUT_SECONDS', `must be below NOTIFY_LEASE_SECONDS (${leaseMs / 1000})`);
  return {
    smtpUrl,
    smtpFrom,
    smtpRequireTls: bool(env, 'SMTP_REQUIRE_TLS', false),
    smtpCaFile: ca ? path.resolve(cwd, ca) : undefined,
    allowPrivateWebhooks: bool(env, 'WEBHOOK_ALLOW_PRIVATE', false),
    retryBaseMs: int(env, 'NOTIFY_RETRY_BASE_MS', 30_000, 1, 3_600_000),
    retryWindowMs: int(env, 'NOTIFY_RETRY_WINDOW_SECONDS', 86400, 60, 30 * 86400) * 1000,
    leaseMs,
    timeoutMs,
    pollMs: int(env, 'NOTIFY_POLL_MS', 2000, 10, 600_000),
    reminderMs: int(env, 'NOTIFY_EXPIRY_REMINDER_SECONDS', 86400, 60, 30 * 86400) * 1000,
  };
}

export type DatabaseConfig =
  | { kind: 'sqlite' }
  | {
      kind: 'postgres';
      /** The connection URL as given (may carry a password: never log it). */
      url: string;
      poolSize: number;
      /** PEM file of the CA that signed the server's certificate (DATABASE_SSL_CA_FILE). */
      sslCaFile: string | undefined;
    };

/** DATABASE_URL / DATABASE_POOL_SIZE / DATABASE_SSL_CA_FILE; unset URL means SQLite in DATA_DIR. */
function databaseConfig(env: Env, cwd: string): DatabaseConfig {
  const url = env.DATABASE_URL?.trim();
  if (!url) return { kind: 'sqlite' };
  let ok = false;
  try {
    const u = new URL(url);
    ok = (u.protocol === 'postgres:' || u.protocol === 'postgresql:') && u.hostname !== '' && u.pathname.length > 1;
  } catch {
    ok = false;
  }
  // Never echo the URL: it may hold the password.
  if (!ok) throw new ConfigError('DATABASE_URL', 'expected postgres://USER:PASSWORD@HOST:PORT/DATABASE (with ?sslmode=... if needed)');
  const poolSize = int(env, 'DATABASE_POOL_SIZE', 10, 1, 1000);
  const ca = env.DATABASE_SSL_CA_FILE?.trim();
  const sslCaFile = ca ? path.resolve(cwd, ca) : undefined;
  return { kind: 'postgres', url, poolSize, sslCaFile };
}

export type StorageConfig =
  | { kind: 'disk' }
  | {
      kind: 's3';
      bucket: string;
      /** '' or ending in '/'. */
      prefix: string;
      region: string;
      endpoint: string | undefined;
      forcePathStyle: boolean;
      sse: { mode: 'AES256' } | { mode: 'aws:kms'; kmsKeyId?: string } | undefined;
      partSize: number;
      queueSize: number;
      maxAttempts: number;
      connectTimeoutMs: number;
      socketTimeoutMs: number;
    };

const UNITS: Record<string, number> = {
  b: 1,
  k: 1000,
  kb: 1000,
  kib: 1024,
  m: 1000 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1000 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1000 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** Parses "1048576", "512MiB", "2 GiB", "1.5GB" into bytes; null when malformed. */
export function parseSize(text: string): number | null {
  // Trim first: with \s* on both sides of the optional unit, spaces could be split between
  // them in quadratically many ways (this parses the admin page's quota field too).
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(text.trim());
  if (!m) return null;
  const unit = UNITS[(m[2] || 'b').toLowerCase()];
  if (unit === undefined) return null;
  const n = Math.floor(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : null;
}

type Env = Record<string, string | undefined>;

const DURATION_UNITS: Record<string, number> = { '': 1, s: 1, m: 60, min: 60, h: 3600, d: 86400, w: 7 * 86400, y: 365 * 86400 };

/** Parses "86400", "90m", "12h", "30d", "2w", "1y" into seconds; null when malformed. */
export function parseDuration(text: string): number | null {
  const m = /^(\d{1,12})\s*([a-zA-Z]*)$/.exec(text.trim());
  if (!m) return null;
  const unit = DURATION_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) return null;
  const n = Number(m[1]) * unit;
  return Number.isSafeInteger(n) ? n : null;
}

/** An optional duration setting: unset, empty or "off" is null; else at least 60 seconds and at most 100 years. */
function retention(env: Env, name: string): number | null {
  const v = str(env, name, 'off');
  if (['off', 'none', 'never', '0'].includes(v.toLowerCase())) return null;
  const n = parseDuration(v);
  if (n === null || n < 60 || n > 100 * 365 * 86400) throw new ConfigError(name, `expected seconds or a duration such as 30d, 12h, 2w (at least 60 s), or off, got "${v}"`);
  return n;
}

/** PURGE_SCHEDULE: a cron pattern (five or six fields), or off. */
function purgeSchedule(env: Env): string | null {
  const v = str(env, 'PURGE_SCHEDULE', '*/5 * * * *');
  if (v.toLowerCase() === 'off') return null;
  try {
    new Cron(v, { paused: true }).stop();
  } catch {
    throw new ConfigError('PURGE_SCHEDULE', `expected a cron pattern such as "*/5 * * * *" (every five minutes), or off, got "${v}"`);
  }
  return v;
}

function str(env: Env, name: string, fallback: string): string {
  const v = env[name];
  return v === undefined || v.trim() === '' ? fallback : v.trim();
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const v = env[name];
  if (v === undefined || v.trim() === '') return fallback;
  if (!/^\d+$/.test(v.trim())) throw new ConfigError(name, `expected a whole number between ${min} and ${max}, got "${v}"`);
  const n = Number(v.trim());
  if (n < min || n > max) throw new ConfigError(name, `expected a whole number between ${min} and ${max}, got ${n}`);
  return n;
}

function flag(env: Env, name: string): boolean {
  const v = str(env, name, '0').toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new ConfigError(name, `expected 1 or 0, got "${v}"`);
}

function size(env: Env, name: string, fallback: number, min: number): number {
  const v = env[name];
  if (v === undefined || v.trim() === '') return fallback;
  const n = parseSize(v);
  if (n === null || n < min) {
    throw new ConfigError(name, `expected a size in bytes or with a unit (e.g. 512MiB, 2GiB), at least ${min} bytes, got "${v}"`);
  }
  return n;
}

function trustProxy(env: Env): boolean | number | string {
  const v = str(env, 'TRUST_PROXY', 'false');
  const lower = v.toLowerCase();
  if (['false', '0', 'off', 'no'].includes(lower)) return false;
  if (['true', 'on', 'yes'].includes(lower)) return true;
  if (/^\d+$/.test(v)) return Number(v);
  // Express accepts names (loopback, linklocal, uniquelocal) and comma-separated IPs/CIDRs;
  // compile it now with the same library so a typo stops start-up here, naming the variable.
  try {
    proxyaddr.compile(v.split(',').map((x) => x.trim()));
    return v;
  } catch {
    throw new ConfigError('TRUST_PROXY', `expected false, true, a hop count, "loopback" or a list of addresses/CIDRs, got "${v}"`);
  }
}

function tlsFiles(env: Env, cwd: string): Config['tls'] {
  const cert = env.TLS_CERT_FILE?.trim();
  const key = env.TLS_KEY_FILE?.trim();
  if (!cert && !key) return null;
  if (!cert) throw new ConfigError('TLS_CERT_FILE', 'must be set together with TLS_KEY_FILE');
  if (!key) throw new ConfigError('TLS_KEY_FILE', 'must be set together with TLS_CERT_FILE');
  return { certFile: path.resolve(cwd, cert), keyFile: path.resolve(cwd, key) };
}

/** BUNDLE_ZIP64: `auto` (ZIP64 records only where a size or offset needs them) or `always`. */
function zip64Mode(env: Env): boolean {
  const v = str(env, 'BUNDLE_ZIP64', 'auto').toLowerCase();
  if (v !== 'auto' && v !== 'always') throw new ConfigError('BUNDLE_ZIP64', `expected auto or always, got "${v}"`);
  return v === 'always';
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const v = str(env, name, String(fallback)).toLowerCase();
  if (['true', '1', 'on', 'yes'].includes(v)) return true;
  if (['false', '0', 'off', 'no'].includes(v)) return false;
  throw new ConfigError(name, `expected true or false, got "${env[name]}"`);
}

function storageConfig(env: Env): StorageConfig {
  const kind = str(env, 'STORAGE', 'disk').toLowerCase();
  if (kind === 'disk') return { kind: 'disk' };
  if (kind !== 's3') throw new ConfigError('STORAGE', `expected disk or s3, got "${env.STORAGE}"`);
  const bucket = str(env, 'S3_BUCKET', '');
  // S3 bucket naming rules (3-63 lower-case letters, digits, dots, hyphens).
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new ConfigError('S3_BUCKET', bucket ? `expected a bucket name (3-63 characters: a-z, 0-9, ".", "-"), got "${bucket}"` : 'must be set when STORAGE=s3');
  }
  let prefix = str(env, 'S3_PREFIX', '').replace(/^\/+/, '');
  if (prefix && !prefix.endsWith('/')) prefix += '/';
  if (prefix.length > 512 || /[\u0000-\u001f\u007f\\]/.test(prefix)) throw new ConfigError('S3_PREFIX', 'expected a short key prefix without control characters or backslashes');
  const endpoint = env.S3_ENDPOINT?.trim() || undefined;
  if (endpoint !== undefined) {
    let ok = false;
    try {
      const u = new URL(endpoint);
      ok = (u.protocol === 'http:' || u.protocol === 'https:') && !u.search && !u.hash && !u.username;
    } catch {
      ok = false;
    }
    if (!ok) throw new ConfigError('S3_ENDPOINT', `expected an http(s) URL such as https://s3.example.com, got "${endpoint}"`);
  }
  const region = str(env, 'S3_REGION', str(env, 'AWS_REGION', 'us-east-1'));
  if (!/^[a-z0-9-]{2,40}$/.test(region)) throw new ConfigError('S3_REGION', `expected a region name such as eu-west-1, got "${region}"`);
  const sseText = str(env, 'S3_SSE', 'none');
  let sse: Extract<StorageConfig, { kind: 's3' }>['sse'];
  if (sseText === 'none') sse = undefined;
  else if (sseText === 'AES256') sse = { mode: 'AES256' };
  else if (sseText === 'aws:kms') sse = { mode: 'aws:kms', ...(env.S3_SSE_KMS_KEY_ID?.trim() ? { kmsKeyId: env.S3_SSE_KMS_KEY_ID.trim() } : {}) };
  else throw new ConfigError('S3_SSE', `expected none, AES256 or aws:kms, got "${sseText}"`);
  if (env.S3_SSE_KMS_KEY_ID?.trim() && sse?.mode !== 'aws:kms') throw new ConfigError('S3_SSE_KMS_KEY_ID', 'is only used with S3_SSE=aws:kms');
  return {
    kind: 's3',
    bucket,
    prefix,
    region,
    endpoint,
    forcePathStyle: bool(env, 'S3_FORCE_PATH_STYLE', false),
    sse,
    partSize: size(env, 'S3_PART_SIZE', 8 * 1024 * 1024, 5 * 1024 * 1024),
    queueSize: int(env, 'S3_PARTS_IN_FLIGHT', 2, 1, 16),
    maxAttempts: int(env, 'S3_MAX_ATTEMPTS', 3, 1, 10),
    connectTimeoutMs: int(env, 'S3_CONNECT_TIMEOUT_SECONDS', 5, 1, 300) * 1000,
    socketTimeoutMs: int(env, 'S3_SOCKET_TIMEOUT_SECONDS', 120, 5, 3600) * 1000,
  };
}

/** Reads and validates the whole configuration from an environment object. */
export function loadConfig(env: Env = process.env, cwd = process.cwd()): Config {
  const nodeEnv = str(env, 'NODE_ENV', 'development');
  if (!['production', 'development', 'test'].includes(nodeEnv)) {
    throw new ConfigError('NODE_ENV', `expected production, development or test, got "${nodeEnv}"`);
  }
  const dataDir = path.resolve(cwd, str(env, 'DATA_DIR', 'data'));
  const publicUrl = env.PUBLIC_URL?.trim() || undefined;
  if (publicUrl !== undefined) {
    let ok = false;
    try {
      const u = new URL(publicUrl);
      ok = (u.protocol === 'http:' || u.protocol === 'https:') && !u.search && !u.hash;
    } catch {
      ok = false;
    }
    if (!ok) throw new ConfigError('PUBLIC_URL', `expected an absolute http(s) URL without query, got "${publicUrl}"`);
  }
  const logLevel = str(env, 'LOG_LEVEL', nodeEnv === 'test' ? 'silent' : 'info');
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `expected one of fatal, error, warn, info, debug, trace, silent, got "${logLevel}"`);
  }
  const host = str(env, 'HOST', '127.0.0.1');
  if (!/^[\w.:-]+$/.test(host)) throw new ConfigError('HOST', `expected a host name or IP address, got "${host}"`);
  const tokenMaxTtl = int(env, 'TOKEN_MAX_TTL', 365 * 86400, 60, 10 * 365 * 86400);
  const tokenDefaultTtl = int(env, 'TOKEN_DEFAULT_TTL', 30 * 86400, 60, 10 * 365 * 86400);
  if (tokenDefaultTtl > tokenMaxTtl) throw new ConfigError('TOKEN_DEFAULT_TTL', `must not exceed TOKEN_MAX_TTL (${tokenMaxTtl})`);
  const previous = str(env, 'MASTER_KEYS_PREVIOUS', '');
  const shareMaxTtl = int(env, 'SHARE_MAX_TTL', 90 * 86400, 60, 10 * 365 * 86400);
  const shareDefaultTtl = int(env, 'SHARE_DEFAULT_TTL', 7 * 86400, 60, 10 * 365 * 86400);
  if (shareDefaultTtl > shareMaxTtl) throw new ConfigError('SHARE_DEFAULT_TTL', `must not exceed SHARE_MAX_TTL (${shareMaxTtl})`);
  const sessionIdle = int(env, 'SESSION_IDLE_TIMEOUT_SECONDS', 2 * 3600, 60, 30 * 86400);
  const sessionMax = int(env, 'SESSION_MAX_AGE_SECONDS', 24 * 3600, 60, 90 * 86400);
  if (sessionIdle > sessionMax) throw new ConfigError('SESSION_IDLE_TIMEOUT_SECONDS', `must not exceed SESSION_MAX_AGE_SECONDS (${sessionMax})`);
  const require2fa = str(env, 'REQUIRE_2FA', 'off').toLowerCase();
  if (require2fa !== 'off' && require2fa !== 'admins' && require2fa !== 'all') throw new ConfigError('REQUIRE_2FA', `expected off, admins or all, got "${require2fa}"`);
  const fileMaxRetention = retention(env, 'FILE_MAX_RETENTION');
  const fileDefaultRetention = retention(env, 'FILE_DEFAULT_RETENTION');
  if (fileDefaultRetention !== null && fileMaxRetention !== null && fileDefaultRetention > fileMaxRetention) {
    throw new ConfigError('FILE_DEFAULT_RETENTION', `must not exceed FILE_MAX_RETENTION (${fileMaxRetention} s)`);
  }
  const quotaText = str(env, 'USER_QUOTA_BYTES', 'unlimited');
  const userQuotaBytes = quotaText.toLowerCase() === 'unlimited' ? null : size(env, 'USER_QUOTA_BYTES', 0, 0);
  return {
    env: nodeEnv as Config['env'],
    host,
    port: int(env, 'PORT', 3000, 0, 65535),
    dataDir,
    uploadsDir: path.resolve(cwd, str(env, 'UPLOADS_DIR', 'uploads')),
    dbFile: path.join(dataDir, 'sfs.db'),
    masterKey: env.MASTER_KEY?.trim() || undefined,
    masterKeyFile: path.resolve(cwd, str(env, 'MASTER_KEY_FILE', 'master.key')),
    masterKeysPrevious: previous ? previous.split(',').map((s) => s.trim()).filter(Boolean) : [],
    acceptNewKey: flag(env, 'MASTER_KEY_NEW'),
    maxFileSize: size(env, 'MAX_FILE_SIZE', 2 * 1024 ** 3, 1),
    maxFilesPerRequest: int(env, 'MAX_FILES_PER_REQUEST', 20, 1, 1000),
    trustProxy: trustProxy(env),
    logLevel,
    publicUrl: publicUrl?.replace(/\/+$/, ''),
    tokenDefaultTtl,
    tokenMaxTtl,
    hashConcurrency: int(env, 'HASH_CONCURRENCY', 2, 1, 64),
    loginRateLimit: int(env, 'LOGIN_RATE_LIMIT', 10, 1, 100000),
    loginRateLimitPerIp: int(env, 'LOGIN_RATE_LIMIT_PER_IP', 100, 1, 1000000),
    rateLimitWindowMs: int(env, 'RATE_LIMIT_WINDOW_SECONDS', 900, 1, 86400) * 1000,
    socketIdleTimeoutMs: int(env, 'SOCKET_IDLE_TIMEOUT_SECONDS', 120, 5, 3600) * 1000,
    smallBodyTimeoutMs: int(env, 'SMALL_BODY_TIMEOUT_SECONDS', 30, 1, 3600) * 1000,
    shutdownGraceMs: int(env, 'SHUTDOWN_GRACE_MS', 10000, 0, 600000),
    shareDefaultTtl,
    shareMaxTtl,
    bundleMaxFiles: int(env, 'BUNDLE_MAX_FILES', 100, 1, 1000),
    bundleForceZip64: zip64Mode(env),
    userQuotaBytes,
    quotaLeaseMs: int(env, 'QUOTA_LEASE_SECONDS', 120, 5, 3600) * 1000,
    tusExpiryMs: int(env, 'TUS_EXPIRY_SECONDS', 86400, 60, 30 * 86400) * 1000,
    tusMaxOpenUploads: int(env, 'TUS_MAX_OPEN_UPLOADS', 20, 1, 10000),
    tusLeaseMs: int(env, 'TUS_LEASE_SECONDS', 30, 2, 3600) * 1000,
    tusPageThreshold: size(env, 'TUS_PAGE_THRESHOLD', 16 * 1024 * 1024, 0),
    sharePasswordRateLimit: int(env, 'SHARE_PASSWORD_RATE_LIMIT', 10, 1, 100000),
    sharePasswordRateLimitPerShare: int(env, 'SHARE_PASSWORD_RATE_LIMIT_PER_SHARE', 10, 1, 100000),
    requestMaxTtl: int(env, 'REQUEST_MAX_TTL', 90 * 86400, 60, 10 * 365 * 86400),
    requestUploadRateLimit: int(env, 'REQUEST_UPLOAD_RATE_LIMIT', 100, 1, 1000000),
    requestUploadRateLimitPerRequest: int(env, 'REQUEST_UPLOAD_RATE_LIMIT_PER_REQUEST', 500, 1, 1000000),
    shareMinRate: size(env, 'SHARE_MIN_RATE', 16 * 1024, 0),
    shareSlowGraceMs: int(env, 'SHARE_SLOW_GRACE_SECONDS', 60, 1, 3600) * 1000,
    auditHeadFile: path.join(dataDir, 'audit-head'),
    sessionIdleMs: sessionIdle * 1000,
    sessionMaxMs: sessionMax * 1000,
    require2fa,
    sudoMs: int(env, 'SUDO_MODE_SECONDS', 600, 10, 86400) * 1000,
    tls: tlsFiles(env, cwd),
    storage: storageConfig(env),
    database: databaseConfig(env, cwd),
    fileDefaultRetention,
    fileMaxRetention,
    purgeSchedule: purgeSchedule(env),
    oidc: oidcConfig(env, publicUrl?.replace(/\/+$/, '')),
    notify: notifyConfig(env, cwd),
  };
}
