/** Setup, tokens, the caller's account, admin user management, auth failures and rate limits. */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SetupCode } from '../src/services/accounts.js';
import { ADMIN, SETUP_CODE, makeHarness, makeUser, setupAdmin, tokenFor, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });

describe('first-run setup', () => {
  it('refuses a missing or wrong code, then creates the first admin once', async () => {
    h = await makeHarness();
    const missing = await h.request.post('/api/v1/setup').send({ username: 'admin', password: ADMIN.password });
    expect(missing.status).toBe(400);
    expect(missing.body.code).toBe('validation_error');
    expect(missing.body.detail).toContain('setupCode');
    const wrong = await h.request.post('/api/v1/setup').send({ setupCode: 'nope', ...ADMIN });
    expect(wrong.status).toBe(403);
    expect(wrong.headers['content-type']).toMatch(/^application\/problem\+json/);
    const ok = await h.request.post('/api/v1/setup').send({ setupCode: SETUP_CODE, ...ADMIN });
    expect(ok.status).toBe(201);
    expect(ok.body.user).toMatchObject({ username: 'admin', role: 'admin', disabled: false });
    expect(JSON.stringify(ok.body)).not.toContain('password');
    const again = await h.request.post('/api/v1/setup').send({ setupCode: SETUP_CODE, username: 'second', password: ADMIN.password });
    expect(again.status).toBe(409);
    expect(again.body.code).toBe('setup_closed');
  });

  it('two racing setup requests create exactly one admin', async () => {
    h = await makeHarness();
    const [a, b] = await Promise.all([
      h.request.post('/api/v1/setup').send({ setupCode: SETUP_CODE, username: 'alice', password: ADMIN.password }),
      h.request.post('/api/v1/setup').send({ setupCode: SETUP_CODE, username: 'bob', password: ADMIN.password }),
    ]);
    expect([a.status, b.status].sort()).toEqual([201, 409]);
    expect(await h.sql('SELECT count(*) AS n FROM users')).toEqual([{ n: 1 }]);
  });

  it('rejects a short password with a message naming the field', async () => {
    h = await makeHarness();
    const r = await h.request.post('/api/v1/setup').send({ setupCode: SETUP_CODE, username: 'admin', password: 'short' });
    expect(r.status).toBe(400);
    expect(r.body.detail).toContain('password');
  });

  it('setup-code attempts are rate limited', async () => {
    h = await makeHarness();
    let last = 0;
    let retryAfter: string | undefined;
    for (let i = 0; i < 12; i++) {
      const r = await h.request.post('/api/v1/setup').send({ setupCode: `guess-${i}`, ...ADMIN });
      last = r.status;
      retryAfter = r.headers['retry-after'];
    }
    expect(last).toBe(429);
    expect(Number(retryAfter)).toBeGreaterThan(0);
  });

  it('the code file is deleted once used', async () => {
    h = await makeHarness();
    const file = path.join(h.dir, 'setup-code');
    // As on a new database: no code stored yet, so this proposal becomes the code.
    await h.database.kysely.deleteFrom('setup_code').execute();
    const code = SetupCode.generate(file);
    const shown = (await code.establish(h.database.kysely, h.keyring))!;
    expect(code.reveal()).toBe(shown);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(shown.length).toBeGreaterThanOrEqual(27); // 160 bits in base64url
    expect(fs.readFileSync(file, 'utf8').trim()).toBe(shown);
    expect(await code.matches(shown)).toBe(true);
    // The app holds its own SetupCode object; the stored code is what both check against.
    expect((await h.request.post('/api/v1/setup').send({ setupCode: shown, ...ADMIN })).status).toBe(201);
    expect(await code.matches(shown)).toBe(false);
    code.forget();
    expect(fs.existsSync(file)).toBe(false);
  });
});

describe('API tokens', () => {
  it('create, use, list without secrets, revoke', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const created = await h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, name: 'laptop', expiresInSeconds: 3600 });
    expect(created.status).toBe(201);
    expect(created.body.token).toMatch(/^sfs_[A-Za-z0-9_-]{43}$/);
    expect(Date.parse(created.body.expiresAt) - Date.parse(created.body.createdAt)).toBe(3600_000);
    const token = created.body.token as string;
    // Only a hash is stored.
    const stored = await h.sql<{ token_hash: Buffer }>('SELECT token_hash FROM api_tokens');
    expect(stored.some((r) => r.token_hash.toString('latin1').includes(token))).toBe(false);

    const me = await h.request.get('/api/v1/me').set(bearer(token));
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ username: 'admin', role: 'admin', usageBytes: 0 });

    const list = await h.request.get('/api/v1/auth/tokens').set(bearer(token));
    expect(list.body.tokens.map((t: { name: string }) => t.name)).toContain('laptop');
    expect(JSON.stringify(list.body)).not.toContain('sfs_');
    const mine = list.body.tokens.find((t: { name: string }) => t.name === 'laptop');
    expect(mine.lastUsedAt).not.toBeNull();

    const del = await h.request.delete(`/api/v1/auth/tokens/${created.body.id}`).set(bearer(token));
    expect(del.status).toBe(204);
    const after = await h.request.get('/api/v1/me').set(bearer(token));
    expect(after.status).toBe(401);
  });

  it('wrong password and unknown user look the same', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const wrong = await h.request.post('/api/v1/auth/tokens').send({ username: 'admin', password: 'wrong password!!' });
    const unknown = await h.request.post('/api/v1/auth/tokens').send({ username: 'ghost', password: 'wrong password!!' });
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    expect({ ...wrong.body, requestId: '' }).toEqual({ ...unknown.body, requestId: '' });
  });

  it('rejects an expiry beyond the maximum', async () => {
    h = await makeHarness({ TOKEN_MAX_TTL: '3600', TOKEN_DEFAULT_TTL: '600' });
    await setupAdmin(h);
    const r = await h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, expiresInSeconds: 7200 });
    expect(r.status).toBe(400);
    expect(r.body.detail).toContain('expiresInSeconds');
  });

  it.each([
    ['no header', undefined],
    ['wrong scheme', 'Basic YWRtaW46eA=='],
    ['malformed', 'Bearer'],
    ['unknown token', 'Bearer sfs_' + 'A'.repeat(43)],
    ['very long', 'Bearer ' + 'x'.repeat(10_000)],
  ])('401 with WWW-Authenticate for %s', async (_name, header) => {
    h = await makeHarness();
    await setupAdmin(h);
    const req = h.request.get('/api/v1/files');
    const r = await (header ? req.set('Authorization', header) : req);
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toMatch(/^Bearer/);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(r.body).toMatchObject({ status: 401, code: 'unauthorized', type: expect.any(String), title: expect.any(String), requestId: expect.any(String) });
  });

  it('ignores cookies on the API', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const r = await h.request.get('/api/v1/me').set('Cookie', 'sid=whatever; session=abc');
    expect(r.status).toBe(401);
  });

  it('an expired token stops working', async () => {
    h = await makeHarness();
    const token = await setupAdmin(h);
    await h.sql('UPDATE api_tokens SET expires_at = ?', [Date.now() - 1]);
    expect((await h.request.get('/api/v1/me').set(bearer(token))).status).toBe(401);
  });

  it('password guessing is rate limited per IP+username with Retry-After', async () => {
    h = await makeHarness({ LOGIN_RATE_LIMIT: '3' });
    await setupAdmin(h);
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await h.request.post('/api/v1/auth/tokens').send({ username: 'admin', password: `wrong ${i} password` });
      statuses.push(r.status);
      if (r.status === 429) {
        expect(r.body.code).toBe('rate_limited');
        expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
      }
    }
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    // Another username from the same IP is not locked out by that.
    const other = await h.request.post('/api/v1/auth/tokens').send({ username: 'someone', password: 'wrong password x' });
    expect(other.status).toBe(401);
  });

  it('a forged X-Forwarded-For does not change the rate-limit identity when TRUST_PROXY is off', async () => {
    h = await makeHarness({ LOGIN_RATE_LIMIT: '2' });
    await setupAdmin(h);
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await h.request.post('/api/v1/auth/tokens').set('X-Forwarded-For', `10.0.0.${i}`).send({ username: 'admin', password: 'wrong password!' });
      statuses.push(r.status);
    }
    expect(statuses).toEqual([401, 401, 429, 429]);
  });
});

describe('own account and admin user management', () => {
  it('PATCH /me changes the password and revokes the other tokens', async () => {
    h = await makeHarness();
    const t1 = await setupAdmin(h);
    const t2 = await tokenFor(h, ADMIN.username, ADMIN.password);
    const wrong = await h.request.patch('/api/v1/me').set(bearer(t1)).send({ currentPassword: 'not it at all', newPassword: 'a brand new password' });
    expect(wrong.status).toBe(403);
    const ok = await h.request.patch('/api/v1/me').set(bearer(t1)).send({ currentPassword: ADMIN.password, newPassword: 'a brand new password' });
    expect(ok.status).toBe(200);
    expect(ok.body.revokedTokens).toBe(1);
    expect((await h.request.get('/api/v1/me').set(bearer(t1))).status).toBe(200);
    expect((await h.request.get('/api/v1/me').set(bearer(t2))).status).toBe(401);
    expect((await h.request.post('/api/v1/auth/tokens').send(ADMIN)).status).toBe(401);
    expect((await h.request.post('/api/v1/auth/tokens').send({ username: 'admin', password: 'a brand new password' })).status).toBe(201);
  });

  it('admins create, list and disable users; a disabled user is cut off at once', async () => {
    h = await makeHarness();
    const admin = await setupAdmin(h);
    const userToken = await makeUser(h, admin, 'carol');
    expect((await h.request.get('/api/v1/users').set(bearer(userToken))).status).toBe(403);
    expect((await h.request.post('/api/v1/users').set(bearer(userToken)).send({ username: 'x', password: 'long enough pw' })).status).toBe(403);
    const list = await h.request.get('/api/v1/users').set(bearer(admin));
    expect(list.body.users.map((u: { username: string }) => u.username)).toEqual(['admin', 'carol']);
    expect(JSON.stringify(list.body)).not.toMatch(/argon|hash/i);
    const carol = list.body.users[1];
    const dup = await h.request.post('/api/v1/users').set(bearer(admin)).send({ username: 'CAROL', password: 'long enough pw' });
    expect(dup.status).toBe(409);
    const dis = await h.request.patch(`/api/v1/users/${carol.id}`).set(bearer(admin)).send({ disabled: true });
    expect(dis.status).toBe(200);
    expect(dis.body.disabled).toBe(true);
    expect((await h.request.get('/api/v1/me').set(bearer(userToken))).status).toBe(401);
    // With the right password a disabled account is named as such (issue 11 item 18).
    expect((await h.request.post('/api/v1/auth/tokens').send({ username: 'carol', password: 'carol password 123' })).status).toBe(403);
    const bad = await h.request.patch(`/api/v1/users/${carol.id}`).set(bearer(admin)).send({ role: 'root' });
    expect(bad.status).toBe(400);
    expect(bad.body.detail).toContain('role');
    const self = list.body.users[0];
    const last = await h.request.patch(`/api/v1/users/${self.id}`).set(bearer(admin)).send({ disabled: true });
    expect(last.status).toBe(409);
  });

  it('admin password reset revokes the user tokens', async () => {
    h = await makeHarness();
    const admin = await setupAdmin(h);
    const userToken = await makeUser(h, admin, 'dave');
    const dave = (await h.request.get('/api/v1/users').set(bearer(admin))).body.users[1];
    const r = await h.request.patch(`/api/v1/users/${dave.id}`).set(bearer(admin)).send({ password: 'reset password 99' });
    expect(r.status).toBe(200);
    expect((await h.request.get('/api/v1/me').set(bearer(userToken))).status).toBe(401);
    expect((await h.request.post('/api/v1/auth/tokens').send({ username: 'dave', password: 'reset password 99' })).status).toBe(201);
  });
});

describe('errors and security headers', () => {
  it.each([
    ['malformed JSON', (r: Harness['request']) => r.post('/api/v1/auth/tokens').set('Content-Type', 'application/json').send('{"username":'), 400, 'invalid_json'],
    ['wrong types', (r: Harness['request']) => r.post('/api/v1/auth/tokens').send({ username: 5, password: [] }), 400, 'validation_error'],
    ['unknown fields', (r: Harness['request']) => r.post('/api/v1/auth/tokens').send({ username: 'a', password: 'b', admin: true }), 400, 'validation_error'],
    ['huge JSON', (r: Harness['request']) => r.post('/api/v1/auth/tokens').send({ username: 'a', password: 'x'.repeat(200_000) }), 413, 'payload_too_large'],
    ['unknown API route without a token', (r: Harness['request']) => r.get('/api/v1/nope'), 401, 'unauthorized'],
  ] as const)('%s', async (_name, call, status, code) => {
    h = await makeHarness();
    const r = await call(h.request);
    expect(r.status).toBe(status);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(r.body.code).toBe(code);
    expect(r.body.requestId).toBe(r.headers['x-request-id']);
  });

  it('unknown API route with a token is a 404 problem', async () => {
    h = await makeHarness();
    const token = await setupAdmin(h);
    const r = await h.request.get('/api/v1/nope').set(bearer(token));
    expect(r.status).toBe(404);
    expect(r.body.code).toBe('not_found');
  });

  it('health and readiness', async () => {
    h = await makeHarness();
    expect((await h.request.get('/healthz')).body).toEqual({ status: 'ok' });
    expect((await h.request.get('/readyz')).status).toBe(200);
    if (h.storage === 'disk') {
      fs.chmodSync(h.config.uploadsDir, 0o500);
      try {
        const r = await h.request.get('/readyz');
        // root ignores permissions; only assert the failure where the OS enforces them
        if (process.getuid?.() !== 0) expect(r.status).toBe(503);
      } finally {
        fs.chmodSync(h.config.uploadsDir, 0o700);
      }
    }
    // The database gone (the SQLite handle closed; the PostgreSQL pool ended): not ready.
    if (h.dialect === 'sqlite') h.db.close();
    else await h.database.close();
    const r = await h.request.get('/readyz');
    expect(r.status).toBe(503);
    expect(r.body.code).toBe('not_ready');
    if (h.dialect === 'sqlite') h.db = (await (await import('../src/db/database.js')).openDatabase(h.config.dbFile)).raw!;
  });

  it('pages carry a strict CSP without upgrade-insecure-requests, and no x-powered-by', async () => {
    h = await makeHarness();
    // "/" now sends a fresh server to its setup page.
    const r = await h.request.get('/setup');
    expect(r.status).toBe(200);
    const csp = r.headers['content-security-policy'];
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("style-src 'self'");
    expect(csp).not.toContain('upgrade-insecure-requests');
    expect(csp).not.toContain('unsafe-inline');
    expect(r.headers['x-powered-by']).toBeUndefined();
  });

  it('logs carry request ids and never the token or password', async () => {
    h = await makeHarness();
    const token = await setupAdmin(h);
    await h.request.get('/api/v1/me').set(bearer(token));
    await h.request.get(`/api/v1/files?x=${token}`).set(bearer(token));
    const all = h.logLines.join('\n');
    expect(all).toContain('"id"');
    expect(all).not.toContain(token);
    expect(all).not.toContain(token.slice(4));
    expect(all).not.toContain(ADMIN.password);
    expect(all).not.toContain(SETUP_CODE);
  });
});
