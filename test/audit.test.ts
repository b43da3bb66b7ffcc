/** The audit log: one entry per security-relevant action, scoped views, and a chain that shows tampering. */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { AuditLog, readHead, verifyAuditChain } from '../src/services/audit.js';
import { ADMIN, makeHarness, makeUser, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());

const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });
const actions = async () => (await h.sql<{ action: string; outcome: string }>('SELECT action, outcome FROM audit_events ORDER BY seq')).map((r) => `${r.action}:${r.outcome}`);

describe('events', () => {
  it('records each security-relevant action, without secrets', async () => {
    h = await makeHarness({ LOGIN_RATE_LIMIT: '2' });
    await h.request.post('/api/v1/setup').send({ setupCode: 'wrong code', ...ADMIN });
    const admin = await setupAdmin(h);
    await h.request.post('/api/v1/auth/tokens').send({ username: 'admin', password: 'wrong password!!' });
    const carolToken = await makeUser(h, admin, 'carol');
    const carol = (await h.request.get('/api/v1/me').set(bearer(carolToken))).body;
    await h.request.patch(`/api/v1/users/${carol.id}`).set(bearer(admin)).send({ disabled: true });
    const up = await h.request.put('/api/v1/uploads/a.txt').set(bearer(admin)).send(Buffer.from('hello'));
    const fileId = up.body.file.id;
    await h.request.get(`/api/v1/files/${fileId}/content`).set(bearer(admin));
    const s = await h.request.post(`/api/v1/files/${fileId}/shares`).set(bearer(admin)).send({ password: 'share password 1' });
    await h.request.get(`/s/${s.body.token}/content`).set('Authorization', `Basic ${Buffer.from(':wrong password').toString('base64')}`);
    await h.request.get(`/s/${s.body.token}/content`).set('Authorization', `Basic ${Buffer.from(':share password 1').toString('base64')}`);
    await h.request.delete(`/api/v1/shares/${s.body.id}`).set(bearer(admin));
    const tokens = await h.request.get('/api/v1/auth/tokens').set(bearer(admin));
    const other = tokens.body.tokens.find((t: { id: string }) => t.id !== undefined);
    await h.request.delete(`/api/v1/files/${fileId}`).set(bearer(admin));
    for (let i = 0; i < 4; i++) await h.request.post('/api/v1/auth/tokens').send({ username: 'admin', password: `guess ${i} guess` });
    await h.request.delete(`/api/v1/auth/tokens/${other.id}`).set(bearer(admin));

    const seen = await actions();
    for (const expected of [
      'setup:failure',
      'setup:success',
      'auth.login:success',
      'token.create:success',
      'auth.login:failure',
      'user.create:success',
      'user.disable:success',
      'file.upload:success',
      'file.download:success',
      'share.create:success',
      'share.password_failure:failure',
      'share.download:success',
      'share.revoke:success',
      'file.delete:success',
      'rate_limit.hit:denied',
      'token.revoke:success',
    ]) {
      expect(seen, expected).toContain(expected);
    }
    const [shareDownload] = await h.sql<Record<string, string>>("SELECT actor, share_id, file_id, ip, details FROM audit_events WHERE action = 'share.download'");
    expect(shareDownload!.actor).toBe(`share:${s.body.id}`);
    expect(shareDownload!.share_id).toBe(s.body.id);
    expect(shareDownload!.file_id).toBe(fileId);
    expect(shareDownload!.ip).toBeTruthy();
    expect(JSON.parse(shareDownload!.details)).toMatchObject({ bytesSent: 5, completed: true });
    const dump = JSON.stringify(await h.sql('SELECT * FROM audit_events'));
    for (const secret of [admin, carolToken, s.body.token, ADMIN.password, 'share password 1', 'wrong password', 'guess 1 guess']) {
      expect(dump).not.toContain(secret);
    }
    expect(await verifyAuditChain(h.database.kysely, h.keyring, h.config.auditHeadFile)).toMatchObject({ ok: true });
  });

  it('GET /audit: admins see everything, users only their own files and account', async () => {
    h = await makeHarness();
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    const mine = await h.request.put('/api/v1/uploads/bob.txt').set(bearer(bob)).send(Buffer.from('b'));
    await h.request.put('/api/v1/uploads/admin.txt').set(bearer(admin)).send(Buffer.from('a'));
    const all = await h.request.get('/api/v1/audit').set(bearer(admin));
    expect(all.status).toBe(200);
    expect(all.body.events.map((e: { action: string }) => e.action)).toEqual(expect.arrayContaining(['setup', 'user.create', 'file.upload']));
    const own = await h.request.get('/api/v1/audit').set(bearer(bob));
    const bobMe = (await h.request.get('/api/v1/me').set(bearer(bob))).body;
    for (const e of own.body.events) {
      expect(e.actor === bobMe.id || e.fileId === mine.body.file.id || e.action === 'user.create').toBe(true);
    }
    expect(own.body.events.some((e: { fileId: string }) => e.fileId === mine.body.file.id)).toBe(true);
    const byFile = await h.request.get(`/api/v1/audit?fileId=${mine.body.file.id}`).set(bearer(bob));
    expect(byFile.body.events.every((e: { fileId: string }) => e.fileId === mine.body.file.id)).toBe(true);
    expect(JSON.stringify(all.body)).not.toMatch(/"mac"|keyId/);
    // Paging: newest first, by cursor.
    const p1 = await h.request.get('/api/v1/audit?limit=2').set(bearer(admin));
    const p2 = await h.request.get(`/api/v1/audit?limit=2&cursor=${p1.body.nextCursor}`).set(bearer(admin));
    expect(p1.body.events[0].seq).toBeGreaterThan(p1.body.events[1].seq);
    expect(p2.body.events[0].seq).toBeLessThan(p1.body.events[1].seq);
  });
});

describe('chain verification', () => {
  async function seeded(n = 6): Promise<AuditLog> {
    h = await makeHarness();
    const log = new AuditLog({ db: h.database, keyring: h.keyring, headFile: h.config.auditHeadFile });
    for (let i = 1; i <= n; i++) await log.record({ actor: 'cli', action: `test.${i}`, outcome: 'success', details: { i } });
    return log;
  }
  const verify = () => verifyAuditChain(h.database.kysely, h.keyring, h.config.auditHeadFile);

  it('an intact chain verifies and the head file matches the last row', async () => {
    await seeded();
    expect(await verify()).toMatchObject({ ok: true, count: 6 });
    expect(readHead(h.config.auditHeadFile)?.seq).toBe(6);
  });

  it.each([
    ['an edited detail', ["UPDATE audit_events SET details = '{\"i\":99}' WHERE seq = 3"], 3],
    ['an edited outcome', ["UPDATE audit_events SET outcome = 'failure' WHERE seq = 4"], 4],
    ['an edited timestamp', ['UPDATE audit_events SET at = at + 1 WHERE seq = 2'], 2],
    ['a deleted middle row', ['DELETE FROM audit_events WHERE seq = 3'], 3],
    ['renumbered rows after a deletion', ['DELETE FROM audit_events WHERE seq = 3', 'UPDATE audit_events SET seq = seq - 1 WHERE seq > 3'], 3],
    ['a recomputed-looking MAC', ['UPDATE audit_events SET mac = ? WHERE seq = 5', randomBytes(32)], 5],
  ] as [string, (string | Buffer)[], number][])('fails at the right row for %s', async (_name, statements, at) => {
    await seeded();
    const params = statements.filter((x) => Buffer.isBuffer(x));
    for (const sql of statements) if (typeof sql === 'string') await h.sql(sql, params);
    const r = await verify();
    expect(r.ok).toBe(false);
    expect(r.ok === false && r.brokenAt).toBe(at);
  });

  it('rows cut off the end are caught by the head kept outside the database', async () => {
    await seeded();
    await h.sql('DELETE FROM audit_events WHERE seq >= 5');
    const r = await verify();
    expect(r).toMatchObject({ ok: false, brokenAt: 5 });
    // Without the head file the truncated chain would look fine: that is why it exists.
    expect(await verifyAuditChain(h.database.kysely, h.keyring)).toMatchObject({ ok: true, count: 4 });
  });

  it('a chain re-signed under another key does not verify', async () => {
    await seeded(3);
    const { Keyring } = await import('../src/crypto/keyring.js');
    const { randomBytes } = await import('node:crypto');
    const other = new Keyring(randomBytes(32));
    expect(await verifyAuditChain(h.database.kysely, other)).toMatchObject({ ok: false, brokenAt: 1 });
  });

  it('repeated identical events are summarised', async () => {
    const log = await seeded(0);
    let t = 1_000_000;
    const timed = new AuditLog({ db: h.database, keyring: h.keyring, now: () => t });
    for (let i = 0; i < 50; i++) await timed.recordSummarised('k', { actor: 'anonymous', action: 'rate_limit.hit', outcome: 'denied' });
    t += 61_000;
    await timed.recordSummarised('k', { actor: 'anonymous', action: 'rate_limit.hit', outcome: 'denied' });
    const rows = await h.sql<{ details: string }>("SELECT details FROM audit_events WHERE action = 'rate_limit.hit'");
    expect(rows.map((r) => JSON.parse(r.details).repeatsSincePrevious)).toEqual([0, 49]);
    expect(log).toBeDefined();
    expect(fs.existsSync(h.config.auditHeadFile)).toBe(false);
  });
});
