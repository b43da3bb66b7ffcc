/**
 * Two instances on one database: two apps, each with its own deps (database connection,
 * blob store handle, services) on the same database, directory and bucket, as two server
 * processes behind a load balancer would be. Each atomic operation of issue 12 is raced
 * through both at the same moment, on SQLite (two connections to one file) and on PostgreSQL
 * (a fresh database on the test server).
 */
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import supertest from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { Keyring, keyIdOf } from '../src/crypto/keyring.js';
import { rotate } from '../src/ops/keys.js';
import { verifyAuditChain } from '../src/services/audit.js';
import { freshDatabase } from './services/services.js';
import { SetupCode } from '../src/services/accounts.js';
import { auditHeadsFor } from '../src/storage/index.js';
import { ADMIN, SETUP_CODE, binaryParser, makeHarness, makeUser, pattern, serve, setupAdmin, type Harness } from './helpers.js';

const URL_BASE = process.env.SFS_TEST_DATABASE_URL;
if (!URL_BASE && process.env.REQUIRE_SERVICES === '1') {
  throw new Error(`REQUIRE_SERVICES=1 but no PostgreSQL is running (${process.env.SFS_TEST_PG_MISSING ?? 'see test/services'})`);
}


type Backend = 'sqlite' | 'postgres';
// PostgreSQL whenever the global setup started one (REQUIRE_SERVICES=1 makes its absence an error above).
const BACKENDS: Backend[] = URL_BASE ? ['sqlite', 'postgres'] : ['sqlite'];

interface Pair {
  a: Harness;
  b: Harness;
  masterKey: Buffer;
}

let cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  const todo = cleanups.reverse();
  cleanups = [];
  for (const c of todo) await c();
});

/** Two apps on one database, directory and bucket; `b` proposes its own setup code. */
async function pair(backend: Backend, env: Record<string, string> = {}): Promise<Pair> {
  const masterKey = randomBytes(32);
  const e = { ...env };
  if (backend === 'postgres') {
    const db = await freshDatabase();
    e.DATABASE_URL = db.url;
    cleanups.push(() => db.drop());
  }
  const a = await makeHarness(e, { masterKey });
  const b = await makeHarness(e, { masterKey, dir: a.dir, setupCode: 'instance-b-proposes-its-own-code' });
  cleanups.push(async () => {
    // Both write the audit head asynchronously into the one directory: let them land first.
    await Promise.all([a.app.services.audit.flush(), b.app.services.audit.flush()]);
    b.cleanup();
    a.cleanup();
    await Promise.all([a.database.close(), b.database.close()]);
  });
  return { a, b, masterKey };
}

const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });
const count = (statuses: number[], s: number) => statuses.filter((x) => x === s).length;

async function userId(h: Harness, token: string): Promise<string> {
  return (await h.request.get('/api/v1/me').set(bearer(token))).body.id as string;
}

/** The CSRF token of the first form on a page, read through `agent`. */
async function csrfFrom(agent: ReturnType<typeof supertest.agent>, path: string): Promise<string> {
  const r = await agent.get(path).set({ Accept: 'text/html' });
  const m = /name="_csrf" value="([^"]+)"/.exec(r.text);
  if (!m) throw new Error(`no CSRF token on ${path} (${r.status})`);
  return m[1]!;
}

describe.each(BACKENDS)('two instances on one %s database', (backend) => {
  it('first-admin setup: one code for both instances, and of two setups at the same moment exactly one succeeds', async () => {
    const { a, b } = await pair(backend);
    // B proposed another code, but A stored its code first: B prints A's, and checks against it.
    expect(await new SetupCode('a-third-proposal-0123456789').establish(b.database.kysely, b.keyring)).toBe(SETUP_CODE);
    const wrongOnB = await b.request.post('/api/v1/setup').send({ setupCode: 'instance-b-proposes-its-own-code', username: 'mallory', password: 'mallory password 1' });
    expect(wrongOnB.status).toBe(403);
    const [ra, rb] = await Promise.all([
      a.request.post('/api/v1/setup').send({ setupCode: SETUP_CODE, username: 'alice', password: 'alice password 123' }),
      b.request.post('/api/v1/setup').send({ setupCode: SETUP_CODE, username: 'bob', password: 'bob password 1234' }),
    ]);
    const statuses = [ra.status, rb.status].sort();
    expect(count(statuses, 201)).toBe(1);
    // The other finds setup closed (409) or, if it checked after the winner, the code gone (403).
    expect([403, 409]).toContain(statuses.find((s) => s !== 201));
    expect(Number((await a.database.kysely.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)).toBe(1);
    // Consumed by the setup's own transaction: no instance accepts it again.
    expect(await a.database.kysely.selectFrom('setup_code').selectAll().execute()).toEqual([]);
  });

  it('first-admin setup through the instance that did not print the code', async () => {
    const { b } = await pair(backend);
    const r = await b.request.post('/api/v1/setup').send({ setupCode: SETUP_CODE, ...ADMIN });
    expect(r.status).toBe(201);
  });

  it('a one-download link fetched through both at the same moment serves exactly one full download', async () => {
    const { a, b } = await pair(backend);
    const admin = await setupAdmin(a);
    const content = pattern(700_000, 3);
    const up = await a.request.put('/api/v1/uploads/one.bin').set(bearer(admin)).send(content);
    expect(up.status).toBe(201);
    const share = await a.request.post(`/api/v1/files/${up.body.file.id}/shares`).set(bearer(admin)).send({ maxDownloads: 1 });
    expect(share.status).toBe(201);
    const get = (h: Harness) => h.request.get(`/s/${share.body.token}/content`).buffer(true).parse(binaryParser);
    const results = await Promise.all([get(a), get(b), get(a), get(b), get(a), get(b)]);
    const full = results.filter((r) => r.status === 200);
    expect(full).toHaveLength(1);
    expect((full[0]!.body as Buffer).equals(content)).toBe(true);
    for (const r of results) expect([200, 404]).toContain(r.status);
    // The byte ceiling holds across both: a ranged read of the spent link is refused too.
    expect((await b.request.get(`/s/${share.body.token}/content`).set('Range', 'bytes=0-9')).status).toBe(404);
  });

  it('quota: uploads at the same moment through both instances do not overshoot', async () => {
    const { a, b } = await pair(backend, { USER_QUOTA_BYTES: '1MiB' });
    const t = await setupAdmin(a);
    const put = (h: Harness, i: number) => h.request.put(`/api/v1/uploads/q${i}.bin`).set(bearer(t)).send(pattern(400_000, 10 + i));
    const results = await Promise.all([put(a, 1), put(b, 2), put(a, 3), put(b, 4)]);
    const statuses = results.map((r) => r.status);
    // Two of 400 000 bytes fit in 1 MiB, three do not.
    expect(count(statuses, 201)).toBe(2);
    expect(count(statuses, 413)).toBe(2);
    for (const r of results) if (r.status === 413) expect(r.body.code).toBe('quota_exceeded');
    const me = await b.request.get('/api/v1/me').set(bearer(t));
    expect(me.body.usageBytes).toBe(800_000);
    // Nothing is left held once the uploads ended.
    expect(await a.database.kysely.selectFrom('quota_leases').selectAll().execute()).toEqual([]);
  });

  it('quota: the bytes of an upload streaming through one instance count on the other', async () => {
    // The shortest lease time: renewed every 5/3 s while the upload streams.
    const { a, b } = await pair(backend, { USER_QUOTA_BYTES: '1MiB', QUOTA_LEASE_SECONDS: '5' });
    const t = await setupAdmin(a);
    const server = await serve(a.app);
    cleanups.push(() => server.close());
    // Upload A streams 700 000 bytes through instance A (no Content-Length) and pauses.
    let finishA: () => void = () => {};
    let wrote: () => void = () => {};
    const sent = new Promise<void>((r) => (wrote = r));
    const statusA = new Promise<number>((resolve) => {
      const req = http.request({ port: server.port, host: '127.0.0.1', method: 'PUT', path: '/api/v1/uploads/a.bin', headers: bearer(t) }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.write(pattern(700_000, 4), () => wrote());
      finishA = () => req.end(Buffer.from('!'));
    });
    await sent;
    const uid = await userId(b, t);
    // Wait until instance A holds the bytes it received (its lease row in the shared database).
    const leaseRow = async () => (await b.database.kysely.selectFrom('quota_leases').selectAll().where('user_id', '=', uid).execute())[0];
    for (let i = 0; i < 200 && !((await leaseRow())?.bytes! >= 700_000); i++) await new Promise((r) => setTimeout(r, 25));
    const first = (await leaseRow())!;
    expect(first.bytes).toBeGreaterThanOrEqual(700_000);
    // Upload B would fit on its own, but not with A's bytes in flight on the other instance.
    const second = await b.request.put('/api/v1/uploads/b.bin').set(bearer(t)).send(pattern(600_000, 5));
    expect(second.status).toBe(413);
    expect(second.body.code).toBe('quota_exceeded');
    // While the upload streams (here: waits), its instance keeps moving the lease's expiry on.
    for (let i = 0; i < 400 && (await leaseRow())!.expires_at <= first.expires_at; i++) await new Promise((r) => setTimeout(r, 25));
    expect((await leaseRow())!.expires_at).toBeGreaterThan(first.expires_at);
    finishA();
    expect(await statusA).toBe(201);
    expect((await b.request.get('/api/v1/me').set(bearer(t))).body.usageBytes).toBe(700_001);
  });

  it('quota: a lease of a dead instance stops counting once it expires; a live one counts', async () => {
    const { a, b } = await pair(backend, { USER_QUOTA_BYTES: '1MiB' });
    const t = await setupAdmin(a);
    const uid = await userId(a, t);
    const lease = (id: string, expiresAt: number) =>
      a.database.kysely.insertInto('quota_leases').values({ id, user_id: uid, bytes: 1024 * 1024, expires_at: expiresAt }).execute();
    // A live lease of another instance (renewed, not expired) holds the whole quota.
    await lease('live'.padEnd(32, '0'), Date.now() + 60_000);
    const refused = await b.request.put('/api/v1/uploads/x.bin').set(bearer(t)).send(pattern(100_000, 6));
    expect(refused.status).toBe(413);
    // Its instance was killed: no more renewals, and past its expiry the lease counts nothing.
    await a.database.kysely.updateTable('quota_leases').set({ expires_at: Date.now() - 1 }).execute();
    const stored = await b.request.put('/api/v1/uploads/x.bin').set(bearer(t)).send(pattern(100_000, 6));
    expect(stored.status).toBe(201);
    // The housekeeping sweep removes it.
    expect(await a.app.services.vault.quota.sweep()).toBe(1);
    expect(await a.database.kysely.selectFrom('quota_leases').selectAll().execute()).toEqual([]);
  });

  it('the login rate limit counts attempts through both instances, with no address or name stored', async () => {
    const { a, b } = await pair(backend, { LOGIN_RATE_LIMIT: '3' });
    const admin = await setupAdmin(a);
    // A user who never signed in: no success of theirs is still being taken back from the count.
    const carol = { username: 'carol', password: 'carol password 123' };
    expect((await a.request.post('/api/v1/users').set(bearer(admin)).send(carol)).status).toBe(201);
    const guess = (h: Harness) => h.request.post('/api/v1/auth/tokens').send({ username: carol.username, password: 'a wrong password', name: 'x' });
    const results = await Promise.all([guess(a), guess(b), guess(a), guess(b), guess(a), guess(b), guess(a), guess(b)]);
    const statuses = results.map((r) => r.status);
    // Three guesses per account in the window, whichever instance they reach.
    expect(count(statuses, 401)).toBe(3);
    expect(count(statuses, 429)).toBe(5);
    // And once spent, the right password is refused on both too.
    expect((await b.request.post('/api/v1/auth/tokens').send({ ...carol, name: 'x' })).status).toBe(429);
    const rows = await a.database.kysely.selectFrom('rate_limits').selectAll().execute();
    expect(rows.length).toBeGreaterThan(0);
    for (const r of rows) {
      expect(r.key).toHaveLength(32);
      for (const plain of ['carol', '127.0.0.1', '::ffff:127.0.0.1']) expect(r.key.includes(Buffer.from(plain))).toBe(false);
    }
  });

  it('the audit chain stays one chain after concurrent appends through both', async () => {
    const { a, b } = await pair(backend);
    await setupAdmin(a);
    await Promise.all(
      Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).app.services.audit.record({ actor: 'system', action: `test.${i}`, outcome: 'success' })),
    );
    await a.app.services.audit.flush();
    await b.app.services.audit.flush();
    // Checked against the head kept outside the database too (where both instances write theirs).
    const chain = await verifyAuditChain(b.database.kysely, b.keyring, auditHeadsFor(b.config, b.blobs));
    expect(chain).toMatchObject({ ok: true });
    expect(chain.ok && chain.count).toBeGreaterThanOrEqual(30);
  });

  it("key rotation's compare-and-swap batches while uploads and deletes run through both", async () => {
    const { a, b, masterKey } = await pair(backend);
    const admin = await setupAdmin(a);
    const newKey = randomBytes(32);
    // What a server does for a key introduced by `sfs key rotate` beside it: load it on demand.
    for (const h of [a, b]) h.keyring.setLoader((id) => (id === keyIdOf(newKey) ? Buffer.from(newKey) : undefined));
    const contents = new Map<string, Buffer>();
    const upload = async (h: Harness, i: number) => {
      const c = pattern(50_000 + i, 100 + i);
      const r = await h.request.put(`/api/v1/uploads/k${i}.bin`).set(bearer(admin)).send(c);
      expect(r.status).toBe(201);
      contents.set(r.body.file.id as string, c);
      return r.body.file.id as string;
    };
    const before = await Promise.all(Array.from({ length: 8 }, (_, i) => upload(i % 2 ? a : b, i)));
    const ring = new Keyring(newKey, [masterKey]);
    const [first] = await Promise.all([
      rotate(b.database, ring, { batchSize: 2 }),
      ...Array.from({ length: 6 }, (_, i) => upload(i % 2 ? a : b, 20 + i)),
      ...before.slice(0, 2).map(async (id) => {
        expect((await a.request.delete(`/api/v1/files/${id}`).set(bearer(admin))).status).toBe(204);
        contents.delete(id);
      }),
    ]);
    expect(first.failed).toEqual([]);
    // A second run rewraps what arrived meanwhile; then nothing is left under the old key.
    expect((await rotate(a.database, ring, { batchSize: 2 })).failed).toEqual([]);
    const left = await a.database.kysely.selectFrom('files').select('key_id').execute();
    expect(left).toHaveLength(contents.size);
    expect(left.every((r) => r.key_id === keyIdOf(newKey))).toBe(true);
    for (const [id, c] of contents) {
      for (const h of [a, b]) {
        const got = await h.request.get(`/api/v1/files/${id}/content`).set(bearer(admin)).buffer(true).parse(binaryParser);
        expect(got.status).toBe(200);
        expect((got.body as Buffer).equals(c)).toBe(true);
      }
    }
  });

  it('a token revoked through one instance stops working on the other at once', async () => {
    const { a, b } = await pair(backend);
    const admin = await setupAdmin(a);
    const t = await makeUser(a, admin, 'carol');
    expect((await b.request.get('/api/v1/me').set(bearer(t))).status).toBe(200);
    const tokens = await a.request.get('/api/v1/auth/tokens').set(bearer(t));
    const id = tokens.body.tokens[0].id as string;
    expect((await a.request.delete(`/api/v1/auth/tokens/${id}`).set(bearer(t))).status).toBe(204);
    expect((await b.request.get('/api/v1/me').set(bearer(t))).status).toBe(401);
  });
});

describe.each(BACKENDS)('two instances on one %s database: browser sessions', (backend) => {
  it('a session signed in through one instance works on the other, and signing out ends it on both', async () => {
    const { a, b } = await pair(backend);
    await setupAdmin(a);
    const agent = supertest.agent(a.app);
    const _csrf = await csrfFrom(agent, '/login');
    const signedIn = await agent.post('/login').type('form').set({ Accept: 'text/html' }).send({ _csrf, ...ADMIN, next: '/files' });
    expect(signedIn.status).toBe(303);
    const cookie = [signedIn.headers['set-cookie']].flat().find((c) => c?.startsWith('sfs-session='))!.split(';')[0]!;
    const onB = () => b.request.get('/files').set('Cookie', cookie).set({ Accept: 'text/html' });
    expect((await onB()).status).toBe(200);
    const formToken = await csrfFrom(agent, '/account');
    const out = await agent.post('/logout').type('form').set({ Accept: 'text/html' }).send({ _csrf: formToken });
    expect(out.status).toBe(303);
    const after = await onB();
    expect(after.status).toBe(303);
    expect(after.headers.location).toMatch(/^\/login/);
  });
});
