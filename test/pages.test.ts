/**
 * Page routes without a browser (supertest): session cookies and timeouts, CSRF, the API
 * ignoring sessions, uploads through the encrypting pipeline, and friendly error pages.
 * The Chromium suite (test/browser) covers what a person sees and does.
 */
import fs from 'node:fs';
import supertest from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { ADMIN, listFiles, makeHarness, makeUser, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

type Agent = ReturnType<typeof supertest.agent>;
const HTML = { Accept: 'text/html' };

/** The CSRF token of the first form on a page. */
async function csrfFrom(agent: Agent, path: string): Promise<string> {
  const r = await agent.get(path).set(HTML);
  const m = /name="_csrf" value="([^"]+)"/.exec(r.text);
  if (!m) throw new Error(`no CSRF token on ${path} (${r.status})`);
  return m[1]!;
}

/** Signs in through the login form; returns the agent (with its cookies) and the response. */
async function signIn(username = ADMIN.username, password = ADMIN.password, agent: Agent = supertest.agent(h.app)) {
  const _csrf = await csrfFrom(agent, '/login');
  const r = await agent.post('/login').type('form').set(HTML).send({ _csrf, username, password, next: '/files' });
  return { agent, r };
}

function sessionCookie(setCookie: string[] | string | undefined, name = 'sfs-session'): string | undefined {
  const all = Array.isArray(setCookie) ? setCookie : setCookie ? [setCookie] : [];
  return all.find((c) => c.startsWith(`${name}=`));
}

const rows = () => h.sql<{ sid: string; sess: string; expired: string }>('SELECT sid, sess, expired FROM sessions');

describe('sessions', () => {
  it('sign-in sets an HttpOnly, SameSite=Lax cookie; the database keeps only a hash of the id', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const { r } = await signIn();
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/files');
    const cookie = sessionCookie(r.headers['set-cookie'])!;
    expect(cookie).toMatch(/; HttpOnly/);
    expect(cookie).toMatch(/; SameSite=Lax/);
    expect(cookie).not.toMatch(/; Secure/);
    expect(cookie).toMatch(/; Expires=/);
    // The cookie is s:<id>.<signature>; the row is keyed by HMAC(k_lookup, SHA-256(id)), not a plain hash.
    const id = decodeURIComponent(cookie.split(';')[0]!.split('=')[1]!).slice(2).split('.')[0]!;
    const stored = await rows();
    expect(stored).toHaveLength(1);
    expect(stored[0]!.sid).toBe(h.app.services.sessions.keyOf(id));
    expect(stored[0]!.sid).not.toBe(createHash('sha256').update(id).digest('hex'));
    expect(JSON.stringify(stored)).not.toContain(id);
  });

  it('is Secure with a __Host- name when the request came over HTTPS through a trusted proxy', async () => {
    h = await makeHarness({ TRUST_PROXY: 'loopback' });
    await setupAdmin(h);
    const agent = supertest.agent(h.app);
    const page = await agent.get('/login').set('X-Forwarded-Proto', 'https');
    const _csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
    const csrfCookie = (page.headers['set-cookie'] as unknown as string[]).find((c) => c.startsWith('__Host-sfs-csrf='))!;
    const r = await supertest(h.app)
      .post('/login')
      .set('X-Forwarded-Proto', 'https')
      .set('Cookie', csrfCookie.split(';')[0]!)
      .type('form')
      .send({ _csrf, username: ADMIN.username, password: ADMIN.password });
    expect(r.status).toBe(303);
    const cookie = sessionCookie(r.headers['set-cookie'], '__Host-sfs-session')!;
    expect(cookie).toMatch(/; Secure/);
    expect(cookie).toMatch(/; Path=\//);
    expect(cookie).not.toMatch(/Domain=/);
    // Without the trusted proxy's word the same request is plain HTTP.
    h.cleanup();
    h = await makeHarness();
    await setupAdmin(h);
    const plain = await supertest(h.app).get('/login').set('X-Forwarded-Proto', 'https');
    expect(String(plain.headers['set-cookie'])).not.toContain('__Host-');
  });

  it('signing in again issues a new session id and the old one stops working', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const { agent, r } = await signIn();
    const first = sessionCookie(r.headers['set-cookie'])!.split(';')[0]!;
    // Signing in over a live session (the login form posted from another tab).
    const _csrf = await csrfFrom(agent, '/files');
    const again = await agent.post('/login').type('form').send({ _csrf, username: ADMIN.username, password: ADMIN.password });
    expect(again.status).toBe(303);
    const second = sessionCookie(again.headers['set-cookie'])!.split(';')[0]!;
    expect(second).not.toBe(first);
    const old = await supertest(h.app).get('/files').set('Cookie', first).set(HTML);
    expect(old.status).toBe(303);
    expect(old.headers.location).toBe('/login?next=%2Ffiles');
    expect((await supertest(h.app).get('/files').set('Cookie', second)).status).toBe(200);
  });

  it('ends after the idle timeout and after the absolute timeout, whatever the activity', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const { agent } = await signIn();
    expect((await agent.get('/files')).status).toBe(200);
    // Idle: the store's expiry (pushed forward by every request) has passed.
    await h.sql('UPDATE sessions SET expired = ?', [new Date(Date.now() - 1000).toISOString()]);
    expect((await agent.get('/files')).headers.location).toMatch(/^\/login/);

    const fresh = await signIn();
    expect((await fresh.agent.get('/files')).status).toBe(200);
    expect(await h.app.services.sessions.sweep()).toBe(1);
    expect(await rows()).toHaveLength(1);
    // Absolute: signed in longer ago than SESSION_MAX_AGE_SECONDS (24 h), even if active a second ago.
    // (Re-sealed with the app's key, as the server itself would write it: an unsealed edit is refused on its own.)
    for (const row of await rows()) {
      const sess = { ...JSON.parse(row.sess), createdAt: Date.now() - 24 * 3600_000 - 1000 };
      sess.seal = h.app.services.sessions.seal(row.sid, sess);
      await h.sql('UPDATE sessions SET sess = ? WHERE sid = ?', [JSON.stringify(sess), row.sid]);
    }
    const r = await fresh.agent.get('/files');
    expect(r.status).toBe(303);
    expect(r.headers.location).toMatch(/^\/login/);
    expect(await rows()).toHaveLength(0);
  });

  it('a disabled user and a reset password end the sessions at once (from the API too)', async () => {
    h = await makeHarness();
    const admin = await setupAdmin(h);
    await makeUser(h, admin, 'bob');
    const bob = (await signIn('bob', 'bob password 123')).agent;
    expect((await bob.get('/files')).status).toBe(200);
    const bobId = (await h.app.services.accounts.users.byUsername('bob'))!.id;
    const r = await h.request.patch(`/api/v1/users/${bobId}`).set('Authorization', `Bearer ${admin}`).send({ disabled: true });
    expect(r.status).toBe(200);
    expect((await bob.get('/files')).headers.location).toMatch(/^\/login/);
    // The right password of a disabled account: refused, and named as disabled (issue 11 item 18).
    expect((await signIn('bob', 'bob password 123')).r.status).toBe(403);
  });

  it('the account page lists sessions and ends another one; a password change ends the rest and the API tokens', async () => {
    h = await makeHarness();
    const token = await setupAdmin(h);
    const laptop = (await signIn()).agent;
    const phone = (await signIn()).agent;
    const page = await laptop.get('/account');
    expect(page.text.match(/<form method="post" action="\/account\/sessions\//g)).toHaveLength(2);
    expect(page.text).toContain('this browser');
    // The row marked "this browser" carries the laptop's key; end the other one.
    const keys = [...page.text.matchAll(/<tr>([\s\S]*?)<\/tr>/g)]
      .map((m) => ({ current: m[1]!.includes('this browser'), key: /\/account\/sessions\/([0-9a-f]{64})\/end/.exec(m[1]!)?.[1] }))
      .filter((k) => k.key);
    expect(keys.map((k) => k.current).sort()).toEqual([false, true]);
    const other = keys.find((k) => !k.current)!.key!;
    const _csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
    const end = await laptop.post(`/account/sessions/${other}/end`).type('form').send({ _csrf });
    expect(end.status).toBe(303);
    expect(end.headers.location).toBe('/account?msg=session-ended');
    expect((await laptop.get('/files')).status).toBe(200);
    expect((await phone.get('/files')).headers.location).toMatch(/^\/login/);
    const survivor = laptop;

    const third = (await signIn()).agent;
    const csrf2 = await csrfFrom(survivor, '/account');
    const change = await survivor
      .post('/account/password')
      .type('form')
      .send({ _csrf: csrf2, currentPassword: ADMIN.password, newPassword: 'a brand new password', confirm: 'a brand new password' });
    expect(change.status).toBe(303);
    expect(change.headers.location).toBe('/account?msg=password-changed');
    expect((await survivor.get('/files')).status).toBe(200);
    expect((await third.get('/files')).headers.location).toMatch(/^\/login/);
    expect((await h.request.get('/api/v1/me').set('Authorization', `Bearer ${token}`)).status).toBe(401);
  });

  it.each([
    ['signed in through instance A, signed out through instance B', 0, 1],
    ['signed in through instance B, signed out through instance A', 1, 0],
  ])('one session for every instance on the database: %s ends it on both', async (_name, inVia, outVia) => {
    // Two apps on one database and one master key, as two instances behind a load balancer
    // (the same SQLite file, or the same PostgreSQL database in the "scale" project).
    const masterKey = randomBytes(32);
    h = await makeHarness({}, { masterKey });
    await setupAdmin(h);
    const second = await makeHarness({}, { masterKey, dir: h.dir });
    try {
      const apps = [h.app, second.app];
      const agents = apps.map((app) => supertest.agent(app));
      // One browser: both agents share one cookie jar (same host, as behind one load balancer).
      (agents[1] as unknown as { jar: unknown }).jar = (agents[0] as unknown as { jar: unknown }).jar;
      const { r } = await signIn(ADMIN.username, ADMIN.password, agents[inVia]);
      expect(r.status).toBe(303);
      for (const a of agents) expect((await a.get('/files').set(HTML)).status).toBe(200);
      const _csrf = await csrfFrom(agents[outVia]!, '/files');
      const out = await agents[outVia]!.post('/logout').type('form').set(HTML).send({ _csrf });
      expect(out.status).toBe(303);
      // The browser keeps replaying the old cookie on each instance: both send it to sign in.
      const cookie = sessionCookie(r.headers['set-cookie'])!.split(';')[0]!;
      for (const app of apps) {
        const again = await supertest(app).get('/files').set('Cookie', cookie).set(HTML);
        expect(again.status).toBe(303);
        expect(again.headers.location).toMatch(/^\/login/);
      }
      expect(await rows()).toHaveLength(0);
    } finally {
      await second.database.close();
      h.contractViolations.push(...second.contractViolations);
    }
  });

  it('a request moves only the row\'s expiry; the sealed data is not rewritten', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const { agent } = await signIn();
    const [before] = await rows();
    // Close to its idle deadline, but live.
    await h.sql('UPDATE sessions SET expired = ?', [new Date(Date.now() + 5_000).toISOString()]);
    expect((await agent.get('/files').set(HTML)).status).toBe(200);
    const [after] = await rows();
    expect(after!.sid).toBe(before!.sid);
    expect(after!.sess).toBe(before!.sess);
    // Pushed out to about a full idle timeout (SESSION_IDLE_TIMEOUT_SECONDS, 2 h) from now.
    expect(Date.parse(after!.expired) - Date.now()).toBeGreaterThan(3600_000);
  });

  // (Text that is not JSON at all cannot be written: both dialects index the user inside it.)
  it.each(['null', '[]', '"admin"', '{}'])('a session row whose data is %s is no session at all, and is reported', async (sess) => {
    h = await makeHarness();
    await setupAdmin(h);
    const { agent } = await signIn();
    expect((await agent.get('/files').set(HTML)).status).toBe(200);
    await h.sql('UPDATE sessions SET sess = ?', [sess]);
    const r = await agent.get('/files').set(HTML);
    expect(r.status).toBe(303);
    expect(r.headers.location).toMatch(/^\/login/);
    expect(h.logLines.some((l) => l.includes('integrity check failed') && l.includes('sessions'))).toBe(true);
  });

  it('a session store that cannot reach the database answers each page request once, with the 500 page', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const { agent } = await signIn();
    expect((await agent.get('/files').set(HTML)).status).toBe(200);
    // The database goes away (the SQLite handle closed, the PostgreSQL pool ended).
    if (h.dialect === 'sqlite') h.db.close();
    else await h.database.close();
    const r = await agent.get('/files').set(HTML);
    expect(r.status).toBe(500);
    expect(r.text).toContain('Something went wrong on our side');
    expect(r.text).not.toMatch(/at .*\.js|\/src\//);
  });

  it('the API ignores the session cookie', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const { agent } = await signIn();
    const r = await agent.get('/api/v1/me');
    expect(r.status).toBe(401);
    expect(r.headers['content-type']).toContain('application/problem+json');
  });

  it('follows ?next= only to local paths', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    for (const next of ['//evil.example/x', 'https://evil.example/', '/\\evil.example']) {
      const agent = supertest.agent(h.app);
      const _csrf = await csrfFrom(agent, '/login');
      const r = await agent.post('/login').type('form').send({ _csrf, username: ADMIN.username, password: ADMIN.password, next });
      expect(r.headers.location, next).toBe('/');
    }
  });
});

describe('CSRF and page errors', () => {
  it('a state-changing POST without a valid token is refused with 403 and changes nothing', async () => {
    h = await makeHarness();
    const token = await setupAdmin(h);
    const { agent } = await signIn();
    const html = await agent.post('/tokens').type('form').set(HTML).send({ name: 'x', expires: '86400' });
    expect(html.status).toBe(403);
    expect(html.headers['content-type']).toContain('text/html');
    expect(html.text).toContain('This form has expired');
    const wrong = await agent.post('/tokens').type('form').send({ _csrf: 'forged', name: 'x', expires: '86400' });
    expect(wrong.status).toBe(403);
    expect(wrong.body.code).toBe('csrf_invalid');
    // A token from another session does not work either.
    const other = (await signIn()).agent;
    const foreign = await csrfFrom(other, '/tokens');
    expect((await agent.post('/tokens').type('form').send({ _csrf: foreign, name: 'x', expires: '86400' })).status).toBe(403);
    const list = await h.request.get('/api/v1/auth/tokens').set('Authorization', `Bearer ${token}`);
    expect(list.body.tokens).toHaveLength(1);
  });

  it('an upload without the token in the URL or header is refused before anything is stored', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const { agent } = await signIn();
    const r = await agent.post('/upload').set('Accept', 'application/json').attach('file', Buffer.alloc(100_000, 1), 'a.bin');
    expect(r.status).toBe(403);
    expect(r.headers.connection).toBe('close');
    expect(await h.sql('SELECT count(*) AS n FROM files')).toEqual([{ n: 0 }]);
    expect(await h.storedBlobs()).toEqual([]);
  });

  it('page uploads go through the encrypting pipeline: the plaintext is never on disk', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const { agent } = await signIn();
    const _csrf = await csrfFrom(agent, '/');
    const marker = 'PAGE-UPLOAD-MARKER-7d1f0c';
    const json = await agent.post(`/upload?_csrf=${encodeURIComponent(_csrf)}`).set('Accept', 'application/json').attach('file', Buffer.from(`${marker}\n`.repeat(2000)), 'm.txt');
    expect(json.status).toBe(201);
    expect(json.body.files[0]).toMatchObject({ name: 'm.txt', size: (marker.length + 1) * 2000 });
    // The form without JavaScript: same route, token in a header this time, redirect back.
    const form = await agent.post('/upload').set('X-CSRF-Token', _csrf).set(HTML).attach('file', Buffer.from(marker), 'n.txt');
    expect(form.status).toBe(303);
    expect(form.headers.location).toMatch(/^\/\?uploaded=[0-9a-f]{32}$/);
    const back = await agent.get(form.headers.location);
    expect(back.text).toContain('n.txt');
    if (h.dialect === 'sqlite') h.db.pragma('wal_checkpoint(FULL)');
    for (const f of [...listFiles(h.config.uploadsDir), ...listFiles(h.config.dataDir)]) {
      expect(fs.readFileSync(f).includes(Buffer.from(marker)), f).toBe(false);
    }
    // And every blob as the store holds it (the bucket's objects on S3).
    for (const { id } of await h.sql<{ id: string }>('SELECT id FROM files')) {
      expect((await h.readBlob(id)).includes(Buffer.from(marker)), id).toBe(false);
    }
    const via = h.dialect === 'postgres' ? `(details::json)->>'via'` : `json_extract(details, '$.via')`;
    const audit = await h.sql(`SELECT count(*) AS n FROM audit_events WHERE action = 'file.upload' AND ${via} = 'page'`);
    expect(audit).toEqual([{ n: 2 }]);
    // Nor in any database row (on PostgreSQL the rows are not in data/).
    for (const [table, tableRows] of Object.entries(await h.tableRows())) {
      for (const row of tableRows) {
        for (const [col, v] of Object.entries(row)) expect((Buffer.isBuffer(v) ? v : Buffer.from(String(v))).includes(Buffer.from(marker)), `${table}.${col}`).toBe(false);
      }
    }
  });

  it('413 and 404 are friendly pages for browsers and stay problem+json for scripts', async () => {
    h = await makeHarness({ MAX_FILE_SIZE: '1KiB' });
    await setupAdmin(h);
    const { agent } = await signIn();
    const _csrf = await csrfFrom(agent, '/');
    const big = await agent.post(`/upload?_csrf=${encodeURIComponent(_csrf)}`).set(HTML).attach('file', Buffer.alloc(64 * 1024, 7), 'big.bin');
    expect(big.status).toBe(413);
    expect(big.headers['content-type']).toContain('text/html');
    expect(big.text).toContain('File too large');
    expect(big.text).toContain('Nothing was stored');
    const missing = await agent.get('/files/0123456789abcdef0123456789abcdef').set(HTML);
    expect(missing.status).toBe(404);
    expect(missing.text).toContain('Page not found');
    const script = await supertest(h.app).get('/nowhere');
    expect(script.status).toBe(404);
    expect(script.headers['content-type']).toContain('application/problem+json');
    const deadLink = `/s/${'A'.repeat(43)}/content`;
    const gone = await supertest(h.app).get(deadLink).set(HTML);
    expect(gone.status).toBe(404);
    expect(gone.text).toContain('This link is not available');
    expect((await supertest(h.app).get(deadLink)).headers['content-type']).toContain('application/problem+json');
    const api = await supertest(h.app).get('/api/v1/nowhere').set(HTML);
    expect(api.headers['content-type']).toContain('application/problem+json');
  });

  it('a 500 page shows a reference and no internals', async () => {
    h = await makeHarness();
    await setupAdmin(h);
    const { agent } = await signIn();
    const _csrf = await csrfFrom(agent, '/');
    const up = await agent.post(`/upload?_csrf=${encodeURIComponent(_csrf)}`).set('Accept', 'application/json').attach('file', Buffer.alloc(5000, 3), 'x.bin');
    const id = up.body.files[0].id as string;
    // Damage the first chunk where it is stored: the download fails verification before any byte is sent.
    const bytes = await h.readBlob(id);
    bytes[bytes.length - 20]! ^= 0xff;
    await h.writeBlob(id, bytes);
    const r = await agent.get(`/files/${id}/download`).set(HTML);
    expect(r.status).toBe(500);
    expect(r.text).toContain('Something went wrong on our side');
    expect(r.text).toContain(String(r.headers['x-request-id']));
    expect(r.text).not.toMatch(/IntegrityError|at .*\.js|\/src\//);
  });

  it('admin pages are for admins; setup closes once done', async () => {
    h = await makeHarness();
    const admin = await setupAdmin(h);
    await makeUser(h, admin, 'carol');
    const { agent } = await signIn('carol', 'carol password 123');
    const r = await agent.get('/admin/users').set(HTML);
    expect(r.status).toBe(403);
    expect(r.text).toContain('for administrators');
    const setup = await agent.get('/setup');
    expect(setup.status).toBe(303);
    expect(setup.headers.location).toBe('/login');

    // The admin disables carol from the users page: her open session ends at once.
    const adminAgent = (await signIn()).agent;
    const _csrf = await csrfFrom(adminAgent, '/admin/users');
    const carolId = (await h.app.services.accounts.users.byUsername('carol'))!.id;
    const quota = await adminAgent.post(`/admin/users/${carolId}`).type('form').send({ _csrf, op: 'quota', quota: 'lots' });
    expect(quota.status).toBe(400);
    expect(quota.text).toContain('is not a size');
    const off = await adminAgent.post(`/admin/users/${carolId}`).type('form').send({ _csrf, op: 'disable' });
    expect(off.headers.location).toBe('/admin/users?msg=user-updated');
    expect((await agent.get('/files')).headers.location).toMatch(/^\/login/);
    // The last active admin cannot disable themselves.
    const adminId = (await h.app.services.accounts.users.byUsername(ADMIN.username))!.id;
    const self = await adminAgent.post(`/admin/users/${adminId}`).type('form').send({ _csrf, op: 'disable' });
    expect(self.status).toBe(400);
    expect(self.text).toContain('last active admin');
  });
});

describe('link forms refuse bad options', () => {
  // One row per refusal; each is posted to the single-file link form and to the bundle form,
  // which share the check, and neither may create a link.
  const bad: [string, Record<string, string>, string][] = [
    ['lifetime below a minute', { expires: '59' }, 'Choose how long the link should work.'],
    ['lifetime not a number', { expires: 'soon' }, 'Choose how long the link should work.'],
    ['downloads zero', { maxDownloads: '0' }, 'Maximum downloads must be a whole number from 1 to 1,000,000'],
    ['downloads fractional', { maxDownloads: '1.5' }, 'Maximum downloads must be a whole number from 1 to 1,000,000'],
    ['note too long', { note: 'x'.repeat(501) }, 'The note can have at most 500 characters.'],
  ];
  it.each(bad)('%s: 400 with the form message on both forms, no link', async (_name, fields, message) => {
    h = await makeHarness();
    const token = await setupAdmin(h);
    const ids: string[] = [];
    for (const name of ['a.txt', 'b.txt']) {
      const up = await h.request.put(`/api/v1/uploads/${name}`).set('Authorization', `Bearer ${token}`).send(Buffer.from(name));
      ids.push(up.body.file.id as string);
    }
    const { agent } = await signIn();
    const good = { expires: '3600', maxDownloads: '', note: '' };
    // Each form's token first: a GET may renew the CSRF cookie, and a request takes the jar's cookies when built.
    const fileCsrf = await csrfFrom(agent, `/files/${ids[0]}`);
    const single = await agent.post(`/files/${ids[0]}/shares`).type('form').set(HTML).send({ _csrf: fileCsrf, ...good, ...fields });
    expect(single.status).toBe(400);
    expect(single.text).toContain(message);
    const filesCsrf = await csrfFrom(agent, '/files');
    const bundle = await agent.post('/bundles').type('form').set(HTML).send(`${new URLSearchParams({ _csrf: filesCsrf, ...good, ...fields })}&fileIds=${ids[0]}&fileIds=${ids[1]}`);
    expect(bundle.status).toBe(400);
    expect(bundle.text).toContain(message);
    expect(await h.sql('SELECT id FROM shares')).toEqual([]);
  });
});
