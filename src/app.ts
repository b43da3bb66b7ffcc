/**
 * createApp(deps) builds a fresh Express application from its dependencies. It has no
 * side effects of its own (no listening, no files opened), so tests build one per case
 * with a temp directory and a test key.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import helmet from 'helmet';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import type { Keyring } from './crypto/keyring.js';
import { sql } from './db/kysely.js';
import type { Database } from './db/database.js';
import { AppError } from './errors.js';
import { ApiRoutes } from './http/api-router.js';
import { principal, requireAdmin, requireToken } from './http/auth.js';
import { apiDocsRoutes } from './http/routes/docs.js';
import { openApiJson } from './http/openapi.js';
import { errorHandler } from './http/error-handler.js';
import { requestLogger } from './http/logging.js';
import { limitAccount, limiter, type PasswordLimits } from './http/rate-limit.js';
import { DbRateLimitStores, RATE_LIMIT_KEY_LABEL } from './http/rate-limit-store.js';
import { accountRoutes, publicAccountRoutes } from './http/routes/accounts.js';
import { filesRoutes } from './http/routes/files.js';
import { acceptBody } from './http/upload.js';
import cookieParser from 'cookie-parser';
import { clientOf, pinClientAddress, warnMalformedForwardedFor } from './http/context.js';
import { smallBodyDeadline } from './http/body-deadline.js';
import { createCsrf } from './http/csrf.js';
import { auditRoutes } from './http/routes/audit.js';
import { humanSize, recipientRoutes } from './http/routes/recipient.js';
import { shareRoutes } from './http/routes/shares.js';
import { requestRoutes } from './http/routes/requests.js';
import { requestUploadRoutes } from './http/routes/request-upload.js';
import { RequestsService } from './services/requests.js';
import { notifyRoutes } from './http/routes/notify.js';
import { Notifier } from './services/notify/notifier.js';
import { AuditLog } from './services/audit.js';
import { SharesService } from './services/shares.js';
import { ssoFor } from './services/sso.js';
import { OidcIdentitiesRepo } from './db/oidc-identities.js';
import { AccountsService, SetupCode, type IntegrityFailure } from './services/accounts.js';
import { openIntegrity } from './services/integrity.js';
import { BundlesService } from './services/bundles.js';
import { PasswordHasher } from './services/passwords.js';
import { VaultService } from './services/vault.js';
import { LifecycleService, RetentionPolicy } from './services/lifecycle.js';
import { TusService } from './services/tus.js';
import { tusRoutes } from './http/routes/tus.js';
import { WebSessions } from './services/sessions.js';
import { MfaService } from './services/mfa.js';
import { pageRoutes } from './http/pages/index.js';
import { exactSize, humanDuration, humanTime, relativeTime, shortHash } from './http/pages/format.js';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { BlobStore } from './storage/blob-store.js';
import type { AuditHeadStore } from './storage/audit-heads.js';
import { auditHeadsFor } from './storage/index.js';

export interface AppDeps {
  config: Config;
  db: Database;
  store: BlobStore;
  keyring: Keyring;
  logger: Logger;
  setup: SetupCode;
  /** Where the audit head is kept outside the database; by default the configured one (auditHeadsFor). */
  auditHeads?: AuditHeadStore;
  /** Override the format's chunk size (tests only). */
  chunkSize?: number;
  /** Tests only: the clock for second factors and sudo mode (TOTP steps, re-authentication expiry). */
  clock?: () => number;
  /** Tests only: check every API response against the route table and report mismatches here. */
  onContractViolation?: (message: string) => void;
}

export interface AppServices {
  accounts: AccountsService;
  vault: VaultService;
  /** Resumable (tus) uploads; swept by the server's housekeeping. */
  tus: TusService;
  shares: SharesService;
  requests: RequestsService;
  audit: AuditLog;
  sessions: WebSessions;
  mfa: MfaService;
  /** Legal holds and the purge job (the server schedules runOnce; `sfs purge` runs it by hand). */
  lifecycle: LifecycleService;
  /** Rate-limit counters in the shared database (swept by the server's housekeeping). */
  rateLimits: DbRateLimitStores;
  /** Notifications: settings, webhooks, the outbox and its worker (started by the server, not here). */
  notify: Notifier;
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Content-Security-Policy for our own pages: nothing inline, nothing from elsewhere. */
export const PAGE_CSP = {
  useDefaults: false,
  directives: {
    defaultSrc: ["'self'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'"],
    imgSrc: ["'self'", 'data:'],
    fontSrc: ["'self'"],
    connectSrc: ["'self'"],
    objectSrc: ["'none'"],
    baseUri: ["'none'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
  },
};

const assetVersions = new Map<string, string>();

/** Maintained client libraries served from node_modules under /static/vendor/ (no copies in public/). */
const VENDOR: Record<string, string> = {
  'vendor/tus.min.js': path.join(ROOT, 'node_modules', 'tus-js-client', 'dist', 'tus.min.js'),
  // The WebAuthn browser library (passkeys), served from its package: the CSP allows only 'self'.
  'vendor/simplewebauthn-browser.js': path.join(ROOT, 'node_modules', '@simplewebauthn', 'browser', 'dist', 'bundle', 'index.umd.min.js'),
};

/** Where an asset's bytes are: public/, or node_modules for a vendored library. */
function assetPath(name: string): string {
  return VENDOR[name] ?? path.join(ROOT, 'public', name);
}

/**
 * URL of a file in public/ with a content hash in the query: assets are cached for a year,
 * so a changed file must get a new URL.
 */
function assetUrl(name: string): string {
  let v = assetVersions.get(name);
  if (v === undefined) {
    v = createHash('sha256').update(fs.readFileSync(assetPath(name))).digest('hex').slice(0, 10);
    assetVersions.set(name, v);
  }
  return `/static/${name}?v=${v}`;
}

export type App = express.Express & { services: AppServices };

/** Builds the application and the services behind it (after opening the integrity keys). */
export async function createApp(deps: AppDeps): Promise<App> {
  const { config } = deps;
  const hasher = new PasswordHasher(config.hashConcurrency);
  // Before anything reads a token, link, session or user: the first start of this version
  // re-keys the stored lookups and seals the rows (once; see services/integrity.ts).
  const { keys: integrity, upgraded } = await openIntegrity(deps.db, deps.keyring);
  // The setup code is the database's (the first instance's proposal wins), never this process's own.
  await deps.setup.establish(deps.db.kysely, deps.keyring);
  // Before any service that writes into the outbox: its sealing key is loaded here, once.
  const notify = new Notifier({ db: deps.db, keyring: deps.keyring, config: config.notify, publicUrl: config.publicUrl, logger: deps.logger });
  await notify.init();
  // Set below, once the audit log exists; a check can only fail on a request, after that.
  let onIntegrityFailure: (f: IntegrityFailure) => Promise<unknown> = async () => {};
  const identities = new OidcIdentitiesRepo(deps.db.kysely, integrity);
  const accounts = new AccountsService({
    db: deps.db,
    integrity,
    onIntegrityFailure: (f) => onIntegrityFailure(f),
    hasher,
    tokenDefaultTtl: config.tokenDefaultTtl,
    tokenMaxTtl: config.tokenMaxTtl,
    notifier: notify,
    // The admin's switch (the admin page, else OIDC_DISABLE_LOCAL_PASSWORDS): a user linked to the provider signs in there only.
    passwordRefused: config.oidc ? async (user) => !!sso && (await sso.localPasswordsDisabled()) && (await identities.linked(user.id)) : undefined,
  });
  const sso = ssoFor(config, { db: deps.db, integrity, accounts, hasher, onIntegrityFailure: (f) => onIntegrityFailure(f) });
  const vault = new VaultService({
    db: deps.db,
    store: deps.store,
    keyring: deps.keyring,
    chunkSize: deps.chunkSize,
    defaultQuota: config.userQuotaBytes,
    quotaLeaseMs: config.quotaLeaseMs,
  });
  const tus = new TusService({
    db: deps.db,
    store: deps.store,
    keyring: deps.keyring,
    vault,
    chunkSize: deps.chunkSize,
    maxFileSize: config.maxFileSize,
    expiryMs: config.tusExpiryMs,
    maxOpenUploads: config.tusMaxOpenUploads,
    leaseMs: config.tusLeaseMs,
    // Resumable uploads take no lifetime of their own yet: their files get the retention default.
    fileExpiresAt: (now) => new RetentionPolicy({ defaultSeconds: config.fileDefaultRetention, maxSeconds: config.fileMaxRetention }).forUpload(now, undefined),
  });
  const audit = new AuditLog({ db: deps.db, keyring: deps.keyring, heads: deps.auditHeads ?? auditHeadsFor(config, deps.store), logger: deps.logger, asyncHead: true, onAppend: (trx, row) => notify.auditAppendedIn(trx, row) });
  // A new, empty database has nothing to upgrade: no noise then.
  if (upgraded && Object.values(upgraded).some((n) => n > 0)) {
    // Loud on purpose: on a database that already ran this version it means someone removed
    // the integrity root, and the rows were just accepted as they are (docs/security.md).
    deps.logger.warn({ upgraded }, 'integrity upgrade: stored lookups re-keyed and rows sealed under a new integrity root');
    await audit.record({ actor: 'system', action: 'integrity.upgrade', outcome: 'success', details: { ...upgraded } });
  }
  onIntegrityFailure = async (f) => {
    // Ids only: never a token, hash or session id. The client only sees its usual 401/404.
    deps.logger.warn({ integrity: f }, 'integrity check failed: a stored row was changed without the key; refused');
    // A failed audit write is logged; the refusal stands either way.
    await audit.recordSummarised(`integrity:${f.table}:${f.id}`, {
      actor: 'system',
      action: 'integrity.violation',
      outcome: 'denied',
      subjectUserId: f.userId,
      shareId: f.table === 'shares' ? f.id : null,
      details: { table: f.table, rowId: f.id },
    }).catch((err: unknown) => deps.logger.warn({ err }, 'could not record an integrity violation'));
  };
  const shares = new SharesService({
    db: deps.db,
    integrity,
    onIntegrityFailure: (f) => onIntegrityFailure(f),
    hasher,
    keyring: deps.keyring,
    defaultTtlSeconds: config.shareDefaultTtl,
    maxTtlSeconds: config.shareMaxTtl,
    slowReader: { minBytesPerSecond: config.shareMinRate, graceMs: config.shareSlowGraceMs },
    notifier: notify,
  });
  const bundles = new BundlesService({ db: deps.db, shares, vault, integrity, forceZip64: config.bundleForceZip64 });
  const requests = new RequestsService({
    db: deps.db,
    integrity,
    hasher,
    keyring: deps.keyring,
    vault,
    maxTtlSeconds: config.requestMaxTtl,
    maxFileSize: config.maxFileSize,
    leaseMs: config.quotaLeaseMs,
    notifier: notify,
    fileExpiresAt: (now, seconds) => new RetentionPolicy({ defaultSeconds: config.fileDefaultRetention, maxSeconds: config.fileMaxRetention }).forUpload(now, seconds),
    maxRetentionSeconds: config.fileMaxRetention,
  });
  // Uploaders have no session either: their form tokens are bound to the request link they opened.
  const requestCsrf = createCsrf(deps.keyring.derive('sfs/v1 upload request csrf'), 'sfs-request-csrf', (req) => String(req.params.token ?? ''));
  // Recipients have no session: their form tokens are bound to the share link they opened.
  const recipientCsrf = createCsrf(deps.keyring.derive('sfs/v1 recipient csrf'), 'sfs-share-csrf', (req) => String(req.params.token ?? ''));

  const now = deps.clock ?? Date.now;
  const mfa = new MfaService({ db: deps.db, keyring: deps.keyring, integrity, requireDefault: config.require2fa, now });
  const sessions = new WebSessions({ db: deps.db, integrity, idleMs: config.sessionIdleMs, maxMs: config.sessionMaxMs });
  // Page forms: bound to the session once signed in; before that (sign-in, setup) to the cookie alone.
  const pageCsrf = createCsrf(deps.keyring.derive('sfs/v1 page csrf'), 'sfs-csrf', (req) => (req.session?.uid ? req.sessionID : 'anonymous'));

  // Counters in the shared database, keyed by a keyed hash (never an IP or a name in the clear).
  const rateLimits = new DbRateLimitStores({ db: deps.db, hashKey: deps.keyring.derive(RATE_LIMIT_KEY_LABEL) });
  const lifecycle = new LifecycleService({ db: deps.db, store: deps.store, audit, logger: deps.logger });
  const retention = new RetentionPolicy({ defaultSeconds: config.fileDefaultRetention, maxSeconds: config.fileMaxRetention });
  const app = express() as App;
  app.services = { accounts, vault, tus, shares, requests, audit, sessions, mfa, rateLimits, notify, lifecycle };
  app.disable('x-powered-by');
  // Off unless configured: a forged X-Forwarded-For must not change rate-limit identity.
  app.set('trust proxy', config.trustProxy);
  app.set('views', path.join(ROOT, 'views'));
  app.set('view engine', 'ejs');
  app.set('stall timeout ms', config.socketIdleTimeoutMs);

  app.use(pinClientAddress);
  app.use(requestLogger(deps.logger));
  app.use(warnMalformedForwardedFor);
  // JSON and form bodies get a total deadline; file uploads lift it once their route is reached.
  app.use(smallBodyDeadline(config.smallBodyTimeoutMs));
  // helmet's defaults add upgrade-insecure-requests, which breaks plain-HTTP use on a LAN.
  // Browsers apply form-action to a form's redirects too: "Sign in with ..." and an SSO
  // sign-out are forms answered by a redirect to the provider, so its origin (and only it) joins 'self'.
  const csp = config.oidc ? { ...PAGE_CSP, directives: { ...PAGE_CSP.directives, formAction: ["'self'", new URL(config.oidc.issuer).origin] } } : PAGE_CSP;
  app.use(helmet({ contentSecurityPolicy: csp, crossOriginEmbedderPolicy: false }));

  // tus-js-client (resumable uploads) and @simplewebauthn/browser (passkeys), straight from their packages.
  for (const [name, file] of Object.entries(VENDOR)) {
    app.get(`/static/${name}`, (_req, res) => {
      res.sendFile(file, { maxAge: '365d', immutable: true, headers: { 'Content-Type': 'text/javascript; charset=utf-8' } });
    });
  }
  app.use('/static', express.static(path.join(ROOT, 'public'), { maxAge: '365d', immutable: true, index: false }));
  app.use(cookieParser());
  Object.assign(app.locals, { humanSize, humanTime, relativeTime, humanDuration, shortHash, exactSize, asset: assetUrl });

  // Browsers ask for /favicon.ico on every page whatever the pages link; answer with the icon.
  const favicon = fs.readFileSync(path.join(ROOT, 'public', 'favicon.svg'));
  app.get('/favicon.ico', (_req, res) => {
    res.type('image/svg+xml').setHeader('Cache-Control', 'public, max-age=86400');
    res.send(favicon);
  });
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    try {
      await sql`SELECT 1`.execute(deps.db.kysely);
      await deps.store.checkWritable();
      res.json({ status: 'ok' });
    } catch (err) {
      deps.logger.warn({ err }, 'readiness check failed');
      throw new AppError('not_ready', 'the database or the upload store is not available');
    }
  });

  const json = express.json({ limit: '64kb' });
  const api = express.Router();
  api.use((req: Request, res: Response, next: NextFunction) => {
    // A raw upload's body is the file, whatever its Content-Type: never parse it here.
    if (req.method === 'PUT' && req.path.startsWith('/uploads/')) return next();
    if (req.is('application/json')) acceptBody(req, res);
    json(req, res, next);
  });
  const auth = requireToken(accounts, mfa);
  const window = config.rateLimitWindowMs;
  const onLimited = (scope: string) => (req: Request) =>
    audit.recordSummarised(`${scope}:${req.ip}`, { actor: 'anonymous', action: 'rate_limit.hit', outcome: 'denied', ...clientOf(req), details: { scope } });
  // Every check of an account password (sign-in on the API and the page, and the current
  // password of a password change) goes through these two limiters: one budget per IP and one
  // per IP+account, whichever route the guesses arrive on.
  const loginPerIp = limiter({ store: rateLimits.for('login-ip'), windowMs: window, limit: config.loginRateLimitPerIp, failuresOnly: true, onLimited: onLimited('login') });
  const loginPerUser = limiter({ store: rateLimits.for('login-account'), windowMs: window, limit: config.loginRateLimit, failuresOnly: true, perAccount: true, onLimited: onLimited('login') });
  const passwordLimits: PasswordLimits = {
    setup: limiter({ store: rateLimits.for('setup'), windowMs: window, limit: 10, onLimited: onLimited('setup') }),
    login: [limitAccount((req) => (req.body as Record<string, unknown> | undefined)?.username), loginPerIp, loginPerUser],
    passwordCheck: [limitAccount((req) => req.principal?.user.username ?? req.webUser?.username), loginPerIp, loginPerUser],
    secondFactor: [limitAccount((req) => req.session?.pending?.username ?? req.webUser?.username), loginPerIp, loginPerUser],
  };
  const routeDeps = {
    accounts,
    vault,
    shares,
    bundles,
    audit,
    lifecycle,
    setup: deps.setup,
    auth,
    sessions,
    mfa,
    limits: passwordLimits,
    notify,
  };
  // One route table (http/api-table.ts) builds both this router and the OpenAPI document.
  const openapi = openApiJson({ publicUrl: config.publicUrl, maxFileSize: config.maxFileSize });
  const routes = new ApiRoutes({ auth, requireAdmin, onContractViolation: deps.onContractViolation });
  publicAccountRoutes(routes, routeDeps);
  accountRoutes(routes, routeDeps);
  filesRoutes(routes, { vault, audit, retention, lifecycle, maxFileSize: config.maxFileSize, maxFilesPerRequest: config.maxFilesPerRequest });
  shareRoutes(routes, { vault, shares, bundles, audit, notify, publicUrl: config.publicUrl, maxTtlSeconds: config.shareMaxTtl, bundleMaxFiles: config.bundleMaxFiles });
  requestRoutes(routes, { vault, requests, audit, publicUrl: config.publicUrl });
  notifyRoutes(routes, { notify, audit, publicUrl: config.publicUrl });
  auditRoutes(routes, audit);
  routes.op('getOpenApi', (_req, res) => {
    res.type('application/json').send(openapi);
  });
  api.use(routes.build());
  // Unknown paths: unauthenticated callers still get 401 first, as before the route table.
  api.use(auth);
  api.use(() => {
    throw new AppError('not_found', 'no such API endpoint');
  });
  // Resumable uploads (tus 1.0) with bearer tokens; documented in OUTSIDE_API (tus speaks in
  // headers and its own statuses, so it is not served by the JSON route table's router).
  app.use('/api/v1/tus', tusRoutes({ tus, audit, maxFileSize: config.maxFileSize, authenticate: [auth], ownerOf: (req) => principal(req).user.id, via: 'tus', onContractViolation: deps.onContractViolation }));
  app.use('/api/v1', api);
  app.use('/api/docs', apiDocsRoutes(config.publicUrl));
  app.use('/api', () => {
    throw new AppError('not_found', 'no such API endpoint (the API lives under /api/v1)');
  });

  app.use(
    recipientRoutes({
      vault,
      shares,
      bundles,
      audit,
      lifecycle,
      csrf: recipientCsrf,
      passwordLimit: { perIp: config.sharePasswordRateLimit, perShare: config.sharePasswordRateLimitPerShare, windowMs: window, stores: rateLimits },
    }),
  );

  app.use(
    requestUploadRoutes({
      vault,
      requests,
      audit,
      csrf: requestCsrf,
      maxFilesPerRequest: config.maxFilesPerRequest,
      tus,
      onContractViolation: deps.onContractViolation,
      limits: {
        uploadsPerIp: config.requestUploadRateLimit,
        uploadsPerRequest: config.requestUploadRateLimitPerRequest,
        passwordPerIp: config.sharePasswordRateLimit,
        passwordPerRequest: config.sharePasswordRateLimitPerShare,
        windowMs: window,
        stores: rateLimits,
      },
    }),
  );

  app.use(
    pageRoutes({
      config,
      db: deps.db,
      keyring: deps.keyring,
      accounts,
      vault,
      tus,
      shares,
      bundles,
      requests,
      audit,
      lifecycle,
      retention,
      sessions,
      onSessionTampered: (key: string, uid: string | null) => onIntegrityFailure({ table: 'sessions', id: key.slice(0, 16), userId: uid }),
      setup: deps.setup,
      csrf: pageCsrf,
      limits: passwordLimits,
      mfa,
      now,
      notify,
      sso,
    }),
  );
  app.use(() => {
    throw new AppError('not_found', 'no such page');
  });
  app.use(errorHandler);
  return app;
}
