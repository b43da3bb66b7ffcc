/**
 * Single sign-on against a real OpenID provider (oidc-provider on loopback, test/oidc-op.ts):
 * the browser's side is driven over HTTP (supertest for the server, fetch with a cookie jar
 * for the provider). What each case checks is what the client received: the redirect, the
 * page's status, whether the session works, and the rows and audit events left behind.
 */
import { generate } from 'otplib';
import supertest from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { ADMIN, SETUP_CODE, makeHarness, makeUser, setupAdmin, type Harness } from './helpers.js';
import { CLIENT, startOp, throughProvider, type TestOp } from './oidc-op.js';

const APP = 'http://sfs.test';
const HTML = { Accept: 'text/html' };
type Agent = ReturnType<typeof supertest.agent>;

let op: TestOp;
let h: Harness;
let adminToken: string;
beforeAll(async () => {
  op = await startOp([APP]);
});
afterAll(() => op?.close());
afterEach(() => {
  op.tamper = null;
  h?.cleanup();
});

async function harness(extra: Record<string, string> = {}): Promise<Harness> {
  h = await makeHarness(op.env(APP, extra));
  if (extra.REQUIRE_2FA) {
    // Under the policy a factorless admin gets no token by password: set up only.
    const s = await h.request.post('/api/v1/setup').send({ setupCode: SETUP_CODE, ...ADMIN });
    expect(s.status).toBe(201);
  } else adminToken = await setupAdmin(h);
  return h;
}

async function csrfFrom(agent: Agent, path: string): Promise<string> {
  const r = await agent.get(path).set(HTML);
  const m = /name="_csrf" value="([^"]+)"/.exec(r.text);
  if (!m) throw new Error(`no CSRF token on ${path} (${r.status})`);
  return m[1]!;
}

/** "Sign in with ..." on the login page, through the provider, back to the callback. */
async function ssoSignIn(agent: Agent = supertest.agent(h.app)) {
  const _csrf = await csrfFrom(agent, '/login');
  const start = await agent.post('/login/sso').type('form').set(HTML).send({ _csrf, next: '/files' });
  expect(start.status).toBe(303);
  const auth = new URL(start.headers.location!);
  expect(auth.origin).toBe(op.issuer);
  const callback = new URL(await throughProvider(auth.href, APP));
  const r = await agent.get(callback.pathname + callback.search).set(HTML);
  return { agent, r, callback: callback.pathname + callback.search, auth };
}

/** Who the agent's session is (null when not signed in). */
async function whoAmI(agent: Agent): Promise<string | null> {
  const r = await agent.get('/account').set(HTML);
  if (r.status !== 200) return null;
  return /Signed in as <strong>([^<]+)<\/strong>/.exec(r.text)?.[1] ?? null;
}

const users = () => h.sql<{ id: string; username: string; role: string }>('SELECT id, username, role FROM users ORDER BY created_at');
const identities = () => h.sql<{ issuer: string; subject: string; user_id: string; email: string | null }>('SELECT issuer, subject, user_id, email FROM oidc_identities');
const events = (action: string) => h.sql<{ outcome: string; details: string; subject_user_id: string | null }>('SELECT outcome, details, subject_user_id FROM audit_events WHERE action = ? ORDER BY seq', [action]);

describe('sign-in through the provider', () => {
  it('sends a code flow request with PKCE (S256), state and nonce, and the PUBLIC_URL redirect', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    const agent = supertest.agent(h.app);
    const page = await agent.get('/login').set(HTML);
    expect(page.text).toContain('Sign in with Test IdP');
    // Forms may lead to the provider (a form's redirect counts for form-action), and nowhere else.
    expect(page.headers['content-security-policy']).toContain(`form-action 'self' ${op.issuer};`);
    const _csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
    const start = await agent.post('/login/sso').type('form').set(HTML).send({ _csrf });
    const q = new URL(start.headers.location!).searchParams;
    expect(q.get('response_type')).toBe('code');
    expect(q.get('client_id')).toBe(CLIENT.id);
    expect(q.get('redirect_uri')).toBe(`${APP}/login/sso/callback`);
    expect(q.get('code_challenge_method')).toBe('S256');
    expect(q.get('code_challenge')).toMatch(/^[\w-]{43}$/);
    expect(q.get('state')).toMatch(/^[\w-]{20,}$/);
    expect(q.get('nonce')).toMatch(/^[\w-]{20,}$/);
    expect(q.get('scope')).toBe('openid email profile');
    // Without the CSRF token nothing starts.
    expect((await agent.post('/login/sso').type('form').set(HTML).send({})).status).toBe(403);
  });

  it('creates the user on the first sign-in (JIT), then signs the same identity in as that user', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    op.login = { sub: 'jit-1', email: 'Carol@Example.com', email_verified: true, preferred_username: 'carol' };
    const first = await ssoSignIn();
    expect(first.r.status).toBe(303);
    expect(first.r.headers.location).toBe('/files');
    expect(await whoAmI(first.agent)).toBe('carol');
    const [carol] = (await users()).filter((u) => u.username === 'carol');
    expect(carol).toMatchObject({ role: 'user' });
    expect(await identities()).toEqual([{ issuer: op.issuer, subject: 'jit-1', user_id: carol!.id, email: 'carol@example.com' }]);

    const second = await ssoSignIn();
    expect(second.r.status).toBe(303);
    expect(await whoAmI(second.agent)).toBe('carol');
    expect((await users()).length).toBe(2);
    const logins = await events('sso.login');
    expect((await events('user.create')).map((e) => [e.subject_user_id, JSON.parse(e.details).via])).toEqual([[carol!.id, 'sso']]);
    expect(logins.map((e) => [e.outcome, e.subject_user_id, JSON.parse(e.details).created])).toEqual([
      ['success', carol!.id, true],
      ['success', carol!.id, false],
    ]);
    // The password login cannot guess its way in: the row holds a hash of a random password.
    const t = await h.request.post('/api/v1/auth/tokens').send({ username: 'carol', password: 'anything at all 123' });
    expect(t.status).toBe(401);
  });

  it('refuses a JIT-less unknown identity; a signed-in local user links it from /account, and then it signs in as them', async () => {
    await harness();
    await makeUser(h, adminToken, 'dave');
    op.login = { sub: 'dave-sub', email: 'dave@example.com', email_verified: true, preferred_username: 'dave' };
    const refused = await ssoSignIn();
    expect(refused.r.status).toBe(403);
    expect(refused.r.text).toContain('No account here is linked to that identity');
    expect(await whoAmI(refused.agent)).toBeNull();
    expect(await identities()).toEqual([]);
    expect((await events('sso.login')).map((e) => [e.outcome, JSON.parse(e.details).reason])).toEqual([['denied', 'not_linked']]);

    // Link while signed in with the password.
    const agent = supertest.agent(h.app);
    const _csrf = await csrfFrom(agent, '/login');
    await agent.post('/login').type('form').set(HTML).send({ _csrf, username: 'dave', password: 'dave password 123' });
    const account = await agent.get('/account').set(HTML);
    expect(account.text).toContain('Link Test IdP');
    const csrf2 = /name="_csrf" value="([^"]+)"/.exec(account.text)![1]!;
    const start = await agent.post('/account/sso/link').type('form').set(HTML).send({ _csrf: csrf2 });
    const back = new URL(await throughProvider(start.headers.location!, APP));
    const linked = await agent.get(back.pathname + back.search).set(HTML);
    expect(linked.headers.location).toBe('/account?msg=sso-linked');
    expect((await agent.get('/account').set(HTML)).text).toContain('dave@example.com');
    expect((await events('sso.link')).map((e) => e.outcome)).toEqual(['success']);

    const again = await ssoSignIn();
    expect(again.r.status).toBe(303);
    expect(await whoAmI(again.agent)).toBe('dave');
  });

  it('never merges accounts: an identity whose email and name match a local user gets its own account', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    await makeUser(h, adminToken, 'alice');
    op.login = { sub: 'impostor-sub', email: 'alice@example.com', email_verified: true, preferred_username: 'alice' };
    const a = await ssoSignIn();
    expect(a.r.status).toBe(303);
    expect(await whoAmI(a.agent)).toBe('alice-2');
    // A second identity with the same email but another sub: a third account, not either of these.
    op.login = { sub: 'other-sub', email: 'alice@example.com', email_verified: true, preferred_username: 'alice' };
    const b = await ssoSignIn();
    expect(await whoAmI(b.agent)).toBe('alice-3');
    const ids = await identities();
    expect(new Set(ids.map((i) => i.user_id)).size).toBe(2);
    const local = (await users()).find((u) => u.username === 'alice')!;
    expect(ids.some((i) => i.user_id === local.id)).toBe(false);
  });

  it('the same sub at another issuer is another identity: its own account, never the first one', async () => {
    const second = await startOp([APP]);
    try {
      await harness({ OIDC_AUTO_CREATE: 'true' });
      op.login = { sub: 'shared-sub', email: 'nina@example.com', email_verified: true, preferred_username: 'nina' };
      expect(await whoAmI((await ssoSignIn()).agent)).toBe('nina');
      // The same database and key, now configured for the second provider (a provider change).
      const { dir } = h;
      const masterKey = h.keyring.active.material;
      const first = h;
      h = await makeHarness(second.env(APP, { OIDC_AUTO_CREATE: 'true' }), { dir, masterKey });
      // The first app goes (its database handle closed), its directory stays for the second.
      if (first.dialect === 'sqlite') first.db.close();
      else await first.database.close();
      second.login = { ...op.login };
      const saved = op;
      op = second;
      try {
        expect(await whoAmI((await ssoSignIn()).agent)).toBe('nina-2');
      } finally {
        op = saved;
      }
      expect((await identities()).map((i) => [i.issuer, i.subject]).sort()).toEqual([[op.issuer, 'shared-sub'], [second.issuer, 'shared-sub']].sort());
      expect(new Set((await identities()).map((i) => i.user_id)).size).toBe(2);
    } finally {
      await second.close();
    }
  });

  it('refuses a linked user who is disabled', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    op.login = { sub: 'erin-sub', email: 'erin@example.com', email_verified: true, preferred_username: 'erin' };
    const first = await ssoSignIn();
    expect(await whoAmI(first.agent)).toBe('erin');
    const erin = (await users()).find((u) => u.username === 'erin')!;
    const d = await h.request.patch(`/api/v1/users/${erin.id}`).set('Authorization', `Bearer ${adminToken}`).send({ disabled: true });
    expect(d.status).toBe(200);
    expect(await whoAmI(first.agent)).toBeNull();
    const again = await ssoSignIn();
    expect(again.r.status).toBe(403);
    expect(again.r.text).toContain('This account is disabled');
    expect(await whoAmI(again.agent)).toBeNull();
    expect((await events('sso.login')).map((e) => JSON.parse(e.details).reason ?? e.outcome)).toEqual(['success', 'disabled']);
  });

  it('refuses an email domain that is not allowed, and an unverified email in an allowed one', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true', OIDC_ALLOWED_DOMAINS: 'corp.example, @Partner.example' });
    for (const [login, ok] of [
      [{ sub: 'd1', email: 'frank@example.com', email_verified: true }, false],
      [{ sub: 'd2', email: 'frank@corp.example', email_verified: false }, false],
      [{ sub: 'd3' }, false],
      [{ sub: 'd4', email: 'frank@partner.example', email_verified: true }, true],
    ] as const) {
      op.login = { ...login };
      const r = await ssoSignIn();
      expect([login.sub, r.r.status]).toEqual([login.sub, ok ? 303 : 403]);
      if (!ok) expect(r.r.text).toContain('Your email domain may not sign in here');
    }
    expect((await identities()).map((i) => i.subject)).toEqual(['d4']);
  });

  it('maps the admin claim to the admin role, and takes it away when the claim goes', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true', OIDC_ADMIN_CLAIM: 'groups', OIDC_ADMIN_VALUE: 'sfs-admins' });
    op.login = { sub: 'gina-sub', email: 'gina@example.com', email_verified: true, preferred_username: 'gina', groups: ['staff', 'sfs-admins'] };
    const a = await ssoSignIn();
    expect(a.r.status).toBe(303);
    expect((await users()).find((u) => u.username === 'gina')!.role).toBe('admin');
    expect((await a.agent.get('/admin/users').set(HTML)).status).toBe(200);
    op.login = { ...op.login, groups: ['staff'] };
    const b = await ssoSignIn();
    expect(b.r.status).toBe(303);
    expect((await users()).find((u) => u.username === 'gina')!.role).toBe('user');
    expect((await b.agent.get('/admin/users').set(HTML)).status).toBe(403);
  });
});

describe('what the server refuses from the provider', () => {
  const now = () => Math.floor(Date.now() / 1000);
  it.each([
    ['a wrong audience (correctly signed)', { claims: (c: Record<string, unknown>) => ({ ...c, aud: 'another-client' }) }],
    ['an audience list without this client', { claims: (c: Record<string, unknown>) => ({ ...c, aud: ['another-client', 'third'] }) }],
    ['an expired ID token (correctly signed)', { claims: (c: Record<string, unknown>) => ({ ...c, iat: now() - 7200, exp: now() - 3600 }) }],
    ['another issuer', { claims: (c: Record<string, unknown>) => ({ ...c, iss: 'http://127.0.0.1:1' }) }],
    ['a nonce of another sign-in', { claims: (c: Record<string, unknown>) => ({ ...c, nonce: 'not-the-nonce-of-this-sign-in' }) }],
    ['a signature by a key the provider does not publish', { claims: (c: Record<string, unknown>) => c, key: 'foreign' as const }],
  ])('%s', async (_name, tamper) => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    op.login = { sub: 'tamper-sub', email: 'hal@example.com', email_verified: true, preferred_username: 'hal' };
    op.tamper = tamper;
    const { r, agent } = await ssoSignIn();
    expect(op.tamper).toBeNull(); // the token endpoint was reached and its answer rewritten
    expect(r.status).toBe(401);
    expect(r.text).toContain('could not be verified');
    expect(await whoAmI(agent)).toBeNull();
    expect((await users()).map((u) => u.username)).toEqual([ADMIN.username]);
    expect((await events('sso.login')).map((e) => [e.outcome, JSON.parse(e.details).reason])).toEqual([['failure', 'token_invalid']]);
  });

  it('an identity row pointed at another user by a database writer is refused (its MAC fails)', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    op.login = { sub: 'mallory-sub', email: 'mallory@example.com', email_verified: true, preferred_username: 'mallory' };
    expect((await ssoSignIn()).r.status).toBe(303);
    const admin = (await users()).find((u) => u.username === ADMIN.username)!;
    await h.sql('UPDATE oidc_identities SET user_id = ? WHERE subject = ?', [admin.id, 'mallory-sub']);
    const { r, agent } = await ssoSignIn();
    expect(r.status).toBe(403);
    expect(await whoAmI(agent)).toBeNull();
    expect((await events('integrity.violation')).map((e) => JSON.parse(e.details).table)).toEqual(['oidc_identities']);
  });

  it('the untampered token signs in (the control for the cases above)', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    op.login = { sub: 'tamper-sub', email: 'hal@example.com', email_verified: true, preferred_username: 'hal' };
    op.tamper = { claims: (c) => c };
    const { r, agent } = await ssoSignIn();
    expect(r.status).toBe(303);
    expect(await whoAmI(agent)).toBe('hal');
  });

  it('a callback works once: replayed in the same browser or another, and a wrong state, are refused', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    op.login = { sub: 'ivy-sub', email: 'ivy@example.com', email_verified: true, preferred_username: 'ivy' };
    const first = await ssoSignIn();
    expect(first.r.status).toBe(303);
    // The same callback URL again, in the browser that just used it and in a fresh one.
    for (const agent of [supertest.agent(h.app), first.agent]) {
      const replay = await agent.get(first.callback).set(HTML);
      expect(replay.status).toBe(400);
      expect(replay.text).toContain('That sign-in has expired or was already used');
    }
    // A callback whose state is not this browser's: refused, and the pending sign-in is used up.
    const agent = supertest.agent(h.app);
    const _csrf = await csrfFrom(agent, '/login');
    const start = await agent.post('/login/sso').type('form').set(HTML).send({ _csrf });
    const back = new URL(await throughProvider(start.headers.location!, APP));
    const forged = new URLSearchParams(back.search);
    forged.set('state', 'somebody-elses-state');
    expect((await agent.get(`${back.pathname}?${forged}`).set(HTML)).status).toBe(400);
    expect((await agent.get(back.pathname + back.search).set(HTML)).status).toBe(400);
    expect(await whoAmI(agent)).toBeNull();
    expect((await events('sso.login')).map((e) => JSON.parse(e.details).reason ?? e.outcome)).toEqual(['success', 'state', 'state', 'state', 'state']);
  });

  it('a provider that is not reachable gives a 503 page, and the server still starts', async () => {
    op.tamper = null;
    h = await makeHarness({ ...op.env(APP), OIDC_ISSUER: 'http://127.0.0.1:9' });
    await setupAdmin(h);
    const agent = supertest.agent(h.app);
    const _csrf = await csrfFrom(agent, '/login');
    const r = await agent.post('/login/sso').type('form').set(HTML).send({ _csrf });
    expect(r.status).toBe(503);
    expect(r.text).toContain('cannot be reached');
  });
});

describe('local passwords and sign-out', () => {
  it('OIDC_DISABLE_LOCAL_PASSWORDS: a linked user cannot use a password (page and API say sso_required); others can', async () => {
    await harness({ OIDC_DISABLE_LOCAL_PASSWORDS: 'true' });
    await makeUser(h, adminToken, 'jack');
    // Link jack's identity (signed in with his password, before it is his only way in).
    op.login = { sub: 'jack-sub', email: 'jack@example.com', email_verified: true, preferred_username: 'jack' };
    const agent = supertest.agent(h.app);
    let _csrf = await csrfFrom(agent, '/login');
    expect((await agent.post('/login').type('form').set(HTML).send({ _csrf, username: 'jack', password: 'jack password 123' })).status).toBe(303);
    _csrf = await csrfFrom(agent, '/account');
    const start = await agent.post('/account/sso/link').type('form').set(HTML).send({ _csrf });
    const back = new URL(await throughProvider(start.headers.location!, APP));
    expect((await agent.get(back.pathname + back.search).set(HTML)).headers.location).toBe('/account?msg=sso-linked');

    const api = await h.request.post('/api/v1/auth/tokens').send({ username: 'jack', password: 'jack password 123' });
    expect(api.status).toBe(403);
    expect(api.body.code).toBe('sso_required');
    // The wrong password still looks like any wrong password (nothing learnt without it).
    expect((await h.request.post('/api/v1/auth/tokens').send({ username: 'jack', password: 'wrong password 123' })).status).toBe(401);
    const fresh = supertest.agent(h.app);
    _csrf = await csrfFrom(fresh, '/login');
    const page = await fresh.post('/login').type('form').set(HTML).send({ _csrf, username: 'jack', password: 'jack password 123' });
    expect(page.status).toBe(403);
    expect(page.text).toContain('This account signs in with Test IdP only');
    expect(await whoAmI(fresh)).toBeNull();
    // The admin (not linked) still signs in with a password; jack through the provider.
    expect((await h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, name: 'x' })).status).toBe(201);
    expect(await whoAmI((await ssoSignIn()).agent)).toBe('jack');
  });

  it('the admin page switches local passwords of linked users off and on (over the setting); a forged switch row is ignored', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    await makeUser(h, adminToken, 'liam');
    op.login = { sub: 'liam-sub', email: 'liam@example.com', email_verified: true, preferred_username: 'liam' };
    const liam = supertest.agent(h.app);
    let _csrf = await csrfFrom(liam, '/login');
    await liam.post('/login').type('form').set(HTML).send({ _csrf, username: 'liam', password: 'liam password 123' });
    _csrf = await csrfFrom(liam, '/account');
    const start = await liam.post('/account/sso/link').type('form').set(HTML).send({ _csrf });
    const back = new URL(await throughProvider(start.headers.location!, APP));
    await liam.get(back.pathname + back.search).set(HTML);
    const byPassword = async () => (await h.request.post('/api/v1/auth/tokens').send({ username: 'liam', password: 'liam password 123' })).status;
    expect(await byPassword()).toBe(201);

    const admin = supertest.agent(h.app);
    _csrf = await csrfFrom(admin, '/login');
    await admin.post('/login').type('form').set(HTML).send({ _csrf, ...ADMIN });
    const page = await admin.get('/admin/users').set(HTML);
    expect(page.text).toContain('Local passwords of users linked to Test IdP');
    _csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
    const set = (localPasswords: string, agent: Agent = admin) => agent.post('/admin/sso-policy').type('form').set(HTML).send({ _csrf, localPasswords });
    expect((await set('disabled')).headers.location).toBe('/admin/users?msg=sso-policy');
    expect(await byPassword()).toBe(403);
    expect((await admin.get('/admin/users').set(HTML)).text).toMatch(/<option value="disabled" selected>/);
    // Not for a plain user.
    const lc = await csrfFrom(liam, '/account');
    expect((await liam.post('/admin/sso-policy').type('form').set(HTML).send({ _csrf: lc, localPasswords: 'allowed' })).status).toBe(403);
    expect(await byPassword()).toBe(403);
    // A database writer flipping the row without the key changes nothing (a failing row counts as disabled).
    await h.sql('UPDATE sso_policy SET disable_local_passwords = 0');
    expect(await byPassword()).toBe(403);
    await set('disabled');
    expect(await byPassword()).toBe(403);
    await set('allowed');
    expect(await byPassword()).toBe(201);
    expect((await events('sso.policy')).map((e) => JSON.parse(e.details).disableLocalPasswords)).toEqual([true, true, false]);
  });

  it('sign-out ends the local session and sends the browser to the provider (RP-initiated logout)', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    op.login = { sub: 'kim-sub', email: 'kim@example.com', email_verified: true, preferred_username: 'kim' };
    const { agent } = await ssoSignIn();
    const _csrf = await csrfFrom(agent, '/account');
    const out = await agent.post('/logout').type('form').set(HTML).send({ _csrf });
    expect(out.status).toBe(303);
    const end = new URL(out.headers.location!);
    expect(end.origin).toBe(op.issuer);
    expect(end.searchParams.get('client_id')).toBe(CLIENT.id);
    expect(end.searchParams.get('post_logout_redirect_uri')).toBe(`${APP}/login?msg=signed-out`);
    expect(await whoAmI(agent)).toBeNull();
    // The provider accepts the request (shows its sign-out confirmation).
    expect((await fetch(end)).status).toBe(200);
    // A password session signs out locally only.
    const local = supertest.agent(h.app);
    let c = await csrfFrom(local, '/login');
    await local.post('/login').type('form').set(HTML).send({ _csrf: c, ...ADMIN });
    c = await csrfFrom(local, '/account');
    expect((await local.post('/logout').type('form').set(HTML).send({ _csrf: c })).headers.location).toBe('/login?msg=signed-out');
  });
});

/** Enrols TOTP on the pages for a signed-in agent; returns the secret. */
async function enrolTotp(agent: Agent): Promise<string> {
  const _csrf = await csrfFrom(agent, '/account/2fa');
  expect((await agent.post('/account/2fa/totp').type('form').set(HTML).send({ _csrf })).headers.location).toBe('/account/2fa/totp');
  const page = await agent.get('/account/2fa/totp').set(HTML);
  const secret = /data-totp-secret>([A-Z2-7]+)</.exec(page.text)![1]!;
  const c = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
  const confirm = await agent.post('/account/2fa/totp/confirm').type('form').set(HTML).send({ _csrf: c, code: await generate({ secret }) });
  expect(confirm.headers.location).toBe('/account/2fa/recovery-codes');
  return secret;
}

/** A code for the next 30-second step: within the accepted drift, and never the step the enrolment used. */
const nextCode = (secret: string) => generate({ secret, epoch: Math.floor(Date.now() / 1000) + 30 });

describe('single sign-on and second factors', () => {
  /** An SSO user (created just in time) who has enrolled TOTP here; returns the secret. */
  async function ssoUserWithTotp(sub: string, name: string): Promise<string> {
    op.login = { sub, email: `${name}@example.com`, email_verified: true, preferred_username: name };
    const { agent, r } = await ssoSignIn();
    expect(r.headers.location).toBe('/files');
    return enrolTotp(agent);
  }

  it('asks an SSO user with TOTP for the code (no full session before it); logout still goes to the provider after it', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    const secret = await ssoUserWithTotp('tina-sub', 'tina');
    const { agent, r } = await ssoSignIn();
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/login/2fa');
    // Half signed in: nothing treats the session as signed in.
    const files = await agent.get('/files').set(HTML);
    expect(files.status).toBe(303);
    expect(files.headers.location).toMatch(/^\/login/);
    expect(await whoAmI(agent)).toBeNull();
    const step = await agent.get('/login/2fa').set(HTML);
    expect(step.text).toContain('You signed in with Test IdP. Now prove it is you with your second factor.');
    const _csrf = await csrfFrom(agent, '/login/2fa');
    const done = await agent.post('/login/2fa').type('form').set(HTML).send({ _csrf, code: await nextCode(secret) });
    expect(done.status, done.text.slice(0, 3000)).toBe(303);
    expect(done.headers.location).toBe('/files');
    expect(await whoAmI(agent)).toBe('tina');
    // The sign-in list names the method.
    const account = await agent.get('/account').set(HTML);
    expect(account.text).toContain('<td data-label="Method">sso+totp</td>');
    // The SSO marker survived the second step's new session id: sign-out goes to the provider.
    const c = await csrfFrom(agent, '/account');
    const out = await agent.post('/logout').type('form').set(HTML).send({ _csrf: c });
    expect(new URL(out.headers.location!).origin).toBe(op.issuer);
    expect(await whoAmI(agent)).toBeNull();
  });

  it('REQUIRE_2FA=all sends an SSO user without a factor to enrolment, and nowhere else', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true', REQUIRE_2FA: 'all' });
    op.login = { sub: 'una-sub', email: 'una@example.com', email_verified: true, preferred_username: 'una' };
    const { agent, r } = await ssoSignIn();
    expect(r.headers.location).toBe('/account/2fa?required=1');
    const files = await agent.get('/files').set(HTML);
    expect(files.status).toBe(303);
    expect(files.headers.location).toBe('/account/2fa?required=1');
  });

  it.each([
    ['amr mfa', { OIDC_TRUST_PROVIDER_MFA: 'on' }, { amr: ['pwd', 'mfa'] }, true],
    ['amr hwk', { OIDC_TRUST_PROVIDER_MFA: 'on' }, { amr: ['hwk'] }, true],
    ['a configured acr', { OIDC_TRUST_PROVIDER_MFA: 'on', OIDC_MFA_ACR: 'gold, urn:mace:incommon:iap:silver' }, { acr: 'gold' }, true],
    ['no amr', { OIDC_TRUST_PROVIDER_MFA: 'on' }, {}, false],
    ['amr pwd only and another acr', { OIDC_TRUST_PROVIDER_MFA: 'on', OIDC_MFA_ACR: 'gold' }, { amr: ['pwd'], acr: 'bronze' }, false],
    ['the setting off, amr mfa', {}, { amr: ['mfa'] }, false],
  ])('OIDC_TRUST_PROVIDER_MFA with %s: provider trusted = %s', async (_name, env, claims, trusted) => {
    await harness({ OIDC_AUTO_CREATE: 'true', ...env });
    const secret = await ssoUserWithTotp('vic-sub', 'vic');
    op.tamper = { claims: (c) => ({ ...c, ...claims }) };
    const { agent, r } = await ssoSignIn();
    expect(r.status).toBe(303);
    if (trusted) {
      expect(r.headers.location).toBe('/files');
      expect(await whoAmI(agent)).toBe('vic');
      expect((await agent.get('/account').set(HTML)).text).toContain('<td data-label="Method">sso+provider-mfa</td>');
    } else {
      expect(r.headers.location).toBe('/login/2fa');
      expect(await whoAmI(agent)).toBeNull();
      const _csrf = await csrfFrom(agent, '/login/2fa');
      expect((await agent.post('/login/2fa').type('form').set(HTML).send({ _csrf, code: await nextCode(secret) })).headers.location).toBe('/files');
      expect(await whoAmI(agent)).toBe('vic');
    }
    const logins = await events('sso.login');
    expect(JSON.parse(logins.at(-1)!.details).providerMfa).toBe(trusted);
  });

  it('a trusted provider sign-in meets REQUIRE_2FA for a user without a local factor', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true', REQUIRE_2FA: 'all', OIDC_TRUST_PROVIDER_MFA: 'on' });
    op.login = { sub: 'wes-sub', email: 'wes@example.com', email_verified: true, preferred_username: 'wes' };
    op.tamper = { claims: (c) => ({ ...c, amr: ['otp'] }) };
    const { agent, r } = await ssoSignIn();
    expect(r.headers.location).toBe('/files');
    expect((await agent.get('/files').set(HTML)).status).toBe(200);
  });

  it('the sign-in list on /account shows an SSO sign-in with method "sso"', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    op.login = { sub: 'xena-sub', email: 'xena@example.com', email_verified: true, preferred_username: 'xena' };
    const { agent } = await ssoSignIn();
    const page = await agent.get('/account').set(HTML);
    expect(page.text).toContain('<td data-label="Method">sso</td>');
  });

  it('a just-in-time SSO user sees no "current password" form; a local user (linked or not) does', async () => {
    await harness({ OIDC_AUTO_CREATE: 'true' });
    op.login = { sub: 'yan-sub', email: 'yan@example.com', email_verified: true, preferred_username: 'yan' };
    const jit = await (await ssoSignIn()).agent.get('/account').set(HTML);
    expect(jit.text).toContain('data-no-local-password');
    expect(jit.text).not.toContain('name="currentPassword"');
    await makeUser(h, adminToken, 'zoe');
    const local = supertest.agent(h.app);
    const _csrf = await csrfFrom(local, '/login');
    await local.post('/login').type('form').set(HTML).send({ _csrf, username: 'zoe', password: 'zoe password 123' });
    const own = await local.get('/account').set(HTML);
    expect(own.text).toContain('name="currentPassword"');
    expect(own.text).not.toContain('data-no-local-password');
  });
});

describe('OIDC settings', () => {
  const base = { OIDC_ISSUER: 'https://id.example.com/realms/staff', OIDC_CLIENT_ID: 'sfs', OIDC_CLIENT_SECRET: 's3cret', PUBLIC_URL: 'https://files.example.com/' };
  it('builds the redirect URI from PUBLIC_URL and reads every setting', () => {
    const c = loadConfig({ ...base, OIDC_SCOPES: 'email groups', OIDC_ALLOWED_DOMAINS: 'Example.com,corp.example', OIDC_ADMIN_CLAIM: 'roles', OIDC_ADMIN_VALUE: 'Admin', OIDC_AUTO_CREATE: 'on', OIDC_NAME: 'Keycloak' }, '/tmp');
    expect(c.oidc).toMatchObject({
      redirectUri: 'https://files.example.com/login/sso/callback',
      scopes: 'openid email groups',
      allowedDomains: ['example.com', 'corp.example'],
      adminClaim: { name: 'roles', value: 'Admin' },
      autoCreate: true,
      disableLocalPasswords: false,
      name: 'Keycloak',
      trustProviderMfa: false,
      mfaAcr: [],
    });
    expect(loadConfig({ ...base, OIDC_TRUST_PROVIDER_MFA: 'on', OIDC_MFA_ACR: 'gold silver' }, '/tmp').oidc).toMatchObject({ trustProviderMfa: true, mfaAcr: ['gold', 'silver'] });
    expect(loadConfig({}, '/tmp').oidc).toBeNull();
  });
  it.each([
    [{ PUBLIC_URL: '' }, 'PUBLIC_URL'],
    [{ OIDC_ISSUER: 'http://id.example.com' }, 'OIDC_ISSUER'],
    [{ OIDC_CLIENT_SECRET: '' }, 'OIDC_CLIENT_SECRET'],
    [{ OIDC_CLIENT_ID: '' }, 'OIDC_CLIENT_ID'],
    [{ OIDC_ADMIN_CLAIM: 'groups' }, 'OIDC_ADMIN_VALUE'],
    [{ OIDC_AUTO_CREATE: 'maybe' }, 'OIDC_AUTO_CREATE'],
    [{ OIDC_TRUST_PROVIDER_MFA: 'yes' }, 'OIDC_TRUST_PROVIDER_MFA'],
    [{ OIDC_ISSUER: '', OIDC_CLIENT_ID: 'x' }, 'OIDC_CLIENT_ID'],
  ])('%o is refused naming %s', (change, variable) => {
    expect(() => loadConfig({ ...base, ...change }, '/tmp')).toThrow(new RegExp(`^${variable}:`));
  });
});
