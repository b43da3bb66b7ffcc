/**
 * Issue 11, "Integrity against someone who can write the database but has no master key".
 * Every forgery is made the way such a person would make it: by writing the database
 * directly (a separate connection: better-sqlite3 on the file, or a pg client on the
 * PostgreSQL database), computing only what needs no key
 * (SHA-256, argon2id of a password they know, HMACs under keys they could guess). Each row
 * asserts on what the client actually received.
 */
import Database from 'better-sqlite3';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import supertest from 'supertest';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CURRENT_WRAP_VERSION, unwrapDek, wrapDek } from '../src/crypto/envelope.js';
import { Keyring } from '../src/crypto/keyring.js';
import { bindingOf, FilesRepo } from '../src/db/files.js';
import { rotate } from '../src/ops/keys.js';
import { PasswordHasher } from '../src/services/passwords.js';
import { verifyAuditChain } from '../src/services/audit.js';
import { ADMIN, TEST_DIALECT, binaryParser, makeHarness, makeUser, pattern, separateConnection, setupAdmin, tokenFor, type Harness, type SqlConnection } from './helpers.js';

const HTML = { Accept: 'text/html' };
const BOB_PASSWORD = 'bob password 123';
const sha256 = (s: string | Buffer) => createHash('sha256').update(s).digest();

let h: Harness | undefined;
let extra: Harness[] = [];
afterEach(async () => {
  h?.cleanup();
  h = undefined;
  for (const x of extra) await x.database.close();
  extra = [];
});

/** Runs SQL on the attacker's own connection to the database: no key, no app, just SQL. */
async function forge(target: Harness, run: (db: SqlConnection) => Promise<unknown>): Promise<void> {
  const db = await separateConnection(target);
  try {
    await run(db);
  } finally {
    await db.close();
  }
}

type Agent = ReturnType<typeof supertest.agent>;

async function pageSignIn(target: Harness, username: string, password: string): Promise<{ agent: Agent; status: number; cookie: string | undefined }> {
  const agent = supertest.agent(target.app);
  const page = await agent.get('/login').set(HTML);
  const csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
  const r = await agent.post('/login').type('form').set(HTML).send({ _csrf: csrf, username, password, next: '/files' });
  const cookie = ([] as string[]).concat(r.headers['set-cookie'] ?? []).find((c) => c.startsWith('sfs-session='));
  return { agent, status: r.status, cookie: cookie?.split(';')[0] };
}

/** The session id inside a signed cookie value `sfs-session=s:<id>.<sig>`. */
const sidOf = (cookie: string) => decodeURIComponent(cookie.split('=')[1]!).slice(2).split('.')[0]!;

async function world() {
  h = await makeHarness();
  const adminToken = await setupAdmin(h);
  const bobToken = await makeUser(h, adminToken, 'bob');
  const adminId = (await h.request.get('/api/v1/me').set('Authorization', `Bearer ${adminToken}`)).body.id as string;
  const bobId = (await h.request.get('/api/v1/me').set('Authorization', `Bearer ${bobToken}`)).body.id as string;
  const secret = Buffer.concat([Buffer.from('ADMIN-ONLY-PLAINTEXT '), pattern(5000, 3)]);
  const up = await h.request.put('/api/v1/uploads/payroll.txt').set('Authorization', `Bearer ${adminToken}`).send(secret);
  expect(up.status).toBe(201);
  const bobUp = await h.request.put('/api/v1/uploads/bob.txt').set('Authorization', `Bearer ${bobToken}`).send(Buffer.from('bob own file'));
  expect(bobUp.status).toBe(201);
  return { h, adminToken, bobToken, adminId, bobId, secret, adminFile: up.body.file.id as string, bobFile: bobUp.body.file.id as string };
}
type World = Awaited<ReturnType<typeof world>>;

const api = (w: World, token: string, path: string) => w.h.request.get(`/api/v1${path}`).set('Authorization', `Bearer ${token}`);

/** A response body never says why: no mention of integrity, MACs or rows. */
function saysNothing(body: unknown): void {
  expect(JSON.stringify(body ?? '')).not.toMatch(/integrity|mac|tamper|row/i);
}

/** The app logged an integrity warning and the audit log has an integrity.violation about `subject`. */
async function reported(w: World, subject: string | null): Promise<void> {
  expect(w.h.logLines.some((l) => l.includes('integrity check failed'))).toBe(true);
  // A violation found by the session store is recorded beside the answer, not before it: on a
  // database across the network the row may land a moment after the response.
  const rows = await vi.waitFor(
    async () => {
      const r = await w.h.sql<{ s: string | null; outcome: string }>("SELECT subject_user_id AS s, outcome FROM audit_events WHERE action = 'integrity.violation'");
      expect(r.length).toBeGreaterThan(0);
      return r;
    },
    { timeout: 5000, interval: 50 },
  );
  if (subject !== null) expect(rows.map((r) => r.s)).toContain(subject);
  expect(rows.every((r) => r.outcome === 'denied')).toBe(true);
}

interface Forgery {
  name: string;
  run(w: World): Promise<void>;
}

const FORGERIES: Forgery[] = [
  {
    name: "owner change of a file: bob cannot read the admin's file",
    async run(w) {
      await forge(w.h, (db) => db.sql('UPDATE files SET owner_id = ? WHERE id = ?', [w.bobId, w.adminFile]));
      const r = await api(w, w.bobToken, `/files/${w.adminFile}/content`).buffer(true).parse(binaryParser);
      expect(r.status).toBe(500);
      expect(r.headers['content-type']).toMatch(/problem\+json/);
      const body = r.body as Buffer;
      expect(body.includes(Buffer.from('ADMIN-ONLY'))).toBe(false);
      expect(body.includes(w.secret.subarray(100, 132))).toBe(false);
      expect(JSON.parse(body.toString()).code).toBe('integrity_error');
      // A range read and the pages fare no better.
      const ranged = await api(w, w.bobToken, `/files/${w.adminFile}/content`).set('Range', 'bytes=0-20').buffer(true).parse(binaryParser);
      expect(ranged.status).toBe(500);
      expect((ranged.body as Buffer).includes(Buffer.from('ADMIN-ONLY'))).toBe(false);
    },
  },
  ...[
    ['sha256(token)', (t: string) => sha256(t)],
    ['sha256(sha256(token))', (t: string) => sha256(sha256(t))],
    ['HMAC(empty key, sha256(token))', (t: string) => createHmac('sha256', Buffer.alloc(0)).update(sha256(t)).digest()],
    ['HMAC(zero key, sha256(token))', (t: string) => createHmac('sha256', Buffer.alloc(32)).update(sha256(t)).digest()],
    ['the raw token bytes', (t: string) => Buffer.from(t)],
  ].map(([how, hashOf]) => ({
    name: `API token insertion with ${how as string} for the admin → 401`,
    async run(w: World) {
      const chosen = 'sfs_' + randomBytes(32).toString('base64url');
      await forge(w.h, async (db) => {
        const id = randomBytes(16).toString('hex');
        await db.sql(`INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at) VALUES (?, ?, 'forged', ?, ?, ?)`, [
          id,
          w.adminId,
          (hashOf as (t: string) => Buffer)(chosen),
          Date.now(),
          Date.now() + 86400_000,
        ]);
        // A real row's MAC copied along, in case that helps (it must not). (Tolerant of the first release's schema, so this table also runs there.)
        const columns = Object.keys((await db.sql('SELECT * FROM api_tokens LIMIT 1'))[0]!);
        if (columns.includes('row_mac')) await db.sql('UPDATE api_tokens SET row_mac = (SELECT row_mac FROM api_tokens WHERE row_mac IS NOT NULL LIMIT 1) WHERE id = ?', [id]);
      });
      for (const path of ['/me', '/users', `/files/${w.adminFile}/content`]) {
        const r = await api(w, chosen, path);
        expect(r.status).toBe(401);
        expect(r.text).not.toContain('ADMIN-ONLY');
      }
    },
  })),
  {
    name: "API token moved to the admin (user_id changed): bob's token gets nothing",
    async run(w) {
      await forge(w.h, (db) => db.sql('UPDATE api_tokens SET user_id = ? WHERE user_id = ?', [w.adminId, w.bobId]));
      for (const path of ['/me', '/users', `/files/${w.adminFile}/content`]) {
        const r = await api(w, w.bobToken, path);
        expect(r.status).toBe(401);
        expect(r.text).not.toContain('ADMIN-ONLY');
        saysNothing(r.body);
      }
      await reported(w, w.adminId);
    },
  },
  {
    name: 'API token expiry extended by SQL → 401',
    async run(w) {
      await forge(w.h, (db) => db.sql('UPDATE api_tokens SET expires_at = expires_at + 86400000 WHERE user_id = ?', [w.bobId]));
      expect((await api(w, w.bobToken, '/me')).status).toBe(401);
    },
  },
  {
    name: 'a revoked API token un-revoked by SQL (revoked_at cleared) → 401',
    async run(w) {
      const list = await api(w, w.bobToken, '/auth/tokens');
      const id = list.body.tokens[0].id as string;
      expect((await w.h.request.delete(`/api/v1/auth/tokens/${id}`).set('Authorization', `Bearer ${w.bobToken}`)).status).toBe(204);
      expect((await api(w, w.bobToken, '/me')).status).toBe(401);
      await forge(w.h, (db) => db.sql('UPDATE api_tokens SET revoked_at = NULL WHERE id = ?', [id]));
      expect((await api(w, w.bobToken, '/me')).status).toBe(401);
      await reported(w, w.bobId);
    },
  },
  {
    name: 'a revoked link un-revoked by SQL → 404',
    async run(w) {
      const made = await w.h.request.post(`/api/v1/files/${w.adminFile}/shares`).set('Authorization', `Bearer ${w.adminToken}`).send({});
      expect((await w.h.request.delete(`/api/v1/shares/${made.body.id}`).set('Authorization', `Bearer ${w.adminToken}`)).status).toBe(204);
      await forge(w.h, (db) => db.sql('UPDATE shares SET revoked_at = NULL WHERE id = ?', [made.body.id]));
      const r = await w.h.request.get(`/s/${made.body.token}/content`).buffer(true).parse(binaryParser);
      expect(r.status).toBe(404);
      expect((r.body as Buffer).includes(Buffer.from('ADMIN-ONLY'))).toBe(false);
    },
  },
  {
    name: "a one-download link's spent download reset by SQL (downloads, bytes_served = 0) → 404",
    async run(w) {
      const made = await w.h.request.post(`/api/v1/files/${w.adminFile}/shares`).set('Authorization', `Bearer ${w.adminToken}`).send({ maxDownloads: 1 });
      const once = await w.h.request.get(`/s/${made.body.token}/content`).buffer(true).parse(binaryParser);
      expect((once.body as Buffer).equals(w.secret)).toBe(true);
      expect((await w.h.request.get(`/s/${made.body.token}/content`)).status).toBe(404);
      await forge(w.h, (db) => db.sql('UPDATE shares SET downloads = 0, bytes_served = 0 WHERE id = ?', [made.body.id]));
      const again = await w.h.request.get(`/s/${made.body.token}/content`).buffer(true).parse(binaryParser);
      expect(again.status).toBe(404);
      expect((again.body as Buffer).includes(Buffer.from('ADMIN-ONLY'))).toBe(false);
    },
  },
  {
    name: "share insertion with a chosen token (sha256) for the admin's file → 404",
    async run(w) {
      const chosen = randomBytes(32).toString('base64url');
      await forge(w.h, (db) =>
        db.sql(`INSERT INTO shares (id, file_id, owner_id, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`, [
          randomBytes(16).toString('hex'),
          w.adminFile,
          w.adminId,
          sha256(chosen),
          Date.now(),
          Date.now() + 86400_000,
        ]),
      );
      const page = await w.h.request.get(`/s/${chosen}`).set(HTML);
      expect(page.status).toBe(404);
      const content = await w.h.request.get(`/s/${chosen}/content`).buffer(true).parse(binaryParser);
      expect(content.status).toBe(404);
      expect((content.body as Buffer).includes(Buffer.from('ADMIN-ONLY'))).toBe(false);
    },
  },
  {
    name: "bob's own link pointed at the admin's file (file_id and owner_id changed) → 404",
    async run(w) {
      const made = await w.h.request.post(`/api/v1/files/${w.bobFile}/shares`).set('Authorization', `Bearer ${w.bobToken}`).send({});
      expect(made.status).toBe(201);
      const token = made.body.token as string;
      expect((await w.h.request.get(`/s/${token}/content`)).status).toBe(200);
      await forge(w.h, (db) => db.sql('UPDATE shares SET file_id = ?, owner_id = ? WHERE id = ?', [w.adminFile, w.adminId, made.body.id]));
      const content = await w.h.request.get(`/s/${token}/content`).buffer(true).parse(binaryParser);
      expect(content.status).toBe(404);
      expect((content.body as Buffer).includes(Buffer.from('ADMIN-ONLY'))).toBe(false);
      expect((await w.h.request.get(`/s/${token}`).set(HTML)).status).toBe(404);
      await reported(w, w.adminId);
    },
  },
  {
    name: 'a password-protected link whose password hash is replaced → the known password does not open it',
    async run(w) {
      const made = await w.h.request
        .post(`/api/v1/files/${w.adminFile}/shares`)
        .set('Authorization', `Bearer ${w.adminToken}`)
        .send({ password: 'the real link password' });
      expect(made.status).toBe(201);
      const real = await w.h.request.get(`/s/${made.body.token}/content`).auth('x', 'the real link password');
      expect(real.status).toBe(200);
      const known = await new PasswordHasher(1).hash('attacker knows this');
      await forge(w.h, (db) => db.sql('UPDATE shares SET password_hash = ? WHERE id = ?', [known, made.body.id]));
      const r = await w.h.request.get(`/s/${made.body.token}/content`).auth('x', 'attacker knows this').buffer(true).parse(binaryParser);
      expect(r.status).toBe(404);
      expect((r.body as Buffer).includes(Buffer.from('ADMIN-ONLY'))).toBe(false);
    },
  },
  {
    name: 'session row inserted for a cookie id bob knows (his own), keyed by sha256 and naming the admin → not signed in',
    async run(w) {
      const bob = await pageSignIn(w.h, 'bob', BOB_PASSWORD);
      expect(bob.status).toBe(303);
      const sid = sidOf(bob.cookie!);
      await forge(w.h, async (db) => {
        const [real] = await db.sql<{ sess: string; expired: string }>('SELECT sess, expired FROM sessions');
        const sess = { ...JSON.parse(real!.sess), uid: w.adminId };
        await db.sql('DELETE FROM sessions');
        for (const key of [sha256(sid).toString('hex'), sid]) await db.sql('INSERT INTO sessions (sid, sess, expired) VALUES (?, ?, ?)', [key, JSON.stringify(sess), real!.expired]);
      });
      const r = await bob.agent.get('/admin/users').set(HTML);
      expect(r.status).toBe(303);
      expect(r.headers.location).toMatch(/^\/login/);
      expect((await bob.agent.get('/files').set(HTML)).headers.location).toMatch(/^\/login/);
    },
  },
  {
    name: "session row's user changed to the admin (every row: the attacker cannot tell which is bob's) → not signed in",
    async run(w) {
      const bob = await pageSignIn(w.h, 'bob', BOB_PASSWORD);
      expect((await bob.agent.get('/files').set(HTML)).status).toBe(200);
      const setUid = w.h.dialect === 'postgres' ? `(sess::jsonb || jsonb_build_object('uid', ?::text))::text` : `json_set(sess, '$.uid', ?)`;
      await forge(w.h, (db) => db.sql(`UPDATE sessions SET sess = ${setUid}`, [w.adminId]));
      const r = await bob.agent.get('/admin/users').set(HTML);
      expect(r.status).toBe(303);
      expect(r.headers.location).toMatch(/^\/login/);
      expect(r.text).not.toContain('payroll');
      await reported(w, w.adminId);
    },
  },
  {
    name: "role change user → admin: admin routes refused, and bob's own auth refused",
    async run(w) {
      const page = await pageSignIn(w.h, 'bob', BOB_PASSWORD);
      await forge(w.h, (db) => db.sql("UPDATE users SET role = 'admin' WHERE id = ?", [w.bobId]));
      const users = await api(w, w.bobToken, '/users');
      expect(users.status).toBe(401);
      saysNothing(users.body);
      expect((await api(w, w.bobToken, '/me')).status).toBe(401);
      expect((await w.h.request.post('/api/v1/auth/tokens').send({ username: 'bob', password: BOB_PASSWORD, name: 'x' })).status).toBe(401);
      expect((await page.agent.get('/admin/users').set(HTML)).headers.location).toMatch(/^\/login/);
      expect((await pageSignIn(w.h, 'bob', BOB_PASSWORD)).status).toBe(401);
      await reported(w, w.bobId);
    },
  },
  {
    name: 'disabled flag flipped 1 → 0: still refused (old token, login, pages)',
    async run(w) {
      const off = await w.h.request.patch(`/api/v1/users/${w.bobId}`).set('Authorization', `Bearer ${w.adminToken}`).send({ disabled: true });
      expect(off.status).toBe(200);
      expect((await api(w, w.bobToken, '/me')).status).toBe(401);
      await forge(w.h, (db) => db.sql('UPDATE users SET disabled = 0 WHERE id = ?', [w.bobId]));
      expect((await api(w, w.bobToken, '/me')).status).toBe(401);
      const login = await w.h.request.post('/api/v1/auth/tokens').send({ username: 'bob', password: BOB_PASSWORD, name: 'x' });
      expect(login.status).toBe(401);
      saysNothing(login.body);
      expect((await pageSignIn(w.h, 'bob', BOB_PASSWORD)).status).toBe(401);
      await reported(w, w.bobId);
    },
  },
  {
    name: "the admin's password hash replaced with argon2id of a known password → login refused",
    async run(w) {
      const known = 'attacker knows this one';
      const hash = await new PasswordHasher(1).hash(known);
      await forge(w.h, (db) => db.sql('UPDATE users SET password_hash = ? WHERE id = ?', [hash, w.adminId]));
      const r = await w.h.request.post('/api/v1/auth/tokens').send({ username: ADMIN.username, password: known, name: 'x' });
      expect(r.status).toBe(401);
      saysNothing(r.body);
      expect(r.body.token).toBeUndefined();
      const page = await pageSignIn(w.h, ADMIN.username, known);
      expect(page.status).toBe(401);
      expect(page.cookie).toBeUndefined();
      await reported(w, w.adminId);
    },
  },
  {
    name: "a quota lifted by SQL → the user's auth is refused",
    async run(w) {
      const q = await w.h.request.patch(`/api/v1/users/${w.bobId}`).set('Authorization', `Bearer ${w.adminToken}`).send({ quotaBytes: 100 });
      expect(q.status).toBe(200);
      await forge(w.h, (db) => db.sql('UPDATE users SET quota_bytes = NULL WHERE id = ?', [w.bobId]));
      const up = await w.h.request.put('/api/v1/uploads/big.bin').set('Authorization', `Bearer ${w.bobToken}`).send(pattern(5000));
      expect(up.status).toBe(401);
      await reported(w, w.bobId);
    },
  },
];

describe('a database writer without the master key', () => {
  it.each(FORGERIES.map((f) => [f.name, f] as const))('%s', async (_name, f) => {
    const w = await world();
    await f.run(w);
    // Nothing the attacker did made the admin's file readable by anyone but the admin, or broke the audit chain.
    expect((await verifyAuditChain(w.h.database.kysely, w.h.keyring)).ok).toBe(true);
  });

  it('the unforged world works (control: every check above can pass)', async () => {
    const w = await world();
    expect((await api(w, w.bobToken, '/me')).status).toBe(200);
    expect((await api(w, w.adminToken, '/users')).status).toBe(200);
    const own = await api(w, w.adminToken, `/files/${w.adminFile}/content`).buffer(true).parse(binaryParser);
    expect((own.body as Buffer).equals(w.secret)).toBe(true);
    expect((await pageSignIn(w.h, 'bob', BOB_PASSWORD)).status).toBe(303);
    expect(await w.h.sql("SELECT count(*) AS n FROM audit_events WHERE action LIKE 'integrity.%'")).toEqual([{ n: 0 }]);
  });
});

describe('wrap version 2 binds the owner', () => {
  it('an old (version 1) row keeps working; key rotate upgrades it; then moving it fails', async () => {
    const w = await world();
    const files = new FilesRepo(w.h.database.kysely);
    const row = (await files.byId(w.adminFile))!;
    expect(row.wrapVersion).toBe(CURRENT_WRAP_VERSION);
    // Make the row what the first release wrote: version 1 associated data (no owner).
    const key = w.h.keyring.get(row.keyId)!;
    const dek = unwrapDek(key, row.wrappedDek, bindingOf(row));
    await w.h.sql('UPDATE files SET wrapped_dek = ?, wrap_version = 1 WHERE id = ?', [wrapDek(key, dek, { ...bindingOf(row), wrapVersion: 1 }, randomBytes(12)), row.id]);
    const v1 = await api(w, w.adminToken, `/files/${w.adminFile}/content`).buffer(true).parse(binaryParser);
    expect(v1.status).toBe(200);
    expect((v1.body as Buffer).equals(w.secret)).toBe(true);

    const result = await rotate(w.h.database, w.h.keyring);
    expect(result).toMatchObject({ rewrapped: 1, failed: [] });
    expect((await files.byId(w.adminFile))!.wrapVersion).toBe(2);
    const v2 = await api(w, w.adminToken, `/files/${w.adminFile}/content`).buffer(true).parse(binaryParser);
    expect((v2.body as Buffer).equals(w.secret)).toBe(true);

    // A version-2 wrap cannot be relabelled as version 1 to shed the owner binding.
    await forge(w.h, (db) => db.sql('UPDATE files SET owner_id = ?, wrap_version = 1 WHERE id = ?', [w.bobId, w.adminFile]));
    const stolen = await api(w, w.bobToken, `/files/${w.adminFile}/content`).buffer(true).parse(binaryParser);
    expect(stolen.status).toBe(500);
    expect((stolen.body as Buffer).includes(Buffer.from('ADMIN-ONLY'))).toBe(false);
  });

  it('transferOwnership rewraps for the new owner in one compare-and-swap', async () => {
    const w = await world();
    const vault = w.h.app.services.vault;
    expect(await vault.transferOwnership(w.adminFile, w.bobId, w.adminId)).toBe(false); // not bob's
    expect(await vault.transferOwnership(w.adminFile, w.adminId, w.bobId)).toBe(true);
    expect(await vault.transferOwnership(w.adminFile, w.adminId, w.bobId)).toBe(false); // already moved
    const row = (await new FilesRepo(w.h.database.kysely).byId(w.adminFile))!;
    expect(row).toMatchObject({ ownerId: w.bobId, wrapVersion: 2, keyId: w.h.keyring.active.id });
    const bobGets = await api(w, w.bobToken, `/files/${w.adminFile}/content`).buffer(true).parse(binaryParser);
    expect(bobGets.status).toBe(200);
    expect((bobGets.body as Buffer).equals(w.secret)).toBe(true);
    expect((await api(w, w.adminToken, `/files/${w.adminFile}/content`)).status).toBe(404);
    // Quota follows the file: bob's usage is what the database holds for him.
    const bobBytes = Number((await w.h.sql<{ n: number | string }>('SELECT sum(size) AS n FROM files WHERE owner_id = ?', [w.bobId]))[0]!.n);
    expect(await vault.quota.usageOf(w.bobId)).toBe(bobBytes);
    expect(bobBytes).toBe(w.secret.length + 'bob own file'.length);
  });
});

/** Turns a database this version wrote back into what the first release stored (it stored plain SHA-256 and no MACs). */
async function downgradeToFirstRelease(target: Harness, known: { tokens: string[]; shareTokens: string[]; sessionIds: string[] }): Promise<void> {
  const db = target.db;
  const files = new FilesRepo(target.database.kysely);
  // Read through the (asynchronous) repository first; the rewrite below is one synchronous transaction.
  const fileRows: NonNullable<Awaited<ReturnType<FilesRepo['byId']>>>[] = [];
  for (const id of await files.allIds()) fileRows.push((await files.byId(id))!);
  db.transaction(() => {
    for (const t of known.tokens) db.prepare('UPDATE api_tokens SET token_hash = ? WHERE token_hash = ?').run(sha256(t), target.app.services.accounts.integrity.lookup(t));
    for (const t of known.shareTokens) db.prepare('UPDATE shares SET token_hash = ? WHERE token_hash = ?').run(sha256(t), target.app.services.accounts.integrity.lookup(t));
    for (const s of known.sessionIds) {
      const key = target.app.services.sessions.keyOf(s);
      const row = db.prepare('SELECT sess FROM sessions WHERE sid = ?').get(key) as { sess: string };
      const { seal: _seal, ...sess } = JSON.parse(row.sess);
      db.prepare('UPDATE sessions SET sid = ?, sess = ? WHERE sid = ?').run(sha256(s).toString('hex'), JSON.stringify(sess), key);
    }
    for (const row of fileRows) {
      const id = row.id;
      const key = target.keyring.get(row.keyId)!;
      const dek = unwrapDek(key, row.wrappedDek, bindingOf(row));
      db.prepare('UPDATE files SET wrapped_dek = ? WHERE id = ?').run(wrapDek(key, dek, { ...bindingOf(row), wrapVersion: 1 }, randomBytes(12)), id);
    }
    db.prepare("DELETE FROM secrets WHERE name = 'integrity-root'").run();
  })();
  // The first release's schema, schema version 4: none of the columns and tables of migrations 5-7.
  // Migration 12 (bundles): its trigger and table go first, they name the columns below.
  db.exec('DROP TRIGGER files_bundle_anchor');
  db.exec('DROP TABLE share_files');
  db.exec('DROP INDEX files_request');
  for (const [table, column] of [
    ['files', 'crc32'],
    ['shares', 'bundle'],
    ['files', 'wrap_version'],
    ['users', 'integrity_mac'],
    ['api_tokens', 'row_mac'],
    ['shares', 'row_mac'],
    ['users', 'password_reset_at'],
    ['share_reservations', 'bytes_sent'],
    ['share_reservations', 'slow_since'],
    ['share_reservations', 'yielded'],
    ['share_reservations', 'ticket_id'],
    ['files', 'blob_gen'],
    ['shares', 'delete_file_after'],
    ['files', 'request_id'],
    ['files', 'uploader_name'],
    ['files', 'uploader_email'],
  ]) {
    db.exec(`ALTER TABLE ${table} DROP COLUMN ${column}`);
  }
  // Migration 16 (retention): the expiry column and its index, the holds and the purge queue.
  db.exec('DROP INDEX files_expires');
  db.exec('ALTER TABLE files DROP COLUMN expires_at');
  for (const table of ['legal_holds', 'purge_queue']) db.exec(`DROP TABLE ${table}`);
  db.exec('DROP TABLE share_ticket_downloads');
  // Nor did the tables of later migrations (8: shared state; 10: operation locks; 11: upload requests; 13: resumable uploads; 14: second factors; 15: single sign-on; 17: notifications).
  for (const table of ['quota_leases', 'rate_limits', 'setup_code', 'op_locks', 'upload_request_leases', 'upload_requests', 'uploads', 'oidc_identities', 'sso_policy', 'notification_settings', 'webhooks', 'notification_outbox', 'sign_in_addresses', 'share_recipients', 'mfa_totp', 'mfa_recovery_codes', 'mfa_passkeys', 'mfa_notices', 'mfa_policy']) db.exec(`DROP TABLE ${table}`);
  db.pragma('user_version = 4');
  db.close();
}

// The first release wrote SQLite only (there is no first-release layout on PostgreSQL to upgrade from).
describe.runIf(TEST_DIALECT === 'sqlite')('the one-off start-up upgrade', () => {
  it('re-keys SHA-256 rows of the first release so existing tokens, links and sessions keep working, once', async () => {
    const masterKey = randomBytes(32);
    h = await makeHarness({}, { masterKey });
    const adminToken = await setupAdmin(h);
    await makeUser(h, adminToken, 'bob');
    const bobToken = await tokenFor(h, 'bob', BOB_PASSWORD);
    const content = pattern(3000, 9);
    const up = await h.request.put('/api/v1/uploads/a.bin').set('Authorization', `Bearer ${adminToken}`).send(content);
    const share = await h.request.post(`/api/v1/files/${up.body.file.id}/shares`).set('Authorization', `Bearer ${adminToken}`).send({});
    const page = await pageSignIn(h, 'bob', BOB_PASSWORD);
    const sid = sidOf(page.cookie!);
    // The first release signed the cookie with a key derived from the master key (express-session's s:<id>.<HMAC>).
    const legacySecret = h.keyring.derive('sfs/v1 session cookie').toString('base64');
    const legacyCookie = `sfs-session=${encodeURIComponent(`s:${sid}.${createHmac('sha256', legacySecret).update(sid).digest('base64').replace(/=+$/, '')}`)}`;
    await downgradeToFirstRelease(h, { tokens: [adminToken, bobToken], shareTokens: [share.body.token], sessionIds: [sid] });

    // Check the downgrade really is the old layout: the stored value is the plain SHA-256.
    const old = new Database(h.config.dbFile);
    expect(old.pragma('user_version', { simple: true })).toBe(4);
    expect((old.prepare('SELECT token_hash FROM shares').get() as { token_hash: Buffer }).token_hash.equals(sha256(share.body.token))).toBe(true);
    old.close();

    const dir = h.dir;
    for (let start = 1; start <= 2; start++) {
      const next = await makeHarness({}, { masterKey, dir });
      extra.push(next);
      expect((await next.request.get('/api/v1/me').set('Authorization', `Bearer ${adminToken}`)).status).toBe(200);
      expect((await next.request.get('/api/v1/me').set('Authorization', `Bearer ${bobToken}`)).status).toBe(200);
      const got = await next.request.get(`/s/${share.body.token}/content`).buffer(true).parse(binaryParser);
      expect(got.status).toBe(200);
      expect((got.body as Buffer).equals(content)).toBe(true);
      const signedIn = await supertest(next.app).get('/files').set('Cookie', legacyCookie).set(HTML);
      expect(signedIn.status).toBe(200);
      expect((await next.request.post('/api/v1/auth/tokens').send({ username: 'bob', password: BOB_PASSWORD, name: 'after' })).status).toBe(201);
      // Stored values are keyed now, and every file is bound to its owner.
      const stored = next.db.prepare('SELECT token_hash FROM api_tokens').all() as { token_hash: Buffer }[];
      expect(stored.some((r) => r.token_hash.equals(sha256(adminToken)))).toBe(false);
      expect(next.db.prepare('SELECT DISTINCT wrap_version AS v FROM files').all()).toEqual([{ v: 2 }]);
      // Exactly one upgrade, however many starts.
      expect(next.db.prepare("SELECT count(*) AS n FROM audit_events WHERE action = 'integrity.upgrade'").get()).toEqual({ n: 1 });
      expect((await verifyAuditChain(next.database.kysely, next.keyring)).ok).toBe(true);
      next.db.close();
    }
    // The first harness owns the directory and removes it.
    h.contractViolations.push(...extra.flatMap((x) => x.contractViolations));
  });
});

describe('key rotation carries the integrity root along', () => {
  it('after rotate (and with only the new key) old tokens, sessions and links work and MACs verify', async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    h = await makeHarness({}, { masterKey: oldKey });
    const adminToken = await setupAdmin(h);
    await makeUser(h, adminToken, 'bob');
    const bobToken = await tokenFor(h, 'bob', BOB_PASSWORD);
    const content = pattern(2000, 5);
    const up = await h.request.put('/api/v1/uploads/r.bin').set('Authorization', `Bearer ${bobToken}`).send(content);
    const share = await h.request.post(`/api/v1/files/${up.body.file.id}/shares`).set('Authorization', `Bearer ${bobToken}`).send({});
    const page = await pageSignIn(h, 'bob', BOB_PASSWORD);
    // Every wrapped service secret is carried: the integrity root, the notification seal key
    // and whatever else the server created; the count is the table's, not a fixed number.
    const names = (await h.sql<{ name: string }>('SELECT name FROM secrets ORDER BY name', [])).map((r) => r.name);
    expect(names).toEqual(expect.arrayContaining(['integrity-root', 'notify seal']));
    const result = await rotate(h.database, new Keyring(newKey, [oldKey]));
    expect(result).toMatchObject({ rewrapped: 1, failed: [], secrets: names.length });
    const after = await h.sql<{ key_id: string }>('SELECT key_id FROM secrets', []);
    expect(new Set(after.map((r) => r.key_id)).size).toBe(1);
    await h.database.close();
    const next = await makeHarness({}, { masterKey: newKey, dir: h.dir });
    extra.push(next);
    expect((await next.request.get('/api/v1/me').set('Authorization', `Bearer ${bobToken}`)).status).toBe(200);
    expect((await next.request.get('/api/v1/users').set('Authorization', `Bearer ${adminToken}`)).status).toBe(200);
    const got = await next.request.get(`/s/${share.body.token}/content`).buffer(true).parse(binaryParser);
    expect((got.body as Buffer).equals(content)).toBe(true);
    expect((await supertest(next.app).get('/files').set('Cookie', page.cookie!).set(HTML)).status).toBe(200);
    expect((await next.request.post('/api/v1/auth/tokens').send({ username: 'bob', password: BOB_PASSWORD, name: 'x' })).status).toBe(201);
    expect(await next.sql("SELECT count(*) AS n FROM audit_events WHERE action LIKE 'integrity.%'")).toEqual([{ n: 0 }]);
    const accounts = next.app.services.accounts;
    expect((await accounts.users.list()).every((u) => accounts.users.intact(u))).toBe(true);
    await next.database.close();
    h.contractViolations.push(...next.contractViolations);
  });
});
