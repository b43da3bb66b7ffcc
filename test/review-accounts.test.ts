/**
 * Issue 11, accounts items: password checks share the login budgets (4), one username
 * normalisation (5), disabled owners' links and admin control over them and over a departing
 * user's files (6), disabling revokes tokens for good (7), admin password resets are visible
 * (8), and the disabled-account message and CLI exit codes (18).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import supertest from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { ADMIN, binaryParser, listFiles, makeHarness, makeUser, pattern, setupAdmin, tokenFor, type Harness } from './helpers.js';

const SFS = path.resolve(import.meta.dirname, '..', 'dist', 'cli', 'sfs.js');
const harnesses: Harness[] = [];
afterEach(() => {
  for (const x of harnesses.splice(0)) x.cleanup();
});

async function harness(env: Record<string, string> = {}, masterKey?: Buffer): Promise<Harness> {
  const h = await makeHarness(env, { masterKey });
  harnesses.push(h);
  return h;
}

const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });
const HTML = { Accept: 'text/html' };
type Agent = ReturnType<typeof supertest.agent>;

async function csrfFrom(agent: Agent, p: string): Promise<string> {
  const r = await agent.get(p).set(HTML);
  const m = /name="_csrf" value="([^"]+)"/.exec(r.text);
  if (!m) throw new Error(`no CSRF token on ${p} (${r.status})`);
  return m[1]!;
}

async function pageLogin(h: Harness, username: string, password: string, agent: Agent = supertest.agent(h.app)) {
  const _csrf = await csrfFrom(agent, '/login');
  const r = await agent.post('/login').type('form').set(HTML).send({ _csrf, username, password, next: '/files' });
  return { agent, r };
}

const userId = async (h: Harness, name: string) => (await h.sql<{ id: string }>('SELECT id FROM users WHERE username = ?', [name]))[0]!.id;
// Quoted aliases: PostgreSQL folds unquoted names to lower case.
const auditRows = (h: Harness, action: string) =>
  h.sql<{ actor: string; subject: string | null; fileId: string | null; shareId: string | null; details: string }>(
    'SELECT actor, subject_user_id AS subject, file_id AS "fileId", share_id AS "shareId", details FROM audit_events WHERE action = ? ORDER BY seq',
    [action],
  );

async function upload(h: Harness, token: string, name: string, content: Buffer): Promise<string> {
  const r = await h.request.put(`/api/v1/uploads/${name}`).set(bearer(token)).send(content);
  expect(r.status).toBe(201);
  return r.body.file.id as string;
}

async function share(h: Harness, token: string, fileId: string): Promise<{ id: string; token: string }> {
  const r = await h.request.post(`/api/v1/files/${fileId}/shares`).set(bearer(token)).send({});
  expect(r.status).toBe(201);
  return { id: r.body.id, token: r.body.token };
}

/** Runs the built sfs against a harness's directories and master key. */
async function sfs(h: Harness, key: Buffer, args: string[], input?: string) {
  // On the harness' database and store (PostgreSQL and S3 in the "scale" project; the S3 credentials come from the environment).
  const aws = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('AWS_'))) as Record<string, string>;
  const env = { PATH: process.env.PATH ?? '', ...aws, ...h.env, NODE_ENV: 'development', DATA_DIR: h.config.dataDir, UPLOADS_DIR: h.config.uploadsDir, MASTER_KEY: key.toString('base64') };
  // Asynchronous on purpose: the harness' app lives in this process, and work it still has in
  // flight (a transaction holding the database's transaction lock) must be able to finish
  // while the CLI waits for that lock; a synchronous spawn would freeze both forever.
  return new Promise<{ status: number | null; stdout: string; stderr: string; json(): any }>((resolve, reject) => {
    const child = spawn(process.execPath, [SFS, ...args], { env, cwd: h.dir, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr, json: () => JSON.parse(stdout) }));
    child.stdin.end(input ?? '');
  });
}

describe('item 4: every password check shares the login budgets', () => {
  it('wrong currentPassword on PATCH /me is limited; then even the right one is 429, and so is a login', async () => {
    const h = await harness({ LOGIN_RATE_LIMIT: '3' });
    const token = await setupAdmin(h);
    for (let i = 0; i < 3; i++) {
      const r = await h.request.patch('/api/v1/me').set(bearer(token)).send({ currentPassword: `wrong guess ${i}`, newPassword: 'a brand new password' });
      expect(r.status).toBe(403);
    }
    const right = await h.request.patch('/api/v1/me').set(bearer(token)).send({ currentPassword: ADMIN.password, newPassword: 'a brand new password' });
    expect(right.status).toBe(429);
    expect(right.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(right.body.code).toBe('rate_limited');
    expect(Number(right.headers['retry-after'])).toBeGreaterThan(0);
    // The password did not change, and the same account cannot keep guessing by signing in.
    const login = await h.request.post('/api/v1/auth/tokens').send(ADMIN);
    expect(login.status).toBe(429);
    expect(login.body.code).toBe('rate_limited');
  });

  it('wrong sign-ins spend the budget of PATCH /me too', async () => {
    const h = await harness({ LOGIN_RATE_LIMIT: '3' });
    const token = await setupAdmin(h);
    for (let i = 0; i < 3; i++) expect((await h.request.post('/api/v1/auth/tokens').send({ username: 'admin', password: `wrong guess ${i}` })).status).toBe(401);
    const r = await h.request.patch('/api/v1/me').set(bearer(token)).send({ currentPassword: ADMIN.password, newPassword: 'a brand new password' });
    expect(r.status).toBe(429);
    expect(r.body.code).toBe('rate_limited');
  });

  it('POST /account/password is limited the same way, and shares the budget with the sign-in page', async () => {
    const h = await harness({ LOGIN_RATE_LIMIT: '3' });
    await setupAdmin(h);
    const { agent } = await pageLogin(h, ADMIN.username, ADMIN.password);
    const change = async (currentPassword: string) => {
      const _csrf = await csrfFrom(agent, '/account');
      return agent.post('/account/password').type('form').set(HTML).send({ _csrf, currentPassword, newPassword: 'a brand new password', confirm: 'a brand new password' });
    };
    for (let i = 0; i < 3; i++) expect((await change(`wrong guess ${i}`)).status).toBe(400);
    expect((await change(ADMIN.password)).status).toBe(429);
    // Still the old password, and the sign-in form is refused for this account from here too.
    expect((await pageLogin(h, ADMIN.username, ADMIN.password)).r.status).toBe(429);
    expect((await pageLogin(h, ADMIN.username, 'a brand new password')).r.status).toBe(429);
  });

  it('a guesser cannot charge the password-change guesses to another name in the form', async () => {
    const h = await harness({ LOGIN_RATE_LIMIT: '2' });
    await setupAdmin(h);
    const { agent } = await pageLogin(h, ADMIN.username, ADMIN.password);
    for (let i = 0; i < 2; i++) {
      const _csrf = await csrfFrom(agent, '/account');
      const r = await agent.post('/account/password').type('form').set(HTML).send({ _csrf, username: `someone${i}`, currentPassword: `wrong ${i} guess`, newPassword: 'a brand new password', confirm: 'a brand new password' });
      expect(r.status).toBe(400);
    }
    const _csrf = await csrfFrom(agent, '/account');
    const r = await agent.post('/account/password').type('form').set(HTML).send({ _csrf, username: 'someone9', currentPassword: ADMIN.password, newPassword: 'a brand new password', confirm: 'a brand new password' });
    expect(r.status).toBe(429);
  });
});

describe('item 5: one username normalisation for the lookup and every limiter key', () => {
  const variants = [' admin', 'admin  ', '\tadmin', 'ADMIN', 'Admin\n'];
  const surfaces = {
    api: async (h: Harness, username: string, password: string) => (await h.request.post('/api/v1/auth/tokens').send({ username, password })).status,
    page: async (h: Harness, username: string, password: string) => (await pageLogin(h, username, password)).r.status,
  };

  it.each(Object.keys(surfaces) as (keyof typeof surfaces)[])('%s: every spelling signs in and all of them share one budget', async (surface) => {
    const attempt = surfaces[surface];
    const h = await harness({ LOGIN_RATE_LIMIT: String(variants.length) });
    await setupAdmin(h);
    for (const v of variants) expect(await attempt(h, v, ADMIN.password), JSON.stringify(v)).toBe(surface === 'api' ? 201 : 303);
    for (const v of variants) expect(await attempt(h, v, 'not the password'), JSON.stringify(v)).toBe(401);
    // The budget of "admin" is spent, whichever spelling comes next.
    for (const v of ['admin', ...variants]) expect(await attempt(h, v, ADMIN.password), JSON.stringify(v)).toBe(429);
  });
});

describe('item 6: disabled owners, admin control of links, departing users', () => {
  it('a disabled owner\'s link is the same 404 as a missing link at once, and stays so after re-enabling', async () => {
    const h = await harness();
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    const link = await share(h, bob, await upload(h, bob, 'b.txt', Buffer.from('bob data')));
    const missing = randomBytes(32).toString('base64url');
    const strip = (b: Record<string, unknown>) => ({ ...b, requestId: undefined });
    const missingPage = await h.request.get(`/s/${missing}`);
    const missingContent = await h.request.get(`/s/${missing}/content`);
    expect(missingPage.status).toBe(404);
    expect((await h.request.get(`/s/${link.token}/content`)).status).toBe(200);

    // The owner check is in the lookup itself: a disabled flag alone already stops the link.
    await h.sql('UPDATE users SET disabled = 1 WHERE id = ?', [await userId(h, 'bob')]);
    expect((await h.request.get(`/s/${link.token}`)).text).toBe(missingPage.text);
    await h.sql('UPDATE users SET disabled = 0 WHERE id = ?', [await userId(h, 'bob')]);
    expect((await h.request.get(`/s/${link.token}/content`)).status).toBe(200);

    expect((await h.request.patch(`/api/v1/users/${await userId(h, 'bob')}`).set(bearer(admin)).send({ disabled: true })).status).toBe(200);
    for (const when of ['disabled', 're-enabled']) {
      const page = await h.request.get(`/s/${link.token}`);
      expect(page.status, when).toBe(404);
      expect(page.text, when).toBe(missingPage.text);
      const content = await h.request.get(`/s/${link.token}/content`);
      expect(content.status, when).toBe(404);
      expect(content.headers['content-type']).toBe(missingContent.headers['content-type']);
      expect(strip(content.body), when).toEqual(strip(missingContent.body));
      if (when === 'disabled') expect((await h.request.patch(`/api/v1/users/${await userId(h, 'bob')}`).set(bearer(admin)).send({ disabled: false })).status).toBe(200);
    }
    const [row] = await h.sql<{ revoked_at: number | null }>('SELECT revoked_at FROM shares WHERE id = ?', [link.id]);
    expect(row!.revoked_at).not.toBeNull();
    expect(JSON.parse((await auditRows(h, 'user.disable'))[0]!.details)).toMatchObject({ revokedShares: 1 });
  });

  it('admins list and revoke any user\'s links through the API; others cannot', async () => {
    const h = await harness();
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    const carol = await makeUser(h, admin, 'carol');
    const file = await upload(h, bob, 'b.txt', Buffer.from('bob data'));
    const one = await share(h, bob, file);
    const two = await share(h, bob, file);
    const bobId = await userId(h, 'bob');

    const list = await h.request.get(`/api/v1/users/${bobId}/shares`).set(bearer(admin));
    expect(list.status).toBe(200);
    expect(list.body.shares.map((s: { id: string }) => s.id).sort()).toEqual([one.id, two.id].sort());
    expect(JSON.stringify(list.body)).not.toContain(one.token);
    expect((await h.request.get(`/api/v1/users/${bobId}/shares`).set(bearer(carol))).status).toBe(403);
    expect((await h.request.get(`/api/v1/users/${'0'.repeat(32)}/shares`).set(bearer(admin))).status).toBe(404);
    // Another user's share id under bob is not found.
    expect((await h.request.delete(`/api/v1/users/${await userId(h, 'carol')}/shares/${one.id}`).set(bearer(admin))).status).toBe(404);

    expect((await h.request.delete(`/api/v1/users/${bobId}/shares/${one.id}`).set(bearer(admin))).status).toBe(204);
    expect((await h.request.get(`/s/${one.token}/content`)).status).toBe(404);
    expect((await h.request.get(`/s/${two.token}/content`)).status).toBe(200);
    const all = await h.request.delete(`/api/v1/users/${bobId}/shares`).set(bearer(admin));
    expect(all.status).toBe(200);
    expect(all.body).toEqual({ revoked: 1 });
    expect((await h.request.get(`/s/${two.token}/content`)).status).toBe(404);

    const adminId = await userId(h, 'admin');
    expect(await auditRows(h, 'share.revoke')).toEqual([expect.objectContaining({ actor: adminId, subject: bobId, shareId: one.id, fileId: file })]);
    expect(await auditRows(h, 'share.revoke_all')).toEqual([expect.objectContaining({ actor: adminId, subject: bobId })]);
    const doc = (await h.request.get('/api/v1/openapi.json')).body;
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/api/v1/users/{id}/shares', '/api/v1/users/{id}/shares/{shareId}']));
  });

  it('the admin user page lists a user\'s links, revokes one, and deletes the user with a transfer', async () => {
    const h = await harness();
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    await makeUser(h, admin, 'alice');
    const content = pattern(5000, 3);
    const file = await upload(h, bob, 'report.bin', content);
    const link = await share(h, bob, file);
    const bobId = await userId(h, 'bob');
    const { agent } = await pageLogin(h, ADMIN.username, ADMIN.password);
    const page = await agent.get(`/admin/users/${bobId}`).set(HTML);
    expect(page.status).toBe(200);
    expect(page.text).toContain(`/admin/users/${bobId}/shares/${link.id}/revoke`);
    const _csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
    const revoke = await agent.post(`/admin/users/${bobId}/shares/${link.id}/revoke`).type('form').send({ _csrf });
    expect(revoke.status).toBe(303);
    expect((await h.request.get(`/s/${link.token}/content`)).status).toBe(404);

    const wrong = await agent.post(`/admin/users/${bobId}/delete`).type('form').send({ _csrf, files: 'transfer', transferTo: await userId(h, 'alice'), confirmName: 'not bob' });
    expect(wrong.status).toBe(400);
    const none = await agent.post(`/admin/users/${bobId}/delete`).type('form').send({ _csrf, confirmName: 'bob' });
    expect(none.status).toBe(400);
    const del = await agent.post(`/admin/users/${bobId}/delete`).type('form').send({ _csrf, files: 'transfer', transferTo: await userId(h, 'alice'), confirmName: 'bob' });
    expect(del.status).toBe(303);
    expect(del.headers.location).toBe('/admin/users?msg=user-deleted');
    const alice = await tokenFor(h, 'alice', 'alice password 123');
    const got = await h.request.get(`/api/v1/files/${file}/content`).set(bearer(alice)).buffer(true).parse(binaryParser);
    expect(got.status).toBe(200);
    expect(Buffer.compare(got.body as Buffer, content)).toBe(0);
    expect(await auditRows(h, 'user.delete')).toEqual([expect.objectContaining({ actor: await userId(h, 'admin'), subject: bobId })]);
  });

  it('sfs share list / revoke --user, through the built CLI, audited', async () => {
    const key = randomBytes(32);
    const h = await harness({}, key);
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    const file = await upload(h, bob, 'b.txt', Buffer.from('bob data'));
    const one = await share(h, bob, file);
    const two = await share(h, bob, file);
    const three = await share(h, bob, file);

    const list = await sfs(h, key, ['share', 'list', '--user', 'BOB', '--json']);
    expect(list.status).toBe(0);
    expect(list.json().shares.map((s: { id: string }) => s.id).sort()).toEqual([one.id, two.id, three.id].sort());
    expect(list.stdout).not.toContain(one.token);
    expect((await sfs(h, key, ['share', 'list', '--user', 'bob'])).stdout).toContain(one.id);

    const r1 = await sfs(h, key, ['share', 'revoke', '--user', 'bob', one.id]);
    expect(r1.status).toBe(0);
    expect((await h.request.get(`/s/${one.token}/content`)).status).toBe(404);
    expect((await h.request.get(`/s/${two.token}/content`)).status).toBe(200);
    expect((await sfs(h, key, ['share', 'revoke', '--user', 'bob', one.id])).status).toBe(1);
    const all = await sfs(h, key, ['share', 'revoke', '--user', 'bob', '--all', '--json']);
    expect(all.status).toBe(0);
    expect(all.json()).toMatchObject({ revoked: 2 });
    for (const s of [two, three]) expect((await h.request.get(`/s/${s.token}/content`)).status).toBe(404);
    expect((await sfs(h, key, ['share', 'list', '--user', 'bob', '--json'])).json().shares.every((s: { status: string }) => s.status === 'revoked')).toBe(true);
    expect(await auditRows(h, 'share.revoke')).toEqual([expect.objectContaining({ actor: 'cli', subject: await userId(h, 'bob'), shareId: one.id })]);
    expect(JSON.parse((await auditRows(h, 'share.revoke_all'))[0]!.details)).toMatchObject({ revoked: 2, via: 'cli' });
  });

  it('sfs user delete --transfer-to: the receiver has the files, byte-exact; links revoked; audited', async () => {
    const key = randomBytes(32);
    const h = await harness({}, key);
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    const alice = await makeUser(h, admin, 'alice');
    const contents = [pattern(100_000, 5), Buffer.from('small one')];
    const ids = [await upload(h, bob, 'big.bin', contents[0]!), await upload(h, bob, 'small.txt', contents[1]!)];
    const link = await share(h, bob, ids[0]!);
    const bobId = await userId(h, 'bob');
    const aliceId = await userId(h, 'alice');

    const r = await sfs(h, key, ['user', 'delete', 'bob', '--transfer-to', 'alice', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.json()).toMatchObject({ mode: 'transfer', files: 2, receiverId: aliceId });
    const listed = await h.request.get('/api/v1/files').set(bearer(alice));
    expect(listed.body.files.map((f: { id: string }) => f.id).sort()).toEqual([...ids].sort());
    for (const [i, id] of ids.entries()) {
      const got = await h.request.get(`/api/v1/files/${id}/content`).set(bearer(alice)).buffer(true).parse(binaryParser);
      expect(got.status).toBe(200);
      expect(Buffer.compare(got.body as Buffer, contents[i]!)).toBe(0);
    }
    expect((await h.request.get(`/s/${link.token}/content`)).status).toBe(404);
    expect((await h.request.get('/api/v1/me').set(bearer(bob))).status).toBe(401);
    expect(await h.sql('SELECT count(*) AS n FROM users WHERE id = ?', [bobId])).toEqual([{ n: 0 }]);
    expect((await auditRows(h, 'file.transfer')).map((a) => a.fileId).sort()).toEqual([...ids].sort());
    expect((await auditRows(h, 'file.transfer')).every((a) => a.actor === 'cli' && JSON.parse(a.details).from === bobId && JSON.parse(a.details).to === aliceId)).toBe(true);
    expect(await auditRows(h, 'user.delete')).toEqual([expect.objectContaining({ actor: 'cli', subject: bobId })]);
    expect(JSON.parse((await auditRows(h, 'user.delete'))[0]!.details)).toMatchObject({ username: 'bob', mode: 'transfer', files: 2, transferTo: aliceId });
  });

  it('sfs user delete --delete-files: rows and blobs gone, audited; one of the two options is required', async () => {
    const key = randomBytes(32);
    const h = await harness({}, key);
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    const ids = [await upload(h, bob, 'a.bin', pattern(70_000, 2)), await upload(h, bob, 'b.bin', pattern(10, 4))];
    const bobId = await userId(h, 'bob');
    const blobs = async () => (await h.storedBlobs()).filter((f) => ids.some((id) => f.includes(id)));
    expect(await blobs()).toHaveLength(2);

    expect((await sfs(h, key, ['user', 'delete', 'bob'])).status).toBe(2);
    expect((await sfs(h, key, ['user', 'delete', 'bob', '--delete-files', '--transfer-to', 'admin'])).status).toBe(2);
    expect(await h.sql('SELECT count(*) AS n FROM files WHERE owner_id = ?', [bobId])).toEqual([{ n: 2 }]);

    const r = await sfs(h, key, ['user', 'delete', 'bob', '--delete-files']);
    expect(r.status, r.stderr).toBe(0);
    expect(await h.sql('SELECT count(*) AS n FROM files WHERE id IN (?, ?)', [ids[0], ids[1]])).toEqual([{ n: 0 }]);
    expect(await blobs()).toEqual([]);
    expect(await h.sql('SELECT count(*) AS n FROM users WHERE id = ?', [bobId])).toEqual([{ n: 0 }]);
    expect((await auditRows(h, 'file.delete')).map((a) => a.fileId).sort()).toEqual([...ids].sort());
    expect(JSON.parse((await auditRows(h, 'user.delete'))[0]!.details)).toMatchObject({ mode: 'delete', files: 2 });
    expect((await sfs(h, key, ['user', 'delete', 'nobody', '--delete-files'])).status).toBe(1);
  });
});

describe('item 7: disabling revokes tokens for good', () => {
  it('a token of a disabled user stays dead after the user is enabled again', async () => {
    const h = await harness();
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    const bobId = await userId(h, 'bob');
    expect((await h.request.get('/api/v1/me').set(bearer(bob))).status).toBe(200);
    expect((await h.request.patch(`/api/v1/users/${bobId}`).set(bearer(admin)).send({ disabled: true })).status).toBe(200);
    expect((await h.request.patch(`/api/v1/users/${bobId}`).set(bearer(admin)).send({ disabled: false })).status).toBe(200);
    const r = await h.request.get('/api/v1/me').set(bearer(bob));
    expect(r.status).toBe(401);
    expect(r.body.code).toBe('unauthorized');
    expect(await h.sql('SELECT count(*) AS n FROM api_tokens WHERE user_id = ? AND revoked_at IS NULL', [bobId])).toEqual([{ n: 0 }]);
  });
});

describe('item 8: an admin password reset is visible to the user and audited', () => {
  it('the user is told at sign-in, on /account and in /me, until they choose their own password', async () => {
    const h = await harness();
    const admin = await setupAdmin(h);
    await makeUser(h, admin, 'bob');
    const bobId = await userId(h, 'bob');
    const before = Date.now();
    expect((await h.request.patch(`/api/v1/users/${bobId}`).set(bearer(admin)).send({ password: 'set by the admin 1' })).status).toBe(200);

    const { agent, r } = await pageLogin(h, 'bob', 'set by the admin 1');
    expect(r.status).toBe(303);
    const landing = await agent.get(r.headers.location!).set(HTML);
    expect(landing.text).toContain('An administrator reset your password on');
    const account = await agent.get('/account').set(HTML);
    const at = /An administrator reset your password on <time datetime="([^"]+)"/.exec(account.text)?.[1];
    expect(Date.parse(at!)).toBeGreaterThanOrEqual(before - 1000);
    const token = await tokenFor(h, 'bob', 'set by the admin 1');
    expect((await h.request.get('/api/v1/me').set(bearer(token))).body.passwordResetAt).toBe(at);

    const audit = await auditRows(h, 'user.password_reset');
    expect(audit).toEqual([expect.objectContaining({ actor: await userId(h, 'admin'), subject: bobId })]);
    expect(JSON.parse(audit[0]!.details)).toMatchObject({ passwordReset: true });
    expect(audit[0]!.details).not.toContain('set by the admin');

    const _csrf = await csrfFrom(agent, '/account');
    const own = await agent.post('/account/password').type('form').send({ _csrf, currentPassword: 'set by the admin 1', newPassword: 'my very own password', confirm: 'my very own password' });
    expect(own.status).toBe(303);
    expect((await agent.get('/account').set(HTML)).text).not.toContain('An administrator reset your password');
    const fresh = await tokenFor(h, 'bob', 'my very own password');
    expect((await h.request.get('/api/v1/me').set(bearer(fresh))).body.passwordResetAt).toBeNull();
  });
});

describe('item 18: disabled accounts and CLI exit codes', () => {
  it('a disabled account is named only after its correct password (API and page)', async () => {
    const h = await harness();
    const admin = await setupAdmin(h);
    await makeUser(h, admin, 'bob');
    expect((await h.request.patch(`/api/v1/users/${await userId(h, 'bob')}`).set(bearer(admin)).send({ disabled: true })).status).toBe(200);

    const right = await h.request.post('/api/v1/auth/tokens').send({ username: 'bob', password: 'bob password 123' });
    expect(right.status).toBe(403);
    expect(right.body.code).toBe('account_disabled');
    const wrong = await h.request.post('/api/v1/auth/tokens').send({ username: 'bob', password: 'not the password' });
    const unknown = await h.request.post('/api/v1/auth/tokens').send({ username: 'nobody', password: 'not the password' });
    expect(wrong.status).toBe(401);
    expect({ ...wrong.body, requestId: 0 }).toEqual({ ...unknown.body, requestId: 0 });

    const page = await pageLogin(h, 'bob', 'bob password 123');
    expect(page.r.status).toBe(403);
    expect(page.r.text).toContain('This account is disabled');
    const pageWrong = await pageLogin(h, 'bob', 'not the password');
    expect(pageWrong.r.status).toBe(401);
    expect(pageWrong.r.text).toContain('Wrong username or password.');
    expect(pageWrong.r.text).not.toContain('disabled');
  });

  const cases: [string, string[], string | undefined, number][] = [
    ['a short password on user create', ['user', 'create', 'gina'], 'short\n', 2],
    ['a short password on reset-password', ['user', 'reset-password', 'admin'], 'short\n', 2],
    ['an unknown command', ['frobnicate'], undefined, 2],
    ['an unknown flag', ['user', 'list', '--bogus'], undefined, 2],
    ['a missing argument', ['user', 'disable'], undefined, 2],
    ['share list without --user', ['share', 'list'], undefined, 2],
    ['share revoke without an id or --all', ['share', 'revoke', '--user', 'admin'], undefined, 2],
    ['share revoke with a malformed id', ['share', 'revoke', '--user', 'admin', 'xyz'], undefined, 2],
    ['a user that does not exist (not a usage error)', ['user', 'disable', 'nobody'], undefined, 1],
  ];
  it.each(cases)('%s', async (_name, args, input, code) => {
    const key = randomBytes(32);
    const h = await harness({}, key);
    await setupAdmin(h);
    const r = await sfs(h, key, args, input);
    expect(r.status, r.stderr).toBe(code);
    expect(r.stderr).toMatch(/^sfs: /m);
  });
});
