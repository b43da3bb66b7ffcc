/**
 * Second factors over HTTP (issue 16): TOTP enrolment and the second sign-in step on the
 * pages, drift and replay (also across two instances on one database), recovery codes,
 * token creation with `otp`, sudo mode, REQUIRE_2FA on pages and the API, admin reset, key
 * rotation, the password policy, the sign-in list, and no secret left in logs, audit or DB.
 * Codes are computed with otplib from the secret the enrolment page shows; the app's clock is
 * the test's, so time steps are chosen, never waited for.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { generate } from 'otplib';
import supertest from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { Keyring } from '../src/crypto/keyring.js';
import { rotate } from '../src/ops/keys.js';
import { ADMIN, makeHarness, makeUser, setupAdmin, type Harness } from './helpers.js';

const SFS = path.resolve(import.meta.dirname, '..', 'dist', 'cli', 'sfs.js');
type Agent = ReturnType<typeof supertest.agent>;
const HTML = { Accept: 'text/html' };
// A fixed start in the middle of a 30-second step, so ±1 step is exactly ±30 s.
const T0 = Date.UTC(2026, 0, 1, 12, 0, 15);

let harnesses: Harness[] = [];
afterEach(async () => {
  for (const h of harnesses.reverse()) {
    await h.app.services.audit.flush();
    h.cleanup();
  }
  harnesses = [];
});

interface Clocked {
  h: Harness;
  clock: { now: number };
}

async function clocked(env: Record<string, string> = {}, opts: { masterKey?: Buffer; dir?: string; clock?: { now: number } } = {}): Promise<Clocked> {
  const clock = opts.clock ?? { now: T0 };
  const h = await makeHarness(env, { masterKey: opts.masterKey, dir: opts.dir, setupCode: opts.dir ? 'second-instance-code' : undefined, clock: () => clock.now });
  harnesses.push(h);
  return { h, clock };
}

async function csrfFrom(agent: Agent, path: string): Promise<string> {
  const r = await agent.get(path).set(HTML);
  const m = /name="_csrf" value="([^"]+)"/.exec(r.text);
  if (!m) throw new Error(`no CSRF token on ${path} (${r.status} ${r.headers.location ?? ''})`);
  return m[1]!;
}

/** Posts a page form with the CSRF token of `from`. */
async function form(agent: Agent, from: string, path: string, body: Record<string, string> = {}) {
  const _csrf = await csrfFrom(agent, from);
  return agent.post(path).type('form').set(HTML).send({ _csrf, ...body });
}

async function login(h: Harness, username: string, password: string, agent: Agent = supertest.agent(h.app)) {
  const r = await form(agent, '/login', '/login', { username, password, next: '/files' });
  return { agent, r };
}

const code = (secret: string, at: number) => generate({ secret, epoch: Math.floor(at / 1000) });

/** Enrols TOTP on the pages for a signed-in agent; returns the secret and the recovery codes shown. */
async function enrolTotp(agent: Agent, c: Clocked): Promise<{ secret: string; codes: string[] }> {
  const begin = await form(agent, '/account/2fa', '/account/2fa/totp');
  expect(begin.status).toBe(303);
  expect(begin.headers.location).toBe('/account/2fa/totp');
  const page = await agent.get('/account/2fa/totp').set(HTML);
  expect(page.text).toContain('<svg role="img" aria-label="QR code to scan with your authenticator app"');
  const secret = /data-totp-secret>([A-Z2-7]+)</.exec(page.text)![1]!;
  const _csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
  const confirm = await agent.post('/account/2fa/totp/confirm').type('form').set(HTML).send({ _csrf, code: await code(secret, c.clock.now) });
  expect(confirm.status).toBe(303);
  expect(confirm.headers.location).toBe('/account/2fa/recovery-codes');
  const shown = await agent.get('/account/2fa/recovery-codes').set(HTML);
  const codes = [...shown.text.matchAll(/<li><code>([a-z0-9]{5}-[a-z0-9]{5})<\/code><\/li>/g)].map((m) => m[1]!);
  expect(codes).toHaveLength(10);
  // Shown once: a reload shows none.
  expect((await agent.get('/account/2fa/recovery-codes').set(HTML)).text).not.toContain(codes[0]!);
  return { secret, codes };
}

/** Sets up the admin, enrols TOTP for them on the pages; returns everything a case needs. */
async function adminWithTotp(env: Record<string, string> = {}) {
  const c = await clocked(env);
  const token = await setupAdmin(c.h);
  const { agent } = await login(c.h, ADMIN.username, ADMIN.password);
  const enrolled = await enrolTotp(agent, c);
  return { ...c, token, agent, ...enrolled };
}

/** The second step of a page sign-in: password, then the code. */
async function loginWithCode(h: Harness, codeText: string, agent: Agent = supertest.agent(h.app)) {
  const { r } = await login(h, ADMIN.username, ADMIN.password, agent);
  expect(r.status).toBe(303);
  expect(r.headers.location).toBe('/login/2fa');
  // Half signed in: no page treats this session as signed in yet.
  expect((await agent.get('/files').set(HTML)).headers.location).toMatch(/^\/login/);
  const step = await form(agent, '/login/2fa', '/login/2fa', { code: codeText });
  return { agent, step };
}

describe('TOTP on the pages', () => {
  it('enrols with a QR code and one code, then signs in in two steps; ±1 step is accepted, ±2 and a replay are refused', async () => {
    const c = await adminWithTotp();
    const { h, clock, secret } = c;
    const ok = await loginWithCode(h, await code(secret, clock.now + 30_000));
    expect(ok.step.status).toBe(303);
    expect(ok.step.headers.location).toBe('/files');
    expect((await ok.agent.get('/files').set(HTML)).status).toBe(200);

    // The same code again (same step): refused, on this session or any other.
    const replay = await loginWithCode(h, await code(secret, clock.now + 30_000));
    expect(replay.step.status).toBe(401);
    expect(replay.step.text).toContain('That code is not right');

    clock.now += 10 * 60_000;
    for (const [offset, accepted] of [
      [-60_000, false],
      [60_000, false],
      [-30_000, true],
      [0, true],
      [30_000, true],
    ] as const) {
      const r = await loginWithCode(h, await code(secret, clock.now + offset));
      expect({ offset, status: r.step.status }).toEqual({ offset, status: accepted ? 303 : 401 });
    }
    const actions = (await h.sql<{ action: string }>("SELECT action FROM audit_events WHERE action LIKE 'mfa.%'")).map((r) => r.action);
    expect(actions).toContain('mfa.enrol');
    expect(actions).toContain('mfa.verify');
    expect(actions).toContain('mfa.failure');
  });

  it('a recovery code signs in once, is audited and shown to the user; regenerating voids the old ones', async () => {
    const { h, codes, agent } = await adminWithTotp();
    const first = await loginWithCode(h, codes[0]!.toUpperCase());
    expect(first.step.status).toBe(303);
    expect(first.step.headers.location).toBe('/account/2fa?msg=recovery-used');
    expect((await first.agent.get('/account/2fa?msg=recovery-used').set(HTML)).text).toMatch(/recovery code; it cannot be used again[\s\S]*<span data-recovery-remaining>9</);
    expect((await loginWithCode(h, codes[0]!)).step.status).toBe(401);
    expect((await h.sql("SELECT 1 FROM audit_events WHERE action = 'mfa.recovery_used'")).length).toBe(1);

    const regen = await form(agent, '/account/2fa', '/account/2fa/recovery-codes');
    expect(regen.headers.location).toBe('/account/2fa/recovery-codes');
    expect((await loginWithCode(h, codes[1]!)).step.status).toBe(401);
  });

  it('wrong codes spend the sign-in budget of the account', async () => {
    const c = await clocked({ LOGIN_RATE_LIMIT: '3' });
    await setupAdmin(c.h);
    const { agent } = await login(c.h, ADMIN.username, ADMIN.password);
    await enrolTotp(agent, c);
    const { agent: a2 } = await login(c.h, ADMIN.username, ADMIN.password);
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await form(a2, '/login/2fa', '/login/2fa', { code: '000000' })).status);
    expect(statuses.slice(0, 2)).toEqual([401, 401]);
    expect(statuses.at(-1)).toBe(429);
  });
});

describe('replay across instances', () => {
  it('a code accepted by one instance is refused by another on the same database', async () => {
    const c = await adminWithTotp();
    // A second app on the same database and directory, with the same master key.
    const masterKey = c.h.keyring.active.material;
    const other = await makeHarness({}, { masterKey, dir: c.h.dir, setupCode: 'instance-b-code', clock: () => c.clock.now });
    harnesses.push(other);
    // The next step (the enrolment used the current one).
    const otp = await code(c.secret, c.clock.now + 30_000);
    const [ra, rb] = await Promise.all([
      c.h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, otp }),
      other.request.post('/api/v1/auth/tokens').send({ ...ADMIN, otp }),
    ]);
    expect([ra.status, rb.status].sort()).toEqual([201, 401]);
    expect([ra.body.code, rb.body.code]).toContain('otp_invalid');
  });
});

describe('API token creation', () => {
  it('asks for otp_required, refuses otp_invalid, accepts a code or a recovery code (once)', async () => {
    const { h, clock, secret, codes } = await adminWithTotp();
    const none = await h.request.post('/api/v1/auth/tokens').send(ADMIN);
    expect(none.status).toBe(401);
    expect(none.body.code).toBe('otp_required');
    const wrong = await h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, otp: '123456' === (await code(secret, clock.now)) ? '654321' : '123456' });
    expect(wrong.status).toBe(401);
    expect(wrong.body.code).toBe('otp_invalid');
    // The enrolment used the current step: the current code is a replay now.
    expect((await h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, otp: await code(secret, clock.now) })).body.code).toBe('otp_invalid');
    const ok = await h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, otp: await code(secret, clock.now + 30_000) });
    expect(ok.status).toBe(201);
    const rec = await h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, otp: codes[3] });
    expect(rec.status).toBe(201);
    const again = await h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, otp: codes[3] });
    expect(again.body.code).toBe('otp_invalid');
    // A wrong password is still just that, second factor or not.
    expect((await h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, password: 'not the password', otp: await code(secret, clock.now + 30_000) })).body.code).toBe('unauthorized');
  });
});

describe('sudo mode', () => {
  it('sensitive actions need a fresh proof: after the window they go to /sudo, and a password or code reopens it', async () => {
    const { h, clock, agent, secret } = await adminWithTotp({ SUDO_MODE_SECONDS: '300' });
    // Fresh from signing in: a page token is created.
    expect((await form(agent, '/tokens', '/tokens', { name: 'in window', expires: '86400' })).headers.location).toBe('/tokens/new');
    clock.now += 301_000;
    for (const [from, path, body] of [
      ['/tokens', '/tokens', { name: 'late', expires: '86400' }],
      ['/account', '/account/password', { currentPassword: ADMIN.password, newPassword: 'a brand new password', confirm: 'a brand new password' }],
      ['/account/2fa', '/account/2fa/recovery-codes', {}],
      ['/account/2fa', '/account/2fa/totp/remove', {}],
      ['/admin/users', '/admin/users', { username: 'zed', password: 'zed password 123' }],
    ] as const) {
      const r = await form(agent, from, path, body);
      expect({ path, status: r.status, location: r.headers.location }).toEqual({ path, status: 303, location: `/sudo?next=${encodeURIComponent(from)}` });
    }
    expect((await h.sql("SELECT 1 FROM users WHERE username = 'zed'")).length).toBe(0);
    const page = await agent.get('/sudo?next=%2Ftokens').set(HTML);
    expect(page.text).toContain('Re-authenticate to continue');
    const wrong = await form(agent, '/sudo', '/sudo', { password: 'not my password', next: '/tokens' });
    expect(wrong.status).toBe(401);
    const back = await form(agent, '/sudo', '/sudo', { password: ADMIN.password, next: '/tokens' });
    expect(back.headers.location).toBe('/tokens');
    expect((await form(agent, '/tokens', '/tokens', { name: 'after sudo', expires: '86400' })).headers.location).toBe('/tokens/new');
    clock.now += 301_000;
    const byCode = await form(agent, '/sudo', '/sudo', { code: await code(secret, clock.now), next: '/admin/users' });
    expect(byCode.headers.location).toBe('/admin/users');
    expect((await form(agent, '/admin/users', '/admin/users', { username: 'zed', password: 'zed password 123' })).headers.location).toBe('/admin/users?msg=user-created');
  });
});

describe('REQUIRE_2FA', () => {
  it('users without a factor can only enrol; their API tokens stop working until they do', async () => {
    const c = await clocked();
    const adminToken = await setupAdmin(c.h);
    const userToken = await makeUser(c.h, adminToken, 'alice');
    const { agent: admin } = await login(c.h, ADMIN.username, ADMIN.password);
    // The admin switch (admin actions need a fresh proof: signing in just gave one).
    expect((await form(admin, '/admin/users', '/admin/policy', { require2fa: 'all' })).headers.location).toBe('/admin/users?msg=policy-updated');
    expect((await admin.get('/files').set(HTML)).headers.location).toBe('/account/2fa?required=1');

    const refused = await c.h.request.get('/api/v1/files').set('Authorization', `Bearer ${userToken}`);
    expect(refused.status).toBe(401);
    expect(refused.body.code).toBe('mfa_enrolment_required');
    expect(refused.body.detail).toContain('second factor');
    expect((await c.h.request.post('/api/v1/auth/tokens').send({ username: 'alice', password: 'alice password 123' })).body.code).toBe('mfa_enrolment_required');

    const { agent: alice, r } = await login(c.h, 'alice', 'alice password 123');
    expect(r.headers.location).toBe('/account/2fa?required=1');
    for (const path of ['/', '/files', '/tokens', '/account']) expect((await alice.get(path).set(HTML)).headers.location).toBe('/account/2fa?required=1');
    expect((await alice.get('/account/2fa?required=1').set(HTML)).text).toContain('Your administrator requires a second factor');
    await enrolTotp(alice, c);
    expect((await alice.get('/files').set(HTML)).status).toBe(200);
    expect((await c.h.request.get('/api/v1/files').set('Authorization', `Bearer ${userToken}`)).status).toBe(200);
  });

  it('REQUIRE_2FA=admins covers admins only', async () => {
    const c = await clocked({ REQUIRE_2FA: 'admins' });
    const adminToken = await setupAdmin(c.h).catch(() => null);
    // The first admin's token creation is refused: they have no factor yet.
    expect(adminToken).toBeNull();
    const r = await c.h.request.post('/api/v1/auth/tokens').send(ADMIN);
    expect(r.body.code).toBe('mfa_enrolment_required');
  });
});

describe('admin reset of second factors', () => {
  it('removes every factor of a user, is audited, needs sudo, and the user is told at the next sign-in', async () => {
    const c = await clocked();
    const adminToken = await setupAdmin(c.h);
    await makeUser(c.h, adminToken, 'bob');
    const { agent: bob } = await login(c.h, 'bob', 'bob password 123');
    await enrolTotp(bob, c);
    const bobId = (await c.h.sql<{ id: string }>("SELECT id FROM users WHERE username = 'bob'"))[0]!.id;
    const { agent: admin } = await login(c.h, ADMIN.username, ADMIN.password);
    c.clock.now += 3600_000;
    const stale = await form(admin, `/admin/users/${bobId}`, `/admin/users/${bobId}/mfa/reset`);
    expect(stale.headers.location).toBe(`/sudo?next=${encodeURIComponent(`/admin/users/${bobId}`)}`);
    await form(admin, '/sudo', '/sudo', { password: ADMIN.password, next: '/admin/users' });
    const done = await form(admin, `/admin/users/${bobId}`, `/admin/users/${bobId}/mfa/reset`);
    expect(done.headers.location).toBe(`/admin/users/${bobId}?msg=mfa-user-reset`);
    expect(await c.h.sql('SELECT * FROM mfa_totp')).toEqual([]);
    expect((await c.h.sql("SELECT details FROM audit_events WHERE action = 'mfa.reset'")).length).toBe(1);
    const again = await login(c.h, 'bob', 'bob password 123');
    expect(again.r.headers.location).toBe('/account?msg=mfa-reset');
    expect((await again.agent.get('/account?msg=mfa-reset').set(HTML)).text).toContain('An administrator reset your second factors');
    // Told once.
    expect((await login(c.h, 'bob', 'bob password 123')).r.headers.location).toBe('/files');
  });
});

describe('sfs user reset-2fa', () => {
  it('lets the host back in when the last admin lost their phone', async () => {
    const key = randomBytes(32);
    const c = await clocked({}, { masterKey: key });
    await setupAdmin(c.h);
    const { agent } = await login(c.h, ADMIN.username, ADMIN.password);
    await enrolTotp(agent, c);
    expect((await c.h.request.post('/api/v1/auth/tokens').send(ADMIN)).body.code).toBe('otp_required');
    const r = spawnSync(process.execPath, [SFS, 'user', 'reset-2fa', 'admin', '--json'], {
      // The process environment too: on the scale run it carries the S3 credentials.
      env: { ...process.env, ...c.h.env, MASTER_KEY: key.toString('base64') },
      cwd: c.h.dir,
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ user: 'admin', totp: true, recoveryCodes: 10 });
    expect((await c.h.request.post('/api/v1/auth/tokens').send(ADMIN)).status).toBe(201);
    expect((await c.h.sql<{ actor: string }>("SELECT actor FROM audit_events WHERE action = 'mfa.reset'")).map((e) => e.actor)).toEqual(['cli']);
  });
});

describe('key rotation', () => {
  it('`sfs key rotate` reseals the TOTP secret under the new key, and codes keep working', async () => {
    const oldKey = randomBytes(32);
    const c = await clocked({}, { masterKey: oldKey });
    await setupAdmin(c.h);
    const { agent } = await login(c.h, ADMIN.username, ADMIN.password);
    const { secret } = await enrolTotp(agent, c);
    const newKey = randomBytes(32);
    const ring = new Keyring(newKey, [oldKey]);
    const result = await rotate(c.h.database, ring);
    expect(result.failed).toEqual([]);
    const rows = await c.h.sql<{ key_id: string }>('SELECT key_id FROM mfa_totp');
    expect(rows.map((r) => r.key_id)).toEqual([ring.active.id]);
    // A server holding only the new key signs in with the same authenticator.
    const after = await makeHarness({}, { masterKey: newKey, dir: c.h.dir, setupCode: 'after-rotation', clock: () => c.clock.now });
    harnesses.push(after);
    const r = await after.request.post('/api/v1/auth/tokens').send({ ...ADMIN, otp: await code(secret, c.clock.now + 30_000) });
    expect(r.status).toBe(201);
  });
});

describe('password policy', () => {
  it.each([
    ['a common password', 'password1234'],
    ['another common one', 'qwertyuiop'],
    ['the username', 'carol.smith'],
    ['the username in capitals', 'CAROL.SMITH'],
  ])('refuses %s', async (_label, password) => {
    const c = await clocked();
    const token = await setupAdmin(c.h);
    const r = await c.h.request.post('/api/v1/users').set('Authorization', `Bearer ${token}`).send({ username: 'carol.smith', password });
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('validation_error');
    expect(await c.h.sql("SELECT 1 FROM users WHERE username = 'carol.smith'")).toEqual([]);
  });
});

describe('the account page', () => {
  it('lists sign-ins from the audit log with address, browser and method', async () => {
    const c = await clocked();
    await setupAdmin(c.h);
    const agent = supertest.agent(c.h.app);
    const _csrf = await csrfFrom(agent, '/login');
    await agent.post('/login').type('form').set(HTML).set('User-Agent', 'TestBrowser/1.0').send({ _csrf, ...ADMIN });
    const page = await agent.get('/account').set(HTML);
    const table = /<table data-signins>([\s\S]*?)<\/table>/.exec(page.text)![1]!;
    expect(table).toContain('TestBrowser/1.0');
    expect(table).toMatch(/<td data-label="Method">password<\/td>/);
    expect(table).toMatch(/API token \(password\)/);
  });
});

describe('a database writer without the master key', () => {
  it('cannot move a sealed TOTP secret to another user, nor plant a passkey', async () => {
    const c = await adminWithTotp();
    const adminToken = (await c.h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, otp: await code(c.secret, c.clock.now + 30_000) })).body.token as string;
    await makeUser(c.h, adminToken, 'dave');
    const dave = (await c.h.sql<{ id: string }>("SELECT id FROM users WHERE username = 'dave'"))[0]!.id;
    const [row] = await c.h.sql<{ key_id: string; sealed: Buffer }>('SELECT key_id, sealed FROM mfa_totp');
    // Dave's row gets the admin's sealed secret: the writer knows the admin's codes, not the key.
    await c.h.sql('INSERT INTO mfa_totp (user_id, key_id, sealed, confirmed_at, last_step, created_at) VALUES (?, ?, ?, ?, 0, ?)', [dave, row!.key_id, row!.sealed, c.clock.now, c.clock.now]);
    const moved = await c.h.request.post('/api/v1/auth/tokens').send({ username: 'dave', password: 'dave password 123', otp: await code(c.secret, c.clock.now + 60_000) });
    expect(moved.status).toBe(500);
    expect(moved.body.code).toBe('integrity_error');

    // A passkey row for another user with a key of the writer's own: not a factor, not a credential.
    await makeUser(c.h, adminToken, 'erin');
    const erin = (await c.h.sql<{ id: string }>("SELECT id FROM users WHERE username = 'erin'"))[0]!.id;
    await c.h.sql('INSERT INTO mfa_passkeys (id, user_id, name, public_key, counter, transports, row_mac, created_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?)', ['planted', erin, 'x', randomBytes(77), '', randomBytes(32), c.clock.now]);
    expect((await c.h.request.post('/api/v1/auth/tokens').send({ username: 'erin', password: 'erin password 123' })).status).toBe(201);
    expect(await c.h.app.services.mfa.passkeys.byId('planted')).toBeUndefined();
  });
});

describe('secrets at rest', () => {
  it('no TOTP secret or recovery code in the database, the audit log or the logs', async () => {
    const { h, secret, codes, clock } = await adminWithTotp();
    await loginWithCode(h, codes[5]!);
    await h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, otp: await code(secret, clock.now + 30_000) });
    await h.app.services.audit.flush();
    const needles = [secret, secret.toLowerCase(), ...codes, ...codes.map((x) => x.replace('-', ''))];
    const dump = JSON.stringify(await h.tableRows(), (_k, v: unknown) => (v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' ? Buffer.from((v as { data: number[] }).data).toString('latin1') : v));
    const logs = h.logLines.join('\n');
    for (const n of needles) {
      expect(dump.includes(n), `database holds ${n.slice(0, 4)}…`).toBe(false);
      expect(logs.includes(n), `logs hold ${n.slice(0, 4)}…`).toBe(false);
    }
    expect((await h.sql('SELECT sealed FROM mfa_totp')).length).toBe(1);
  });
});
