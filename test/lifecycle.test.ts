/**
 * Issue 17, retention: a file's expiry (default, ceiling, refusal; changed later within the
 * ceiling), legal holds (nobody deletes or purges a held file; hold and release audited),
 * "delete the file after its last allowed download" (only a completed download), and the
 * purge job: crypto-shred (row, wrapped key, ciphertext), links gone, one audit row per file,
 * `sfs purge [--dry-run]`, two instances racing, and a purge cut short that is finished later.
 * Runs on SQLite + disk and on PostgreSQL + S3 (BOTH_CONFIGS).
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import supertest from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { LifecycleService, startPurgeSchedule } from '../src/services/lifecycle.js';
import { verifyAuditChain } from '../src/services/audit.js';
import { createLogger } from '../src/http/logging.js';
import type { BlobStore } from '../src/storage/blob-store.js';
import { binaryParser, downloadsSettled, makeHarness, makeUser, pattern, serve, setupAdmin, type Harness } from './helpers.js';

const SFS = path.resolve(import.meta.dirname, '..', 'dist', 'cli', 'sfs.js');
const DAY = 86400;
let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

async function harness(env: Record<string, string> = {}, opts: { masterKey?: Buffer; dir?: string; setupCode?: string } = {}): Promise<Harness> {
  const h = await makeHarness(env, opts);
  cleanups.push(async () => {
    await h.app.services.audit.flush();
    h.cleanup();
  });
  return h;
}

const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });

async function put(h: Harness, token: string, name: string, content: Buffer, query = ''): Promise<{ id: string; expiresAt: string | null }> {
  const r = await h.request.put(`/api/v1/uploads/${name}${query}`).set(bearer(token)).send(content);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.file;
}

const fileRows = async (h: Harness, id: string) => h.sql<{ id: string }>('SELECT id FROM files WHERE id = ?', [id]);
const hasBlob = async (h: Harness, id: string) => (await h.blobs.stat(id)) !== null;
const auditOf = (h: Harness, action: string) =>
  h.sql<{ actor: string; fileId: string | null; details: string }>('SELECT actor, file_id AS "fileId", details FROM audit_events WHERE action = ? ORDER BY seq', [action]);
/** Makes a file due now, behind the server's back (as the clock passing its expiry would). */
const expire = (h: Harness, id: string) => h.sql('UPDATE files SET expires_at = ? WHERE id = ?', [Date.now() - 1000, id]);

async function shareOf(h: Harness, token: string, fileId: string, body: Record<string, unknown> = {}): Promise<{ id: string; token: string }> {
  const r = await h.request.post(`/api/v1/files/${fileId}/shares`).set(bearer(token)).send(body);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

/** Runs the built sfs on the harness' database and store (PostgreSQL and S3 in the scale project). */
function sfs(h: Harness, key: Buffer, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const aws = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('AWS_'))) as Record<string, string>;
  const env = { PATH: process.env.PATH ?? '', ...aws, ...h.env, NODE_ENV: 'development', DATA_DIR: h.config.dataDir, UPLOADS_DIR: h.config.uploadsDir, MASTER_KEY: key.toString('base64') };
  // Asynchronous: the in-process app must be able to finish a transaction while the CLI waits.
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SFS, ...args], { env, cwd: h.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

describe('retention settings', () => {
  it('FILE_DEFAULT_RETENTION / FILE_MAX_RETENTION take seconds or a unit, are off by default, and the default may not exceed the ceiling', () => {
    const table: [Record<string, string>, number | null, number | null][] = [
      [{}, null, null],
      [{ FILE_DEFAULT_RETENTION: '3600' }, 3600, null],
      [{ FILE_DEFAULT_RETENTION: '30d', FILE_MAX_RETENTION: '1y' }, 30 * DAY, 365 * DAY],
      [{ FILE_MAX_RETENTION: '2w' }, null, 14 * DAY],
      [{ FILE_DEFAULT_RETENTION: 'off', FILE_MAX_RETENTION: '12h' }, null, 12 * 3600],
    ];
    for (const [env, def, max] of table) {
      const c = loadConfig({ NODE_ENV: 'test', ...env }, '/tmp');
      expect([c.fileDefaultRetention, c.fileMaxRetention], JSON.stringify(env)).toEqual([def, max]);
    }
    const bad: [Record<string, string>, RegExp][] = [
      [{ FILE_DEFAULT_RETENTION: '30x' }, /FILE_DEFAULT_RETENTION/],
      [{ FILE_MAX_RETENTION: '10' }, /FILE_MAX_RETENTION/],
      [{ FILE_DEFAULT_RETENTION: '31d', FILE_MAX_RETENTION: '30d' }, /FILE_DEFAULT_RETENTION: must not exceed/],
      [{ PURGE_SCHEDULE: 'every now and then' }, /PURGE_SCHEDULE/],
    ];
    for (const [env, message] of bad) expect(() => loadConfig({ NODE_ENV: 'test', ...env }, '/tmp'), JSON.stringify(env)).toThrow(message);
  });
});

describe('expiry at upload and later', () => {
  it('default, ceiling and refusal on both upload routes; a refused upload stores nothing', async () => {
    const h = await harness({ FILE_DEFAULT_RETENTION: '1d', FILE_MAX_RETENTION: '30d' });
    const token = await setupAdmin(h);
    const near = (iso: string | null, seconds: number) => Math.abs(Date.parse(iso!) - (Date.now() + seconds * 1000)) < 60_000;
    const cases: { route: 'put' | 'multipart' | 'multipart-query'; ask?: number; status: number; seconds?: number }[] = [
      { route: 'put', status: 201, seconds: DAY },
      { route: 'put', ask: 7 * DAY, status: 201, seconds: 7 * DAY },
      { route: 'put', ask: 30 * DAY, status: 201, seconds: 30 * DAY },
      { route: 'put', ask: 30 * DAY + 1, status: 400 },
      { route: 'put', ask: 59, status: 400 },
      { route: 'multipart', status: 201, seconds: DAY },
      { route: 'multipart', ask: 3600, status: 201, seconds: 3600 },
      { route: 'multipart', ask: 31 * DAY, status: 400 },
      { route: 'multipart-query', ask: 31 * DAY, status: 400 },
      { route: 'multipart-query', ask: 2 * DAY, status: 201, seconds: 2 * DAY },
    ];
    for (const c of cases) {
      const before = await h.storedBlobs();
      const rowsBefore = (await h.sql('SELECT id FROM files')).length;
      let r;
      if (c.route === 'put') {
        r = await h.request.put(`/api/v1/uploads/a.txt${c.ask === undefined ? '' : `?expiresInSeconds=${c.ask}`}`).set(bearer(token)).send(Buffer.from('data'));
      } else {
        let q = h.request.post(`/api/v1/files${c.route === 'multipart-query' ? `?expiresInSeconds=${c.ask}` : ''}`).set(bearer(token));
        if (c.route === 'multipart' && c.ask !== undefined) q = q.field('expiresInSeconds', String(c.ask));
        r = await q.attach('file', Buffer.from('data'), 'a.txt');
      }
      expect(r.status, `${JSON.stringify(c)}: ${JSON.stringify(r.body)}`).toBe(c.status);
      if (c.status === 201) {
        const f = r.body.file ?? r.body.files[0];
        expect(near(f.expiresAt, c.seconds!), `${JSON.stringify(c)} ${f.expiresAt}`).toBe(true);
      } else {
        expect(r.body.code).toBe('validation_error');
        expect(r.body.detail).toMatch(/expiresInSeconds/);
        expect(await h.storedBlobs()).toEqual(before);
        expect((await h.sql('SELECT id FROM files')).length).toBe(rowsBefore);
      }
    }
  });

  it('a file completed through tus gets the retention default', async () => {
    const h = await harness({ FILE_DEFAULT_RETENTION: '2d' });
    const token = await setupAdmin(h);
    const T = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${token}` };
    const made = await h.request.post('/api/v1/tus/').set(T).set('Upload-Length', '5').set('Upload-Metadata', `filename ${Buffer.from('t.txt').toString('base64')}`);
    expect(made.status).toBe(201);
    const id = String(made.headers.location).split('/').pop()!;
    const sent = await h.request.patch(`/api/v1/tus/${id}`).set(T).set('Upload-Offset', '0').set('Content-Type', 'application/offset+octet-stream').send(Buffer.from('hello'));
    expect(sent.status).toBe(204);
    const list = await h.request.get('/api/v1/files').set(bearer(token));
    const f = list.body.files.find((x: { name: string }) => x.name === 't.txt');
    expect(Math.abs(Date.parse(f.expiresAt) - Date.now() - 2 * DAY * 1000)).toBeLessThan(60_000);
  });

  it('without settings a file never expires unless asked; PATCH sets, clears and moves the expiry', async () => {
    const h = await harness();
    const token = await setupAdmin(h);
    const f = await put(h, token, 'a.txt', Buffer.from('x'));
    expect(f.expiresAt).toBeNull();
    const set = await h.request.patch(`/api/v1/files/${f.id}`).set(bearer(token)).send({ expiresInSeconds: 3600 });
    expect(set.status).toBe(200);
    expect(Math.abs(Date.parse(set.body.expiresAt) - Date.now() - 3600_000)).toBeLessThan(60_000);
    expect((await h.request.get(`/api/v1/files/${f.id}`).set(bearer(token))).body.expiresAt).toBe(set.body.expiresAt);
    const cleared = await h.request.patch(`/api/v1/files/${f.id}`).set(bearer(token)).send({ expiresInSeconds: null });
    expect([cleared.status, cleared.body.expiresAt]).toEqual([200, null]);
    expect((await auditOf(h, 'file.expiry')).length).toBe(2);
  });

  it('PATCH within the ceiling is taken; beyond it (counted from the upload), or null, is refused and changes nothing', async () => {
    const h = await harness({ FILE_MAX_RETENTION: '10d' });
    const token = await setupAdmin(h);
    const other = await makeUser(h, token, 'bob');
    const f = await put(h, token, 'a.txt', Buffer.from('x'), '?expiresInSeconds=3600');
    const table: [unknown, number][] = [
      [5 * DAY, 200],
      [10 * DAY - 120, 200],
      [10 * DAY + 60, 400],
      [null, 400],
      [30, 400],
      ['1d', 400],
    ];
    for (const [ask, status] of table) {
      const before = (await h.request.get(`/api/v1/files/${f.id}`).set(bearer(token))).body.expiresAt;
      const r = await h.request.patch(`/api/v1/files/${f.id}`).set(bearer(token)).send({ expiresInSeconds: ask });
      expect(r.status, `${String(ask)}: ${JSON.stringify(r.body)}`).toBe(status);
      if (status !== 200) expect((await h.request.get(`/api/v1/files/${f.id}`).set(bearer(token))).body.expiresAt).toBe(before);
    }
    // Another user's file is not there for them.
    expect((await h.request.patch(`/api/v1/files/${f.id}`).set(bearer(other)).send({ expiresInSeconds: 3600 })).status).toBe(404);
  });
});

describe('purge', () => {
  it('crypto-shreds an expired file: row and wrapped key gone in one go, ciphertext removed, links dead, one file.purge audit row', async () => {
    const h = await harness();
    const token = await setupAdmin(h);
    const gone = await put(h, token, 'gone.txt', Buffer.from('secret one'));
    const kept = await put(h, token, 'kept.txt', Buffer.from('secret two'), '?expiresInSeconds=3600');
    const link = await shareOf(h, token, gone.id);
    expect((await h.request.get(`/s/${link.token}/content`)).status).toBe(200);
    await downloadsSettled(h);
    await expire(h, gone.id);
    // Its links stop at the expiry instant, before the purge job runs.
    expect((await h.request.get(`/s/${link.token}/content`)).status).toBe(404);
    const r = await h.app.services.lifecycle.runOnce();
    expect(r.purged.map((p) => [p.id, p.reason])).toEqual([[gone.id, 'expired']]);
    expect(await fileRows(h, gone.id)).toEqual([]);
    expect(await hasBlob(h, gone.id)).toBe(false);
    expect(await h.sql('SELECT id FROM shares WHERE file_id = ?', [gone.id])).toEqual([]);
    expect(await h.sql('SELECT * FROM purge_queue')).toEqual([]);
    expect((await h.request.get(`/s/${link.token}/content`)).status).toBe(404);
    expect((await h.request.get(`/api/v1/files/${gone.id}`).set(bearer(token))).status).toBe(404);
    // The other file is untouched.
    expect((await h.request.get(`/api/v1/files/${kept.id}/content`).set(bearer(token))).text).toBe('secret two');
    const audit = await auditOf(h, 'file.purge');
    expect(audit.map((a) => [a.actor, a.fileId])).toEqual([['system', gone.id]]);
    expect(JSON.parse(audit[0]!.details)).toMatchObject({ reason: 'expired', size: 10, revokedShares: 1 });
    await h.app.services.audit.flush();
    expect((await verifyAuditChain(h.database.kysely, h.keyring, h.app.services.audit.heads ?? undefined)).ok).toBe(true);
    // A second pass finds nothing.
    expect((await h.app.services.lifecycle.runOnce()).purged).toEqual([]);
  });

  it('the schedule inside the server runs the pass (croner)', async () => {
    const h = await harness();
    const token = await setupAdmin(h);
    const f = await put(h, token, 'a.txt', Buffer.from('x'));
    await expire(h, f.id);
    const job = startPurgeSchedule(h.app.services.lifecycle, '* * * * * *', createLogger('silent'));
    cleanups.push(() => job.stop());
    for (let i = 0; i < 100 && (await fileRows(h, f.id)).length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await fileRows(h, f.id)).toEqual([]);
    expect((await auditOf(h, 'file.purge')).length).toBe(1);
  });

  it('`sfs purge --dry-run` lists what would go and changes nothing; `sfs purge` then purges it', async () => {
    const key = randomBytes(32);
    const h = await harness({}, { masterKey: key });
    const token = await setupAdmin(h);
    const f = await put(h, token, 'old-report.pdf', Buffer.from('x'));
    const held = await put(h, token, 'held.pdf', Buffer.from('y'));
    await expire(h, f.id);
    await expire(h, held.id);
    expect((await h.request.put(`/api/v1/files/${held.id}/hold`).set(bearer(token)).send({ reason: 'litigation' })).status).toBe(200);
    const dry = await sfs(h, key, ['purge', '--dry-run']);
    expect(dry.status, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`Would purge ${f.id}  old-report.pdf`);
    expect(dry.stdout).toContain('1 due file(s) kept: under a legal hold.');
    expect(dry.stdout).not.toContain(held.id);
    expect((await fileRows(h, f.id)).length).toBe(1);
    expect(await hasBlob(h, f.id)).toBe(true);
    expect(await auditOf(h, 'file.purge')).toEqual([]);
    const json = await sfs(h, key, ['purge', '--dry-run', '--json']);
    expect(JSON.parse(json.stdout).purged.map((p: { id: string }) => p.id)).toEqual([f.id]);
    const run = await sfs(h, key, ['purge']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toContain(`Purged ${f.id}`);
    expect(await fileRows(h, f.id)).toEqual([]);
    expect(await hasBlob(h, f.id)).toBe(false);
    expect((await fileRows(h, held.id)).length).toBe(1);
    expect((await auditOf(h, 'file.purge')).length).toBe(1);
  });

  it('a purge cut short after its commit (ciphertext still there) is finished by the next pass: no orphan, still one audit row', async () => {
    const h = await harness();
    const token = await setupAdmin(h);
    const f = await put(h, token, 'a.txt', pattern(70_000));
    await expire(h, f.id);
    // A process that dies between the commit and the blob removal: its store never deletes.
    const dying = Object.assign(Object.create(h.blobs) as BlobStore, { delete: async () => Promise.reject(new Error('killed')) });
    const crashed = new LifecycleService({ db: h.database, store: dying, audit: h.app.services.audit });
    expect((await crashed.runOnce()).purged.length).toBe(1);
    expect(await fileRows(h, f.id)).toEqual([]);
    expect(await hasBlob(h, f.id)).toBe(true);
    expect((await h.sql('SELECT file_id AS "fileId" FROM purge_queue')).map((r) => r.fileId)).toEqual([f.id]);
    // The next pass (any instance) removes the ciphertext.
    const r = await h.app.services.lifecycle.runOnce();
    expect([r.resumed, r.purged.length]).toEqual([1, 0]);
    expect(await hasBlob(h, f.id)).toBe(false);
    expect(await h.sql('SELECT * FROM purge_queue')).toEqual([]);
    expect((await auditOf(h, 'file.purge')).length).toBe(1);
    expect((await h.storedBlobs()).filter((b) => b.includes(f.id))).toEqual([]);
  });

  it('two instances on one database racing to purge shred each file exactly once (one audit row each)', async () => {
    const masterKey = randomBytes(32);
    const a = await harness({}, { masterKey });
    const b = await harness({}, { masterKey, dir: a.dir, setupCode: 'instance-b-proposes-its-own-code' });
    const token = await setupAdmin(a);
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await put(a, token, `f${i}.txt`, Buffer.from(`file ${i}`))).id);
    for (const id of ids) await expire(a, id);
    // Whole passes at once: the lease lets one run (the other does nothing or finds nothing).
    const [ra, rb] = await Promise.all([a.app.services.lifecycle.runOnce(), b.app.services.lifecycle.runOnce()]);
    expect([...ra.purged, ...rb.purged].map((p) => p.id).sort()).toEqual([...ids].sort());
    // Single files raced with no lease at all: the conditional shred decides, once.
    const more: string[] = [];
    for (let i = 0; i < 4; i++) more.push((await put(a, token, `g${i}.txt`, Buffer.from(`more ${i}`))).id);
    for (const id of more) await expire(a, id);
    const rows = await a.app.services.vault.files.dueForPurge(Date.now(), 100);
    const results = await Promise.all(rows.flatMap((f) => [a.app.services.lifecycle.purgeFile(f), b.app.services.lifecycle.purgeFile(f)]));
    expect(results.filter((r) => r !== null).map((r) => r!.id).sort()).toEqual([...more].sort());
    const audit = await auditOf(a, 'file.purge');
    expect(audit.map((x) => x.fileId).sort()).toEqual([...ids, ...more].sort());
    for (const id of [...ids, ...more]) expect(await hasBlob(a, id)).toBe(false);
    await Promise.all([a.app.services.audit.flush(), b.app.services.audit.flush()]);
    expect((await verifyAuditChain(a.database.kysely, a.keyring, a.app.services.audit.heads ?? undefined)).ok).toBe(true);
  });
});

describe('legal hold', () => {
  it('a held file (by file or by user) is neither purged nor deletable by its owner or an admin; links still revoke; hold and release audited', async () => {
    const key = randomBytes(32);
    const h = await harness({}, { masterKey: key });
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    const bobId = (await h.request.get('/api/v1/me').set(bearer(bob))).body.id as string;
    const byFile = await put(h, bob, 'contract.pdf', Buffer.from('keep me'));
    const byUser = await put(h, bob, 'mail.eml', Buffer.from('keep me too'));
    // Only admins place holds.
    expect((await h.request.put(`/api/v1/files/${byFile.id}/hold`).set(bearer(bob)).send({ reason: 'mine' })).status).toBe(403);
    const placed = await h.request.put(`/api/v1/files/${byFile.id}/hold`).set(bearer(admin)).send({ reason: 'Litigation Smith v. Jones', reference: 'CASE-17' });
    expect(placed.status).toBe(200);
    expect(placed.body).toMatchObject({ scope: 'file', targetId: byFile.id, reason: 'Litigation Smith v. Jones', reference: 'CASE-17' });
    expect((await h.request.put(`/api/v1/users/${bobId}/hold`).set(bearer(admin)).send({ reason: 'custodian' })).status).toBe(200);
    for (const f of [byFile, byUser]) {
      expect((await h.request.get(`/api/v1/files/${f.id}`).set(bearer(bob))).body.legalHold).toBe(true);
      const del = await h.request.delete(`/api/v1/files/${f.id}`).set(bearer(bob));
      expect([del.status, del.body.code]).toEqual([409, 'legal_hold']);
      await expire(h, f.id);
    }
    const link = await shareOf(h, bob, byFile.id);
    // Past its expiry but held: the file has not expired, so its link still works...
    const got = await h.request.get(`/s/${link.token}/content`).buffer(true).parse(binaryParser);
    expect([got.status, String(got.body)]).toEqual([200, 'keep me']);
    await downloadsSettled(h);
    // ...and can still be revoked.
    expect((await h.request.delete(`/api/v1/shares/${link.id}`).set(bearer(bob))).status).toBe(204);
    // Not purged.
    expect((await h.app.services.lifecycle.runOnce()).purged).toEqual([]);
    // An admin cannot delete the user (and with them the files) either.
    const cli = await sfs(h, key, ['user', 'delete', 'bob', '--delete-files']);
    expect(cli.status).not.toBe(0);
    expect(cli.stderr + cli.stdout).toMatch(/legal hold/);
    for (const f of [byFile, byUser]) {
      expect((await fileRows(h, f.id)).length).toBe(1);
      expect(await hasBlob(h, f.id)).toBe(true);
    }
    // Release the user hold: mail.eml goes, contract.pdf keeps its own hold.
    expect((await h.request.delete(`/api/v1/users/${bobId}/hold`).set(bearer(admin))).status).toBe(204);
    expect((await h.app.services.lifecycle.runOnce()).purged.map((p) => p.id)).toEqual([byUser.id]);
    expect((await h.request.delete(`/api/v1/files/${byFile.id}/hold`).set(bearer(admin))).status).toBe(204);
    expect((await h.request.delete(`/api/v1/files/${byFile.id}/hold`).set(bearer(admin))).status).toBe(404);
    expect((await h.app.services.lifecycle.runOnce()).purged.map((p) => p.id)).toEqual([byFile.id]);
    const place = await auditOf(h, 'hold.place');
    const release = await auditOf(h, 'hold.release');
    expect(place.map((a) => JSON.parse(a.details).scope)).toEqual(['file', 'user']);
    expect(release.map((a) => [JSON.parse(a.details).scope, JSON.parse(a.details).reason])).toEqual([
      ['user', 'custodian'],
      ['file', 'Litigation Smith v. Jones'],
    ]);
    expect(release.every((a) => a.actor !== 'system')).toBe(true);
  });

  it('a hold on an upload request keeps what came through it (no delete, no purge, the request stays); files get the retention default', async () => {
    const h = await harness({ FILE_DEFAULT_RETENTION: '3d' });
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    const made = await h.request.post('/api/v1/requests').set(bearer(bob)).send({ title: 'Your documents' });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    const path = new URL(made.body.url).pathname;
    const sent = await h.request.put(`${path}/statement.pdf`).send(Buffer.from('from the client'));
    expect(sent.status, JSON.stringify(sent.body)).toBe(201);
    const files = (await h.request.get(`/api/v1/files?requestId=${made.body.id}`).set(bearer(bob))).body.files;
    expect(files.length).toBe(1);
    const f = files[0];
    expect(Math.abs(Date.parse(f.expiresAt) - Date.now() - 3 * DAY * 1000)).toBeLessThan(60_000);
    expect((await h.request.put(`/api/v1/requests/${made.body.id}/hold`).set(bearer(admin)).send({ reason: 'Matter 9', reference: 'M-9' })).status).toBe(200);
    expect((await h.request.get(`/api/v1/files/${f.id}`).set(bearer(bob))).body.legalHold).toBe(true);
    expect((await h.request.delete(`/api/v1/files/${f.id}`).set(bearer(bob))).body.code).toBe('legal_hold');
    expect((await h.request.delete(`/api/v1/requests/${made.body.id}`).set(bearer(bob))).body.code).toBe('legal_hold');
    await expire(h, f.id);
    expect((await h.app.services.lifecycle.runOnce()).purged).toEqual([]);
    expect((await h.request.delete(`/api/v1/requests/${made.body.id}/hold`).set(bearer(admin))).status).toBe(204);
    expect((await h.app.services.lifecycle.runOnce()).purged.map((p) => p.id)).toEqual([f.id]);
    expect((await auditOf(h, 'hold.release')).map((a) => JSON.parse(a.details).scope)).toEqual(['request']);
    expect((await h.request.put(`/api/v1/requests/${'0'.repeat(32)}/hold`).set(bearer(admin)).send({ reason: 'x' })).status).toBe(404);
  });

  it('an owner delete of an unheld file still works, and a hold on a missing target is 404', async () => {
    const h = await harness();
    const admin = await setupAdmin(h);
    const f = await put(h, admin, 'a.txt', Buffer.from('x'));
    expect((await h.request.put(`/api/v1/files/${'0'.repeat(32)}/hold`).set(bearer(admin)).send({ reason: 'x' })).status).toBe(404);
    expect((await h.request.put(`/api/v1/users/${'0'.repeat(32)}/hold`).set(bearer(admin)).send({ reason: 'x' })).status).toBe(404);
    expect((await h.request.put(`/api/v1/files/${f.id}/hold`).set(bearer(admin)).send({ reason: '' })).status).toBe(400);
    expect((await h.request.delete(`/api/v1/files/${f.id}`).set(bearer(admin))).status).toBe(204);
  });
});

describe('per-request retention', () => {
  it('a request sets the lifetime of what arrives through it: within FILE_MAX_RETENTION (else retention_exceeded, no request left), "30d"-style too, PATCH applies to later arrivals', async () => {
    const h = await harness({ FILE_DEFAULT_RETENTION: '3d', FILE_MAX_RETENTION: '30d' });
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    // Over the ceiling, as seconds and as a duration: refused with the stable code, nothing stored.
    for (const over of [31 * DAY, '31d', '5w']) {
      const r = await h.request.post('/api/v1/requests').set(bearer(bob)).send({ title: 'Too long', fileRetentionSeconds: over });
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      expect(r.body.code).toBe('retention_exceeded');
    }
    for (const bad of [59, 'soon', '0d']) {
      const r = await h.request.post('/api/v1/requests').set(bearer(bob)).send({ title: 'Bad', fileRetentionSeconds: bad });
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      expect(r.body.code).toBe('validation_error');
    }
    expect(await h.sql('SELECT id FROM upload_requests')).toEqual([]);

    const made = await h.request.post('/api/v1/requests').set(bearer(bob)).send({ title: 'Your documents', fileRetentionSeconds: '10d' });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    expect(made.body.fileRetentionSeconds).toBe(10 * DAY);
    expect((await h.request.get(`/api/v1/requests/${made.body.id}`).set(bearer(bob))).body.fileRetentionSeconds).toBe(10 * DAY);
    const path = new URL(made.body.url).pathname;
    const arrive = async (name: string) => {
      const before = Date.now();
      const sent = await h.request.put(`${path}/${name}`).send(Buffer.from(`content of ${name}`));
      expect(sent.status, JSON.stringify(sent.body)).toBe(201);
      const after = Date.now();
      const files = (await h.request.get(`/api/v1/files?requestId=${made.body.id}`).set(bearer(bob))).body.files as { name: string; createdAt: string; expiresAt: string }[];
      const f = files.find((x) => x.name === name)!;
      return { expiresAt: Date.parse(f.expiresAt), createdAt: Date.parse(f.createdAt), before, after };
    };
    const first = await arrive('a.txt');
    // The request's 10 days, not the 3-day default: upload time + retention (within a second).
    expect(Math.abs(first.expiresAt - first.createdAt - 10 * DAY * 1000)).toBeLessThanOrEqual(1000);
    expect(first.expiresAt).toBeGreaterThanOrEqual(first.before + 10 * DAY * 1000 - 1000);
    expect(first.expiresAt).toBeLessThanOrEqual(first.after + 10 * DAY * 1000 + 1000);

    // PATCH: over the ceiling refused (the stored setting stays), then 20 days for later arrivals only.
    const over = await h.request.patch(`/api/v1/requests/${made.body.id}`).set(bearer(bob)).send({ fileRetentionSeconds: 40 * DAY });
    expect(over.body.code).toBe('retention_exceeded');
    const patched = await h.request.patch(`/api/v1/requests/${made.body.id}`).set(bearer(bob)).send({ fileRetentionSeconds: 20 * DAY });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body.fileRetentionSeconds).toBe(20 * DAY);
    const second = await arrive('b.txt');
    expect(Math.abs(second.expiresAt - second.createdAt - 20 * DAY * 1000)).toBeLessThanOrEqual(1000);
    // What arrived before the change keeps its expiry.
    const again = (await h.request.get(`/api/v1/files?requestId=${made.body.id}`).set(bearer(bob))).body.files as { name: string; expiresAt: string }[];
    expect(Date.parse(again.find((x) => x.name === 'a.txt')!.expiresAt)).toBe(first.expiresAt);
    // null: back to the server default.
    expect((await h.request.patch(`/api/v1/requests/${made.body.id}`).set(bearer(bob)).send({ fileRetentionSeconds: null })).body.fileRetentionSeconds).toBe(null);
    const third = await arrive('c.txt');
    expect(Math.abs(third.expiresAt - third.createdAt - 3 * DAY * 1000)).toBeLessThanOrEqual(1000);
    expect((await auditOf(h, 'request.update')).map((a) => JSON.parse(a.details).fileRetentionSeconds)).toEqual([20 * DAY, null]);
  });
});

describe('delete the file after its last allowed download', () => {
  it('needs maxDownloads; an aborted download deletes nothing; the completed last one purges the file', async () => {
    const h = await harness();
    const token = await setupAdmin(h);
    // Far more than loopback socket buffers hold: with 3 MiB the server could hand the whole
    // body to the kernel (a completed download by the budget rules) before the client's cut.
    const content = pattern(32 * 1024 * 1024, 7);
    const f = await put(h, token, 'big.bin', content);
    expect((await h.request.post(`/api/v1/files/${f.id}/shares`).set(bearer(token)).send({ deleteFileAfterLastDownload: true })).status).toBe(400);
    const link = await shareOf(h, token, f.id, { maxDownloads: 1, deleteFileAfterLastDownload: true });
    expect((await h.request.get(`/api/v1/files/${f.id}/shares`).set(bearer(token))).body.shares[0].deleteFileAfterLastDownload).toBe(true);
    const srv = await serve(h.app);
    cleanups.push(() => srv.close());
    // Cut off after 512 KiB: not a completed download.
    await new Promise<void>((resolve, reject) => {
      http.get({ port: srv.port, host: '127.0.0.1', path: `/s/${link.token}/content` }, (res) => {
        let n = 0;
        res.on('data', (d: Buffer) => {
          n += d.length;
          if (n >= 512 * 1024) {
            res.destroy();
            resolve();
          }
        });
      }).on('error', reject);
    });
    // The cut response settles (and gives back its completion slot) when the server sees the
    // close; on a loaded machine with S3 behind it that can take a while: wait for it.
    for (let i = 0; i < 600 && ((await h.sql<{ n: number }>('SELECT count(*) AS n FROM share_reservations WHERE share_id = ?', [link.id]))[0]!.n > 0 || (await auditOf(h, 'share.download')).length === 0); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await fileRows(h, f.id)).length).toBe(1);
    expect(await hasBlob(h, f.id)).toBe(true);
    expect((await h.app.services.lifecycle.runOnce()).purged).toEqual([]);
    // The whole download: counted, and the file is purged.
    const full = await h.request
      .get(`/s/${link.token}/content`)
      .buffer(true)
      .parse((res, cb) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => cb(null, Buffer.concat(parts)));
      });
    expect(full.status).toBe(200);
    expect((full.body as Buffer).equals(content)).toBe(true);
    // The purge runs just after the response ended: wait for its ciphertext removal.
    for (let i = 0; i < 200 && ((await fileRows(h, f.id)).length || (await hasBlob(h, f.id))); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await fileRows(h, f.id)).toEqual([]);
    expect(await hasBlob(h, f.id)).toBe(false);
    const audit = await auditOf(h, 'file.purge');
    expect(audit.map((a) => JSON.parse(a.details).reason)).toEqual(['last_download']);
    expect((await h.request.get(`/s/${link.token}/content`)).status).toBe(404);
  });
});

describe('pages', () => {
  const HTML = { Accept: 'text/html' };
  async function csrfFrom(agent: ReturnType<typeof supertest.agent>, p: string): Promise<string> {
    const r = await agent.get(p).set(HTML);
    const m = /name="_csrf" value="([^"]+)"/.exec(r.text);
    if (!m) throw new Error(`no CSRF token on ${p} (${r.status})`);
    return m[1]!;
  }

  it('the upload page offers lifetimes within the ceiling; the lists show "expires in N days" and the hold; the file page changes the expiry', async () => {
    const h = await harness({ FILE_DEFAULT_RETENTION: '7d', FILE_MAX_RETENTION: '30d' });
    const admin = await setupAdmin(h);
    const agent = supertest.agent(h.app);
    const loginCsrf = await csrfFrom(agent, '/login');
    const login = await agent.post('/login').type('form').set(HTML).send({ _csrf: loginCsrf, username: 'admin', password: 'admin password 123', next: '/files' });
    expect(login.status).toBe(303);
    const up = await agent.get('/').set(HTML);
    const options = [...up.text.matchAll(/<option value="(\d*)"\s*(selected)?/g)].map((m) => [m[1], m[2] === 'selected']);
    // 1, 7 and 30 days (not 90 or 365, over the ceiling; no "until deleted"); the default chosen.
    expect(options).toEqual([
      [String(DAY), false],
      [String(7 * DAY), true],
      [String(30 * DAY), false],
    ]);
    // A page upload over the ceiling stores nothing.
    const action = /id="upload-form"[^>]*action="([^"]+)"/.exec(up.text)![1]!.replaceAll('&amp;', '&');
    const before = await h.storedBlobs();
    const refused = await agent.post(action).set(HTML).field('expiresInSeconds', String(31 * DAY)).attach('file', Buffer.from('x'), 'x.txt');
    expect(refused.status).toBe(400);
    expect(await h.storedBlobs()).toEqual(before);
    const ok = await agent.post(action).set({ Accept: 'application/json' }).field('expiresInSeconds', String(DAY)).attach('file', Buffer.from('x'), 'x.txt');
    expect(ok.status).toBe(201);
    const f = ok.body.files[0];
    expect(Math.abs(Date.parse(f.expiresAt) - Date.now() - DAY * 1000)).toBeLessThan(60_000);
    const list = await agent.get('/files').set(HTML);
    expect(list.text).toContain('expires in 1 day<');
    // Change it on the file page: 3 days is not offered (choices), but any value within the ceiling is taken.
    const csrf = await csrfFrom(agent, `/files/${f.id}`);
    const changed = await agent.post(`/files/${f.id}/expiry`).type('form').set(HTML).send({ _csrf: csrf, expiresInSeconds: String(3 * DAY) });
    expect(changed.status).toBe(303);
    expect((await agent.get('/files').set(HTML)).text).toContain('expires in 3 days<');
    const over = await agent.post(`/files/${f.id}/expiry`).type('form').set(HTML).send({ _csrf: csrf, expiresInSeconds: String(40 * DAY) });
    expect(over.status).toBe(400);
    expect(over.text).toMatch(/at most/);
    // A hold shows on both pages, and the page delete is refused.
    expect((await h.request.put(`/api/v1/files/${f.id}/hold`).set(bearer(admin)).send({ reason: 'Smith v. Jones', reference: 'CASE-17' })).status).toBe(200);
    expect((await agent.get('/files').set(HTML)).text).toContain('on legal hold');
    const page = await agent.get(`/files/${f.id}`).set(HTML);
    expect(page.text).toContain('On legal hold.');
    expect(page.text).toContain('Smith v. Jones');
    expect(page.text).toContain('CASE-17');
    const del = await agent.post(`/files/${f.id}/delete`).type('form').set(HTML).send({ _csrf: csrf, confirm: 'yes' });
    expect(del.status).toBe(409);
    expect((await fileRows(h, f.id)).length).toBe(1);
  });

  async function signInAgent(h: Harness, username: string, password: string) {
    const agent = supertest.agent(h.app);
    const loginCsrf = await csrfFrom(agent, '/login');
    expect((await agent.post('/login').type('form').set(HTML).send({ _csrf: loginCsrf, username, password, next: '/files' })).status).toBe(303);
    return agent;
  }
  const holdForms = (html: string) => [...html.matchAll(/action="(\/admin\/holds\/[^"]+)"/g)].map((m) => m[1]);

  it('an admin places and releases holds from the file, admin user and request pages (audited like the API); a non-admin sees the hold but no controls; forged posts are 403', async () => {
    const h = await harness({ FILE_MAX_RETENTION: '30d' });
    const admin = await setupAdmin(h);
    const bob = await makeUser(h, admin, 'bob');
    const bobId = (await h.sql<{ id: string }>("SELECT id FROM users WHERE username = 'bob'"))[0]!.id;
    const file = await put(h, admin, 'contract.pdf', Buffer.from('%PDF-1.4 a contract'));
    const req = await h.request.post('/api/v1/requests').set(bearer(admin)).send({ title: 'Evidence', fileRetentionSeconds: 12 * DAY });
    expect(req.status).toBe(201);
    const agent = await signInAgent(h, 'admin', 'admin password 123');

    const cases = [
      { scope: 'file', id: file.id, page: `/files/${file.id}` },
      { scope: 'user', id: bobId, page: `/admin/users/${bobId}` },
      { scope: 'request', id: req.body.id as string, page: `/requests/${req.body.id}` },
    ];
    for (const c of cases) {
      const before = await agent.get(c.page).set(HTML);
      expect(before.status).toBe(200);
      expect(holdForms(before.text)).toEqual([`/admin/holds/${c.scope}/${c.id}`]);
      const csrf = /name="_csrf" value="([^"]+)"/.exec(before.text)![1]!;
      // No CSRF token: refused, nothing held.
      const forged = await agent.post(`/admin/holds/${c.scope}/${c.id}`).type('form').set(HTML).send({ reason: 'Matter 7' });
      expect(forged.status).toBe(403);
      expect(await h.sql('SELECT scope FROM legal_holds')).toEqual([]);
      const placed = await agent.post(`/admin/holds/${c.scope}/${c.id}`).type('form').set(HTML).send({ _csrf: csrf, reason: 'Matter 7', reference: 'M-7' });
      expect(placed.status).toBe(303);
      expect(placed.headers.location).toBe(`${c.page}?msg=hold-placed`);
      expect(await h.sql('SELECT scope, target_id AS "targetId", reason, reference FROM legal_holds')).toEqual([{ scope: c.scope, targetId: c.id, reason: 'Matter 7', reference: 'M-7' }]);
      const held = await agent.get(c.page).set(HTML);
      expect(held.text).toContain('Matter 7');
      expect(held.text).toContain('reference M-7');
      expect(holdForms(held.text)).toEqual([`/admin/holds/${c.scope}/${c.id}/release`]);
      const released = await agent.post(`/admin/holds/${c.scope}/${c.id}/release`).type('form').set(HTML).send({ _csrf: csrf });
      expect(released.status).toBe(303);
      expect(released.headers.location).toBe(`${c.page}?msg=hold-released`);
      expect(await h.sql('SELECT scope FROM legal_holds')).toEqual([]);
    }
    // Audited as the API does it: one place and one release per target, by the admin.
    const adminId = (await h.sql<{ id: string }>("SELECT id FROM users WHERE username = 'admin'"))[0]!.id;
    for (const action of ['hold.place', 'hold.release']) {
      const rows = await auditOf(h, action);
      expect(rows.map((a) => [a.actor, JSON.parse(a.details).scope, JSON.parse(a.details).targetId])).toEqual(cases.map((c) => [adminId, c.scope, c.id]));
    }
    // A reason is required.
    const csrf = await csrfFrom(agent, `/files/${file.id}`);
    expect((await agent.post(`/admin/holds/file/${file.id}`).type('form').set(HTML).send({ _csrf: csrf, reason: '' })).status).toBe(400);
    expect(await h.sql('SELECT scope FROM legal_holds')).toEqual([]);
    // The request page shows its retention.
    expect((await agent.get(`/requests/${req.body.id}`).set(HTML)).text).toMatch(/id="request-retention">12 days after they arrive/);

    // Bob: his request and file under holds placed through the API; he sees them, but no controls.
    const bobReq = await h.request.post('/api/v1/requests').set(bearer(bob)).send({ title: 'Bob asks' });
    const bobFile = await put(h, bob, 'notes.txt', Buffer.from('notes'));
    expect((await h.request.put(`/api/v1/requests/${bobReq.body.id}/hold`).set(bearer(admin)).send({ reason: 'Matter 8' })).status).toBe(200);
    expect((await h.request.put(`/api/v1/files/${bobFile.id}/hold`).set(bearer(admin)).send({ reason: 'Matter 9' })).status).toBe(200);
    const bobAgent = await signInAgent(h, 'bob', 'bob password 123');
    for (const [p, reason] of [[`/requests/${bobReq.body.id}`, 'Matter 8'], [`/files/${bobFile.id}`, 'Matter 9']] as const) {
      const page = await bobAgent.get(p).set(HTML);
      expect(page.status).toBe(200);
      expect(page.text).toContain(reason);
      expect(holdForms(page.text)).toEqual([]);
    }
    // Even with his own valid CSRF token, the hold routes are for admins.
    const bobCsrf = await csrfFrom(bobAgent, `/files/${bobFile.id}`);
    expect((await bobAgent.post(`/admin/holds/file/${bobFile.id}/release`).type('form').set(HTML).send({ _csrf: bobCsrf })).status).toBe(403);
    expect((await bobAgent.post(`/admin/holds/user/${bobId}`).type('form').set(HTML).send({ _csrf: bobCsrf, reason: 'mine' })).status).toBe(403);
    expect((await h.sql<{ scope: string }>('SELECT scope FROM legal_holds ORDER BY scope')).map((r) => r.scope)).toEqual(['file', 'request']);
  });

  it('the create-request page sets the retention of arriving files ("30d"-style), refused above FILE_MAX_RETENTION; the request page changes it', async () => {
    const h = await harness({ FILE_MAX_RETENTION: '30d' });
    await setupAdmin(h);
    const agent = await signInAgent(h, 'admin', 'admin password 123');
    const list = await agent.get('/requests').set(HTML);
    expect(list.text).toContain('name="fileRetention"');
    const csrf = /name="_csrf" value="([^"]+)"/.exec(list.text)![1]!;
    const form = { _csrf: csrf, title: 'Receipts', message: '', expires: String(7 * DAY), maxFiles: '10', maxMiB: '10', maxFileMiB: '1', allowedTypes: '' };
    const over = await agent.post('/requests').type('form').set(HTML).send({ ...form, fileRetention: '31d' });
    expect(over.status).toBe(400);
    expect(over.text).toContain('at most 2592000');
    expect(await h.sql('SELECT id FROM upload_requests')).toEqual([]);
    const made = await agent.post('/requests').type('form').set(HTML).send({ ...form, fileRetention: '2w' });
    expect(made.status).toBe(303);
    const [row] = await h.sql<{ id: string; s: number }>('SELECT id, file_retention_seconds AS s FROM upload_requests');
    expect(Number(row!.s)).toBe(14 * DAY);
    const changed = await agent.post(`/requests/${row!.id}/retention`).type('form').set(HTML).send({ _csrf: csrf, fileRetention: '' });
    expect(changed.status).toBe(303);
    expect((await h.sql<{ s: number | null }>('SELECT file_retention_seconds AS s FROM upload_requests'))[0]!.s).toBe(null);
  });

  it('the link form has "delete the file after the last download", which needs a download limit', async () => {
    const h = await harness();
    const admin = await setupAdmin(h);
    const f = await put(h, admin, 'a.txt', Buffer.from('x'));
    const agent = supertest.agent(h.app);
    const loginCsrf = await csrfFrom(agent, '/login');
    expect((await agent.post('/login').type('form').set(HTML).send({ _csrf: loginCsrf, username: 'admin', password: 'admin password 123', next: '/files' })).status).toBe(303);
    const csrf = await csrfFrom(agent, `/files/${f.id}`);
    const refused = await agent.post(`/files/${f.id}/shares`).type('form').set(HTML).send({ _csrf: csrf, expires: '86400', maxDownloads: '', deleteAfter: 'yes' });
    expect(refused.status).toBe(400);
    expect(refused.text).toContain('set a maximum number of downloads');
    const made = await agent.post(`/files/${f.id}/shares`).type('form').set(HTML).send({ _csrf: csrf, expires: '86400', maxDownloads: '1', deleteAfter: 'yes' });
    expect(made.status).toBe(303);
    expect((await h.request.get(`/api/v1/files/${f.id}/shares`).set(bearer(admin))).body.shares.map((s: { deleteFileAfterLastDownload: boolean }) => s.deleteFileAfterLastDownload)).toEqual([true]);
    expect((await agent.get(`/files/${f.id}`).set(HTML)).text).toContain('deletes the file after the last download');
  });
});
