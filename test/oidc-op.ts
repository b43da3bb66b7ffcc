/**
 * A real OpenID provider for the SSO suites: oidc-provider (certified) on 127.0.0.1:0, with
 * the server registered as a confidential client (PKCE required), a tiny interaction handler
 * that signs in whichever account the test chose (`op.login`) and grants every requested
 * scope, and a hook that re-signs the ID token the token endpoint returns (`op.tamper`), with
 * the provider's own key, so a test can serve a correctly signed token with a wrong audience
 * or an expiry in the past, or one signed with a key the provider does not publish.
 */
import { createPrivateKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';

export interface OpAccount {
  sub: string;
  email?: string;
  email_verified?: boolean;
  preferred_username?: string;
  groups?: string[];
}

export const CLIENT = { id: 'sfs-test', secret: 'sfs-test-client-secret-0123456789abcdef' };

export interface TestOp {
  issuer: string;
  /** The account the next interaction signs in as. */
  login: OpAccount;
  /** Rewrites the next token response's ID token payload (then cleared); `key: 'foreign'` signs with an unpublished key. */
  tamper: { claims: (c: Record<string, unknown>) => Record<string, unknown>; key?: 'own' | 'foreign' } | null;
  /** Env for the app harness (OIDC_* and PUBLIC_URL). */
  env(publicUrl: string, extra?: Record<string, string>): Record<string, string>;
  close(): Promise<void>;
}

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString('base64url');
}

/** Re-signs a compact JWS with RS256 under `key`, payload changed by `change`. */
function resign(jwt: string, key: KeyObject, kid: string, change: (c: Record<string, unknown>) => Record<string, unknown>): string {
  const [, payload] = jwt.split('.');
  const claims = change(JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8')) as Record<string, unknown>);
  const head = b64url(JSON.stringify({ alg: 'RS256', kid, typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = sign('sha256', Buffer.from(`${head}.${body}`), key);
  return `${head}.${body}.${b64url(sig)}`;
}

/** Starts the provider; `redirectBase` is the app's PUBLIC_URL (its redirect and post-logout URIs). */
export async function startOp(redirectBases: string[]): Promise<TestOp> {
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const foreign = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const kid = 'test-key-1';
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  const accounts = new Map<string, OpAccount>();

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT.id,
        client_secret: CLIENT.secret,
        redirect_uris: redirectBases.map((b) => `${b}/login/sso/callback`),
        post_logout_redirect_uris: redirectBases.map((b) => `${b}/login?msg=signed-out`),
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    findAccount: async (_ctx, sub) => {
      const a = accounts.get(sub);
      return a ? { accountId: sub, claims: async () => ({ ...a }) } : undefined;
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username', 'groups'] },
    // The requested scopes' claims go into the ID token itself (the server reads no userinfo).
    conformIdTokenClaims: false,
    cookies: { keys: ['test-op-cookie-key-0123456789'] },
    pkce: { required: () => true },
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600 },
    jwks: { keys: [jwk as never] },
    features: { devInteractions: { enabled: false }, rpInitiatedLogout: { enabled: true } },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  const op: TestOp = {
    issuer,
    login: { sub: 'alice-sub', email: 'alice@example.com', email_verified: true, preferred_username: 'alice' },
    tamper: null,
    env: (publicUrl, extra = {}) => ({
      PUBLIC_URL: publicUrl,
      OIDC_ISSUER: issuer,
      OIDC_CLIENT_ID: CLIENT.id,
      OIDC_CLIENT_SECRET: CLIENT.secret,
      OIDC_NAME: 'Test IdP',
      ...extra,
    }),
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };

  provider.use(async (ctx, next) => {
    await next();
    const body = ctx.body as Record<string, unknown> | undefined;
    if (ctx.path === '/token' && op.tamper && body && typeof body.id_token === 'string') {
      const t = op.tamper;
      op.tamper = null;
      ctx.body = { ...body, id_token: resign(body.id_token, t.key === 'foreign' ? foreign : createPrivateKey(privateKey.export({ format: 'pem', type: 'pkcs8' })), kid, t.claims) };
    }
  });

  const callback = provider.callback();
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (!req.url?.startsWith('/interaction/')) return void callback(req, res);
    void (async () => {
      try {
        const details = await provider.interactionDetails(req, res);
        const account = op.login;
        accounts.set(account.sub, account);
        let result: Record<string, unknown>;
        if (details.prompt.name === 'login') {
          result = { login: { accountId: account.sub } };
        } else {
          const grant = details.grantId ? await provider.Grant.find(details.grantId) : new provider.Grant({ accountId: details.session!.accountId, clientId: String(details.params.client_id) });
          grant!.addOIDCScope(String(details.params.scope));
          result = { consent: { grantId: await grant!.save() } };
        }
        await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
      } catch (err) {
        res.statusCode = 500;
        res.end(String(err));
      }
    })();
  });
  return op;
}

/** A tiny cookie jar for fetch (names and values only: one host). */
export class CookieJar {
  private readonly cookies = new Map<string, string>();

  take(res: Response): void {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair!.indexOf('=');
      const name = pair!.slice(0, i).trim();
      const value = pair!.slice(i + 1).trim();
      if (/expires=Thu, 01 Jan 1970/i.test(c) || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

/**
 * Follows the provider's redirects from the authorization URL (signing in as `op.login` on
 * the way) until it sends the browser back to `appBase`; returns that callback URL.
 */
export async function throughProvider(authUrl: string, appBase: string, jar = new CookieJar()): Promise<string> {
  let url = authUrl;
  for (let i = 0; i < 10; i++) {
    if (url.startsWith(appBase)) return url;
    const res = await fetch(url, { redirect: 'manual', headers: { cookie: jar.header() } });
    jar.take(res);
    const loc = res.headers.get('location');
    if (!loc) throw new Error(`the provider answered ${res.status} without a redirect at ${url}: ${(await res.text()).slice(0, 300)}`);
    url = new URL(loc, url).href;
  }
  throw new Error('too many redirects at the provider');
}
