/**
 * Three server processes (dist/main.js) on one PostgreSQL database and one S3 bucket (Swift),
 * behind nginx from Debian's package (round-robin), as docs/deploy.md lays them out. Each `it`
 * is one bullet of issue 12's multi-instance suite and checks what the client received.
 * Requests "through another instance" go to that instance's port directly; requests through
 * nginx are attributed to an instance by the X-Request-Id each instance logs (pino).
 */
import { ListMultipartUploadsCommand, type S3Client } from '@aws-sdk/client-s3';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cliEnv,
  removeTempDirs,
  request,
  restartInstance,
  runSfs,
  startInstance,
  stopInstance,
  streamedUpload,
  waitServedBy,
  type Instance,
  type Reply,
} from './services/cluster.js';
import { nginxMissing, startNginx, type Nginx } from './services/nginx.js';
import { freshBucket, freshDatabase, s3Env, testS3Client } from './services/services.js';

const missing = [
  nginxMissing(),
  process.env.SFS_TEST_DATABASE_URL ? '' : `no PostgreSQL (${process.env.SFS_TEST_PG_MISSING ?? 'SFS_TEST_DATABASE_URL unset'})`,
  process.env.SFS_TEST_S3_ENDPOINT ? '' : `no S3 service (${process.env.SFS_TEST_S3_MISSING ?? 'SFS_TEST_S3_ENDPOINT unset'})`,
].filter(Boolean);
if (missing.length) {
  if (process.env.REQUIRE_SERVICES === '1') throw new Error(`multi-instance suite: REQUIRE_SERVICES=1 but ${missing.join('; ')}`);
  console.log(`\n  SKIPPED multi-instance suite (3 servers behind nginx): ${missing.join('; ')}\n`);
}

// Loopback ports from the worker's pid, like test/services/global-setup.ts does for its
// services (a different range, below the ephemeral ports): nginx, then the three instances.
const BASE = 27000 + (process.pid % 900) * 5;
const NGINX_PORT = BASE;
const PORTS = [BASE + 1, BASE + 2, BASE + 3];
const LOGIN_LIMIT = 3;
const ADMIN = { username: 'admin', password: 'multi admin password' };
const PASSWORD = 'a user password 123';
const CHUNK = 65_536;

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });
const HTML = { Accept: 'text/html' };

describe.runIf(missing.length === 0)('three instances on one PostgreSQL and one bucket behind nginx', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>> | undefined;
  let bucket: Awaited<ReturnType<typeof freshBucket>> | undefined;
  const extra: { remove(): Promise<void> }[] = [];
  let s3: S3Client;
  let nginx: Nginx | undefined;
  const inst: Instance[] = [];
  let shared: Record<string, string>;
  let adminToken: string;
  /** A user with a token, created for one test. */
  const users = new Map<string, { id: string; token: string }>();

  const A = () => inst[0]!;
  const B = () => inst[1]!;
  const C = () => inst[2]!;

  async function makeUser(username: string, via = A()): Promise<{ id: string; token: string }> {
    const u = await request(via.port, 'POST', '/api/v1/users', { headers: bearer(adminToken), body: { username, password: PASSWORD } });
    expect(u.status, JSON.stringify(u.json)).toBe(201);
    const t = await request(via.port, 'POST', '/api/v1/auth/tokens', { body: { username, password: PASSWORD, name: 'multi' } });
    expect(t.status, JSON.stringify(t.json)).toBe(201);
    const user = { id: u.json.id as string, token: t.json.token as string };
    users.set(username, user);
    return user;
  }

  async function upload(port: number, token: string, name: string, content: Buffer): Promise<{ id: string; sha256: string; size: number }> {
    const r = await request(port, 'PUT', `/api/v1/uploads/${name}`, { headers: { ...bearer(token), 'Content-Type': 'application/octet-stream' }, body: content });
    expect(r.status, JSON.stringify(r.json)).toBe(201);
    return r.json.file;
  }

  const download = (port: number, token: string, id: string, headers: Record<string, string> = {}) =>
    request(port, 'GET', `/api/v1/files/${id}/content`, { headers: { ...bearer(token), ...headers } });

  beforeAll(async () => {
    s3 = testS3Client();
    // The database, the bucket, nginx and the three servers start in parallel: the servers
    // migrate the fresh database under the advisory lock, exactly one of them does the work.
    const [d, b] = await Promise.all([freshDatabase(), freshBucket(s3)]);
    db = d;
    bucket = b;
    shared = {
      DATABASE_URL: d.url,
      DATABASE_POOL_SIZE: '4',
      ...s3Env(b.name, { S3_PREFIX: 'multi' }),
      AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID!,
      AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY!,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      MASTER_KEY: randomBytes(32).toString('base64'),
      TRUST_PROXY: 'loopback',
      PUBLIC_URL: `http://127.0.0.1:${NGINX_PORT}`,
      LOGIN_RATE_LIMIT: String(LOGIN_LIMIT),
      LOG_LEVEL: 'info',
      SHUTDOWN_GRACE_SECONDS: '2',
    };
    const started = await Promise.allSettled([
      startNginx({ listenPort: NGINX_PORT, upstreams: PORTS }),
      ...['A', 'B', 'C'].map((name, i) => startInstance(name, PORTS[i]!, shared)),
    ]);
    const [n, ...servers] = started;
    if (n!.status === 'fulfilled') nginx = n!.value as Nginx;
    for (const s of servers) if (s.status === 'fulfilled') inst.push(s.value as Instance);
    const failed = started.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed.length) throw new Error(`start-up failed: ${failed.map((f) => String(f.reason?.message ?? f.reason)).join(' | ')}`);
    inst.sort((x, y) => x.name.localeCompare(y.name));

    // The first admin, through A with the setup code A wrote to its data dir (or printed).
    const codeFile = path.join(A().dir, 'data', 'setup-code');
    const code = fs.existsSync(codeFile) ? fs.readFileSync(codeFile, 'utf8').trim() : /setup code: (\S+)/.exec(A().child.stderr())?.[1];
    if (!code) throw new Error('instance A printed no setup code');
    const s = await request(A().port, 'POST', '/api/v1/setup', { body: { setupCode: code, ...ADMIN } });
    expect(s.status, JSON.stringify(s.json)).toBe(201);
    const t = await request(A().port, 'POST', '/api/v1/auth/tokens', { body: { ...ADMIN, name: 'multi' } });
    expect(t.status).toBe(201);
    adminToken = t.json.token;
  });

  afterAll(async () => {
    // Every process goes, whatever happened above; then the database and the buckets.
    await Promise.allSettled([nginx?.stop(), ...inst.map((i) => stopInstance(i))]);
    await Promise.allSettled([db?.drop(), bucket?.remove(), ...extra.map((e) => e.remove())]);
    removeTempDirs();
  });

  it('an upload through one instance downloads byte-exact through another, and nginx spreads requests round-robin', async () => {
    const alice = await makeUser('alice');
    const content = randomBytes(3 * 1024 * 1024 + 17);
    const f = await upload(A().port, alice.token, 'through-a.bin', content);
    expect(f.sha256).toBe(sha256(content));
    for (const other of [B(), C()]) {
      const r = await download(other.port, alice.token, f.id);
      expect(r.status).toBe(200);
      expect(r.headers.etag).toBe(`"${f.sha256}"`);
      expect(r.body.equals(content)).toBe(true);
    }
    // A range read on one instance of an object another instance wrote.
    const ranged = await download(C().port, alice.token, f.id, { Range: `bytes=${CHUNK - 5}-${CHUNK + 4}` });
    expect(ranged.status).toBe(206);
    expect(ranged.body.equals(content.subarray(CHUNK - 5, CHUNK + 5))).toBe(true);

    // Downloads through nginx: byte-exact, each logged by exactly one instance, and all three
    // take turns. (Nine, not three: each nginx worker keeps its own round-robin position.)
    const servedBy: string[] = [];
    for (let i = 0; i < 9; i++) {
      const id = `multi-rr-${i}-${randomBytes(4).toString('hex')}`;
      const r = await download(NGINX_PORT, alice.token, f.id, { 'X-Request-Id': id });
      expect(r.status).toBe(200);
      expect(r.headers['x-request-id']).toBe(id);
      expect(r.body.equals(content)).toBe(true);
      servedBy.push(await waitServedBy(inst, id));
    }
    expect(new Set(servedBy)).toEqual(new Set(['A', 'B', 'C']));
    // An upload through nginx lands on whichever instance; every instance serves it.
    const second = randomBytes(200_000);
    const g = await upload(NGINX_PORT, alice.token, 'through-nginx.bin', second);
    for (const i of inst) expect((await download(i.port, alice.token, g.id)).body.equals(second)).toBe(true);
  });

  it('a one-download link fetched at the same moment through two instances serves exactly one', async () => {
    const bob = await makeUser('bob', B());
    const content = randomBytes(4 * 1024 * 1024 + 3);
    const f = await upload(B().port, bob.token, 'once.bin', content);
    for (const [x, y] of [[A(), B()], [B(), C()], [C(), A()]] as const) {
      const s = await request(x.port, 'POST', `/api/v1/files/${f.id}/shares`, { headers: bearer(bob.token), body: { maxDownloads: 1 } });
      expect(s.status).toBe(201);
      const link = `/s/${s.json.token}/content`;
      const both = await Promise.all([request(x.port, 'GET', link), request(y.port, 'GET', link)]);
      const full = both.filter((r) => r.status === 200);
      const refused = both.filter((r) => r.status !== 200);
      expect(full, `${x.name} vs ${y.name}: ${both.map((r) => r.status)}`).toHaveLength(1);
      expect(full[0]!.body.equals(content)).toBe(true);
      expect(refused[0]!.status).toBe(404);
      expect(refused[0]!.json.code).toBe('not_found');
      // Spent for the third instance too.
      const third = inst.find((i) => i !== x && i !== y)!;
      const again = await request(third.port, 'GET', link);
      expect(again.status).toBe(404);
      // The one download is counted once (its settling commit may land just after the bytes).
      let listed: Reply | undefined;
      for (let i = 0; i < 100; i++) {
        listed = await request(third.port, 'GET', `/api/v1/files/${f.id}/shares`, { headers: bearer(bob.token) });
        const sh = (listed.json.shares as { id: string; downloads: number }[]).find((z) => z.id === s.json.id);
        if (sh?.downloads === 1) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      expect((listed!.json.shares as { id: string }[]).find((z) => z.id === s.json.id)).toMatchObject({ downloads: 1, bytesServed: content.length, status: 'exhausted' });
    }
  });

  it('a login rate limit counts attempts across instances', async () => {
    await makeUser('carol');
    // One wrong password on each instance: together they reach the limit (3 per IP+user).
    for (const i of inst) {
      const r = await request(i.port, 'POST', '/api/v1/auth/tokens', { body: { username: 'carol', password: 'wrong password!', name: 'x' } });
      expect(r.status).toBe(401);
      expect(r.json.code).toBe('unauthorized');
    }
    // The next attempt, even with the right password, is refused by every instance and by
    // whichever instance nginx picks: nginx forwards the client's address (127.0.0.1, the same
    // key), replacing a forged X-Forwarded-For rather than appending to it.
    for (const port of [...inst.map((i) => i.port), NGINX_PORT]) {
      const forged: Record<string, string> = port === NGINX_PORT ? { 'X-Forwarded-For': '203.0.113.9' } : {};
      const r = await request(port, 'POST', '/api/v1/auth/tokens', { headers: forged, body: { username: 'carol', password: PASSWORD, name: 'x' } });
      expect(r.status, `port ${port}: ${r.status} ${r.json?.code ?? ''}`).toBe(429);
      expect(r.json.code).toBe('rate_limited');
      expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    }
    // Another user's budget is untouched.
    const other = await request(B().port, 'POST', '/api/v1/auth/tokens', { body: { ...ADMIN, name: 'x' } });
    expect(other.status).toBe(201);
  });

  it('a browser session created through one instance works through the others, and signing out on one ends it everywhere', async () => {
    const jar = new Map<string, string>();
    const keep = (r: Reply) => {
      const set = r.headers['set-cookie'] ?? [];
      for (const c of set) {
        const [pair] = c.split(';');
        const eq = pair!.indexOf('=');
        jar.set(pair!.slice(0, eq), pair!.slice(eq + 1));
      }
    };
    const cookie = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const csrf = (r: Reply) => {
      const m = /name="_csrf" value="([^"]+)"/.exec(r.body.toString('utf8'));
      if (!m) throw new Error(`no CSRF token (${r.status}): ${r.body.toString('utf8').slice(0, 200)}`);
      return m[1]!;
    };
    const form = (o: Record<string, string>) => new URLSearchParams(o).toString();

    const login = await request(A().port, 'GET', '/login', { headers: HTML });
    expect(login.status).toBe(200);
    keep(login);
    const signedIn = await request(A().port, 'POST', '/login', {
      headers: { ...HTML, Cookie: cookie(), 'Content-Type': 'application/x-www-form-urlencoded' },
      body: form({ _csrf: csrf(login), username: ADMIN.username, password: ADMIN.password, next: '/files' }),
    });
    expect(signedIn.status).toBe(303);
    expect(signedIn.headers.location).toBe('/files');
    keep(signedIn);
    expect(jar.has('sfs-session')).toBe(true);
    const session = cookie();

    const filesOn = (i: Instance | number, c = session) => request(typeof i === 'number' ? i : i.port, 'GET', '/files', { headers: { ...HTML, Cookie: c } });
    for (const i of [A(), B(), C()]) {
      const r = await filesOn(i);
      expect(r.status, `${i.name}`).toBe(200);
      expect(r.body.toString('utf8')).toContain(ADMIN.username);
    }
    // Sign out on B, with the CSRF token of a page B rendered for this session.
    const page = await filesOn(B());
    keep(page);
    const out = await request(B().port, 'POST', '/logout', {
      headers: { ...HTML, Cookie: cookie(), 'Content-Type': 'application/x-www-form-urlencoded' },
      body: form({ _csrf: csrf(page) }),
    });
    expect(out.status).toBe(303);
    expect(out.headers.location).toBe('/login?msg=signed-out');
    // The old cookie is refused everywhere: on A, C, B and through nginx.
    for (const port of [A().port, C().port, B().port, NGINX_PORT]) {
      const r = await filesOn(port);
      expect(r.status, `port ${port}`).toBe(303);
      expect(r.headers.location).toBe('/login?next=%2Ffiles');
    }
  });

  it('a quota is not overshot by parallel uploads through different instances', async () => {
    const dave = await makeUser('dave');
    const QUOTA = 10 * 1024 * 1024;
    const set = await request(A().port, 'PATCH', `/api/v1/users/${dave.id}`, { headers: bearer(adminToken), body: { quotaBytes: QUOTA } });
    expect(set.status, JSON.stringify(set.json)).toBe(200);
    // Three 6 MiB uploads, one per instance: any one fits, no two do. All three are in flight
    // (1 MiB each sent, the rest held back) before any can finish.
    const size = 6 * 1024 * 1024;
    const contents = inst.map(() => randomBytes(size));
    const ups = inst.map((i, k) => streamedUpload(i.port, `q-${i.name}.bin`, contents[k]!, bearer(dave.token)));
    await Promise.all(ups.map((u) => u.send(1024 * 1024)));
    const outcomes = await Promise.all(ups.map((u) => u.finish()));
    const stored = outcomes.map((o, k) => ({ o, k })).filter(({ o }) => 'status' in o && o.status === 201);
    const refused = outcomes.filter((o) => !('status' in o) || o.status !== 201);
    expect(stored.length * size, JSON.stringify(outcomes)).toBeLessThanOrEqual(QUOTA);
    for (const o of refused) {
      expect(o).toMatchObject({ status: 413, json: { code: 'quota_exceeded' } });
    }
    // What the server counts is what was stored: no bytes of a refused upload, no lease left over.
    const me = await request(C().port, 'GET', '/api/v1/me', { headers: bearer(dave.token) });
    expect(me.json).toMatchObject({ usageBytes: stored.length * size, quotaBytes: QUOTA });
    const list = await request(B().port, 'GET', '/api/v1/files', { headers: bearer(dave.token) });
    expect((list.json.files as unknown[]).length).toBe(stored.length);
    for (const { k } of stored) {
      const f = (list.json.files as { name: string; id: string }[]).find((x) => x.name === `q-${inst[k]!.name}.bin`)!;
      expect((await download(inst[(k + 1) % 3]!.port, dave.token, f.id)).body.equals(contents[k]!)).toBe(true);
    }
    // The space that is left is usable at once, through any instance.
    const rest = QUOTA - stored.length * size;
    if (rest > 0) await upload(NGINX_PORT, dave.token, 'fill.bin', randomBytes(rest));
    const over = await request(NGINX_PORT, 'PUT', '/api/v1/uploads/over.bin', { headers: { ...bearer(dave.token), 'Content-Type': 'application/octet-stream' }, body: Buffer.alloc(1) });
    expect(over.status).toBe(413);
    expect(over.json.code).toBe('quota_exceeded');
  });

  it('the audit chain verifies after concurrent appends from all three', async () => {
    const erin = await makeUser('erin');
    const f = await upload(A().port, erin.token, 'audited.bin', randomBytes(1000));
    // Ten link creations per instance, all at once: thirty appends racing for the chain.
    const made = await Promise.all(
      inst.flatMap((i) => Array.from({ length: 10 }, () => request(i.port, 'POST', `/api/v1/files/${f.id}/shares`, { headers: bearer(erin.token), body: {} }))),
    );
    for (const r of made) expect(r.status).toBe(201);
    const ids = new Set(made.map((r) => r.json.id as string));
    expect(ids.size).toBe(30);

    const env = cliEnv(shared);
    const verify = await runSfs(['audit', 'verify', '--json'], env);
    expect(verify.code, verify.stderr).toBe(0);
    const result = JSON.parse(verify.stdout);
    expect(result).toMatchObject({ ok: true });
    // Every append is in the one chain: each link's event, exactly once.
    const exported = await runSfs(['audit', 'export'], env);
    expect(exported.code, exported.stderr).toBe(0);
    const events = exported.stdout.trim().split('\n').map((l) => JSON.parse(l) as { seq: number; action: string; shareId: string | null });
    expect(result.count).toBe(events.length);
    const created = events.filter((e) => e.action === 'share.create' && e.shareId !== null && ids.has(e.shareId));
    expect(created).toHaveLength(30);
    expect(new Set(created.map((e) => e.shareId)).size).toBe(30);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, k) => k + 1));
    // The admins' view agrees, on every instance.
    for (const i of inst) {
      const page = await request(i.port, 'GET', '/api/v1/audit?limit=100', { headers: bearer(adminToken) });
      expect(page.status).toBe(200);
      expect((page.json.events as { action: string; shareId: string | null }[]).filter((e) => e.action === 'share.create' && ids.has(e.shareId ?? '')).length).toBe(30);
    }
  });

  it("SIGKILL of one instance mid-upload leaves nothing served and nothing lost; uploads in flight on the others complete and the restarted instance's sweep does not touch them", async () => {
    const frank = await makeUser('frank');
    const kept = [randomBytes(700_000), randomBytes(CHUNK * 3)];
    const before = [await upload(A().port, frank.token, 'kept-1.bin', kept[0]!), await upload(B().port, frank.token, 'kept-2.bin', kept[1]!)];
    const multipartUploads = async () => ((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket!.name }))).Uploads ?? []).map((u) => u.UploadId!);
    const already = new Set(await multipartUploads());

    // One upload per instance, past the first 5 MiB part: each has a multipart upload open in the bucket.
    const size = 6 * 1024 * 1024 + 17;
    const contents = inst.map(() => randomBytes(size));
    const ups = inst.map((i, k) => streamedUpload(i.port, `flight-${i.name}.bin`, contents[k]!, bearer(frank.token)));
    await Promise.all(ups.map((u) => u.send(5.5 * 1024 * 1024)));
    let open: string[] = [];
    for (let i = 0; i < 400 && open.length < 3; i++) {
      open = (await multipartUploads()).filter((id) => !already.has(id));
      if (open.length < 3) await new Promise((r) => setTimeout(r, 25));
    }
    expect(open).toHaveLength(3);
    // Let them age past a couple of seconds first (the store stamps them to the second), so a
    // sweep that took in-flight uploads for leftovers would find these old enough to remove.
    for (let i = 0; i < 200; i++) {
      const stamps = ((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket!.name }))).Uploads ?? []).filter((u) => open.includes(u.UploadId!));
      if (stamps.every((u) => Date.now() - u.Initiated!.getTime() >= 2000)) break;
      await new Promise((r) => setTimeout(r, 50));
    }

    const killed = C();
    killed.child.proc.kill('SIGKILL');
    const cut = await ups[2]!.done;
    expect(cut).toHaveProperty('error');
    // The restart runs the start-up sweep on the shared bucket while A's and B's uploads stream.
    await restartInstance(killed);
    expect(killed.child.proc.pid).not.toBe(undefined);
    expect(await multipartUploads()).toEqual(expect.arrayContaining(open));

    const finished = await Promise.all([ups[0]!.finish(), ups[1]!.finish()]);
    for (const o of finished) expect(o).toMatchObject({ status: 201 });
    const ids = finished.map((o) => ('status' in o ? (o.json.file.id as string) : ''));
    // Byte-exact through another instance, the restarted one included.
    expect((await download(B().port, frank.token, ids[0]!)).body.equals(contents[0]!)).toBe(true);
    expect((await download(C().port, frank.token, ids[1]!)).body.equals(contents[1]!)).toBe(true);

    // Nothing of the killed upload is listed or served; everything stored before still is.
    const list = await request(NGINX_PORT, 'GET', '/api/v1/files?limit=100', { headers: bearer(frank.token) });
    expect((list.json.files as { name: string }[]).map((x) => x.name).sort()).toEqual(['flight-A.bin', 'flight-B.bin', 'kept-1.bin', 'kept-2.bin']);
    for (const [k, f] of before.entries()) {
      const r = await download(C().port, frank.token, f.id);
      expect(r.status).toBe(200);
      expect(r.body.equals(kept[k]!)).toBe(true);
    }
    // The store as a whole: every row's ciphertext is there and verifies, no orphan blob.
    const scrub = await runSfs(['verify', '--json'], cliEnv(shared));
    expect(scrub.code, scrub.stderr + scrub.stdout.slice(0, 500)).toBe(0);
    expect(JSON.parse(scrub.stdout).counts).toMatchObject({ corrupt: 0, missing: 0, orphan: 0 });
  });

  it('`sfs backup` during that load restores to a state that verifies', async () => {
    const grace = await makeUser('grace');
    const settled = await Promise.all(inst.map((i, k) => upload(i.port, grace.token, `settled-${k}.bin`, randomBytes(300_000 + k))));
    const settledContent = new Map<string, string>(settled.map((f) => [f.id, f.sha256]));
    // Uploads in flight on every instance, and one through nginx, for the whole backup: most
    // of each body sent before it starts, the rest only after it has finished.
    const size = 3 * 1024 * 1024;
    const ports = [...inst.map((i) => i.port), NGINX_PORT];
    const contents = ports.map(() => randomBytes(size));
    const ups = ports.map((port, k) => streamedUpload(port, `during-${k}.bin`, contents[k]!, bearer(grace.token)));
    await Promise.all(ups.map((u) => u.send(2 * 1024 * 1024)));
    const backupDir = path.join(cliEnv(shared).DATA_DIR!, '..', 'backup');
    const backup = await runSfs(['backup', backupDir, '--json'], cliEnv(shared));
    const finished = await Promise.all(ups.map((u) => u.finish()));
    expect(backup.code, backup.stderr).toBe(0);
    for (const o of finished) expect(o).toMatchObject({ status: 201 });
    // Its snapshot holds this suite's earlier files too; which ones is checked on the restored side.
    const manifest = JSON.parse(backup.stdout);
    expect(manifest.files.count).toBeGreaterThanOrEqual(settled.length);

    // Restore into an empty database and an empty bucket, then check the result there.
    const [db2, bucket2] = await Promise.all([freshDatabase(), freshBucket(s3)]);
    extra.push({ remove: () => db2.drop() }, bucket2);
    const target = { ...shared, DATABASE_URL: db2.url, S3_BUCKET: bucket2.name };
    const restored = await runSfs(['restore', backupDir, '--json'], cliEnv(target));
    expect(restored.code, restored.stderr).toBe(0);
    expect(JSON.parse(restored.stdout).files).toBe(manifest.files.count);
    const scrub = await runSfs(['verify', '--json'], cliEnv(target));
    expect(scrub.code, scrub.stderr + scrub.stdout.slice(0, 500)).toBe(0);
    expect(JSON.parse(scrub.stdout).counts).toEqual({ ok: manifest.files.count, corrupt: 0, missing: 0, orphan: 0 });
    const audit = await runSfs(['audit', 'verify', '--json'], cliEnv(target));
    expect(audit.code, audit.stderr + audit.stdout).toBe(0);
    expect(JSON.parse(audit.stdout)).toMatchObject({ ok: true });

    // A server on the restored state: the same token works, the files stored before the
    // backup download byte-exact, the uploads that ran beside it are not there.
    const server = await startInstance('restored', BASE + 4, target);
    inst.push(server);
    try {
      const listed = await request(server.port, 'GET', '/api/v1/files?limit=100', { headers: bearer(grace.token) });
      expect(listed.status).toBe(200);
      expect((listed.json.files as { name: string }[]).map((f) => f.name).sort()).toEqual(['settled-0.bin', 'settled-1.bin', 'settled-2.bin']);
      for (const [id, digest] of settledContent) {
        const r = await download(server.port, grace.token, id);
        expect(r.status).toBe(200);
        expect(sha256(r.body)).toBe(digest);
      }
    } finally {
      await stopInstance(server);
    }
  });
});
