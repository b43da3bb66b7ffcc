/**
 * The application on PostgreSQL (a real PostgreSQL 15 started by test/services/global-setup.ts):
 * a representative API flow through makeHarness with DATABASE_URL, each suite on a fresh
 * database, plus the configuration checks of DATABASE_URL.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { PG_MIGRATIONS } from '../src/db/migrations/postgres.js';
import { verifyAuditChain } from '../src/services/audit.js';
import { freshDatabase } from './services/services.js';
import { binaryParser, makeHarness, makeUser, pattern, setupAdmin, type Harness } from './helpers.js';

const URL_BASE = process.env.SFS_TEST_DATABASE_URL;
if (!URL_BASE && process.env.REQUIRE_SERVICES === '1') {
  throw new Error(`REQUIRE_SERVICES=1 but no PostgreSQL is running (${process.env.SFS_TEST_PG_MISSING ?? 'see test/services'})`);
}


describe.runIf(URL_BASE)('the application on PostgreSQL', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let h: Harness;
  const masterKey = randomBytes(32);

  beforeAll(async () => {
    db = await freshDatabase();
    h = await makeHarness({ DATABASE_URL: db.url }, { masterKey });
  });
  afterAll(async () => {
    h?.cleanup();
    await h?.database.close();
    await db?.drop();
  });

  it('setup, token, upload, byte-exact download, a share link, and an intact audit chain', async () => {
    expect(h.database.dialect).toBe('postgres');
    const admin = await setupAdmin(h);
    // The first admin exists once: a second setup is refused (one transaction re-checks).
    const again = await h.request.post('/api/v1/setup').send({ setupCode: 'x', username: 'other', password: 'other password 123' });
    expect(again.status).toBe(409);
    const bob = await makeUser(h, admin, 'bob');
    // Names are unique whatever their case, as SQLite's NOCASE column makes them.
    const dup = await h.request.post('/api/v1/users').set('Authorization', `Bearer ${admin}`).send({ username: 'BOB', password: 'another password 1' });
    expect(dup.status).toBe(409);

    const content = pattern(300_000, 7);
    const up = await h.request.put('/api/v1/uploads/p.bin').set('Authorization', `Bearer ${bob}`).send(content);
    expect(up.status).toBe(201);
    const id = up.body.file.id as string;
    const got = await h.request.get(`/api/v1/files/${id}/content`).set('Authorization', `Bearer ${bob}`).buffer(true).parse(binaryParser);
    expect(got.status).toBe(200);
    expect((got.body as Buffer).equals(content)).toBe(true);
    const me = await h.request.get('/api/v1/me').set('Authorization', `Bearer ${bob}`);
    expect(me.body.usageBytes).toBe(content.length);

    const share = await h.request.post(`/api/v1/files/${id}/shares`).set('Authorization', `Bearer ${bob}`).send({ maxDownloads: 1 });
    expect(share.status).toBe(201);
    const viaLink = await h.request.get(`/s/${share.body.token}/content`).buffer(true).parse(binaryParser);
    expect(viaLink.status).toBe(200);
    expect((viaLink.body as Buffer).equals(content)).toBe(true);
    // The one download is spent: the link is gone for the next request.
    expect((await h.request.get(`/s/${share.body.token}/content`)).status).toBe(404);
    // The download is counted when its response has been written, in a transaction that on
    // PostgreSQL is a network round trip: the client may ask before that commit lands.
    let listed;
    for (let i = 0; i < 50; i++) {
      listed = await h.request.get(`/api/v1/files/${id}/shares`).set('Authorization', `Bearer ${bob}`);
      if (listed.body.shares[0].downloads === 1) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(listed!.body.shares[0]).toMatchObject({ downloads: 1, bytesServed: content.length, status: 'exhausted' });

    const del = await h.request.delete(`/api/v1/files/${id}`).set('Authorization', `Bearer ${bob}`);
    expect(del.status).toBe(204);
    expect((await h.request.get(`/api/v1/files/${id}`).set('Authorization', `Bearer ${bob}`)).status).toBe(404);

    await h.app.services.audit.flush();
    const chain = await verifyAuditChain(h.database.kysely, h.keyring, h.config.auditHeadFile);
    expect(chain).toMatchObject({ ok: true });
    expect(chain.ok && chain.count).toBeGreaterThanOrEqual(8);
  });

  it('concurrent audit appends on several pool connections form one chain', async () => {
    await Promise.all(Array.from({ length: 20 }, (_, i) => h.app.services.audit.record({ actor: 'cli', action: `test.${i}`, outcome: 'success' })));
    expect(await verifyAuditChain(h.database.kysely, h.keyring)).toMatchObject({ ok: true });
  });

  it('migrations run once: a second open finds the schema at its version', async () => {
    const second = await makeHarness({ DATABASE_URL: db.url }, { masterKey });
    try {
      const { rows } = await second.database.pool!.query('SELECT version FROM schema_version');
      expect(rows).toEqual([{ version: Math.max(...PG_MIGRATIONS.map((m) => m.version)) }]);
    } finally {
      second.cleanup();
      await second.database.close();
    }
  });
});

describe('DATABASE_URL configuration', () => {
  it.each([
    ['mysql://u:p@host/db'],
    ['postgres://host-only'],
    ['not a url'],
  ])('%s is refused, naming the setting and not echoing the URL', (url) => {
    let err: unknown;
    try {
      loadConfig({ NODE_ENV: 'test', DATABASE_URL: url }, '/tmp');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(String((err as Error).message)).toContain('DATABASE_URL');
    expect(String((err as Error).message)).not.toContain(url);
  });

  it('a postgres URL selects PostgreSQL with a pool size and CA file', () => {
    const c = loadConfig({ NODE_ENV: 'test', DATABASE_URL: 'postgres://u:p@db.example:5432/sfs?sslmode=verify-full', DATABASE_POOL_SIZE: '4', DATABASE_SSL_CA_FILE: 'ca.pem' }, '/srv');
    expect(c.database).toEqual({ kind: 'postgres', url: 'postgres://u:p@db.example:5432/sfs?sslmode=verify-full', poolSize: 4, sslCaFile: '/srv/ca.pem' });
    expect(loadConfig({ NODE_ENV: 'test' }, '/srv').database).toEqual({ kind: 'sqlite' });
  });
});
