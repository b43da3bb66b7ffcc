/**
 * Notifications end to end (issue 17): a real SMTP server and a real HTTP receiver on
 * loopback, the outbox written with the change, signed webhooks with retries, the SSRF
 * guard (at set-up and at connection time), links sent by email, settings through
 * PATCH /me and the account page, and two instances on one database delivering once.
 */
import supertest from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN, downloadsSettled, makeHarness, makeUser, setupAdmin, tokenFor, type Harness } from './helpers.js';
import { startReceiver, startSmtp, verifySignature, type Mail } from './notify-helpers.js';
import { runSfs } from './services/cluster.js';

const BASE = 'http://files.example.test';
const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let smtp: Awaited<ReturnType<typeof startSmtp>>;
beforeAll(async () => {
  smtp = await startSmtp();
});
afterAll(() => smtp.close());

const harnesses: Harness[] = [];
afterEach(() => {
  while (harnesses.length) harnesses.pop()!.cleanup();
  smtp.mails.length = 0;
});

async function harness(env: Record<string, string> = {}, opts: Parameters<typeof makeHarness>[1] = {}): Promise<Harness> {
  const h = await makeHarness(
    { SMTP_URL: `smtp://127.0.0.1:${smtp.port}`, SMTP_FROM: 'Files <files@example.test>', WEBHOOK_ALLOW_PRIVATE: '1', NOTIFY_RETRY_BASE_MS: '40', PUBLIC_URL: BASE, TRUST_PROXY: 'loopback', ...env },
    opts,
  );
  harnesses.unshift(h);
  return h;
}

/** Runs the app's worker until nothing is due or in flight (bounded: 10 s). */
async function drain(...hs: Harness[]): Promise<void> {
  for (let i = 0; i < 400; i++) {
    await Promise.all(hs.map((h) => h.app.services.notify.runOnce()));
    const [r] = await hs[0]!.sql<{ n: number }>("SELECT count(*) AS n FROM notification_outbox WHERE status = 'pending'");
    if (Number(r!.n) === 0) return;
    await sleep(25);
  }
  throw new Error('the outbox did not drain');
}

/** Everything a mail carried, raw and decoded, for "never contains" checks. */
const everything = (m: Mail) => `${m.raw}\n${m.text}\n${m.html}\n${JSON.stringify(m.headers)}`;

async function upload(h: Harness, token: string, name: string, body = 'contract text'): Promise<string> {
  const r = await h.request.post('/api/v1/files').set(bearer(token)).attach('file', Buffer.from(body), name);
  expect(r.status).toBe(201);
  return r.body.files[0].id as string;
}

describe('notifications by email and webhook', () => {
  it('a completed link download reaches the owner by email and by signed webhook, with one event id, and no token or password anywhere', async () => {
    const receiver = await startReceiver();
    try {
      const h = await harness();
      const token = await setupAdmin(h);
      const me = await h.request.patch('/api/v1/me').set(bearer(token)).send({ email: 'owner@example.test', notifications: { shareDownloaded: ['email', 'webhook'], shareExhausted: ['email', 'webhook'] } });
      expect(me.status).toBe(200);
      expect(me.body.notifications).toEqual({ shareDownloaded: ['email', 'webhook'], shareExhausted: ['email', 'webhook'], requestUpload: [], expiringSoon: [], newSignIn: [], accountChanged: [] });
      const hook = await h.request.put('/api/v1/me/webhook').set(bearer(token)).send({ url: receiver.url });
      expect(hook.status).toBe(200);
      const secret = hook.body.secret as string;
      expect((await h.request.get('/api/v1/me/webhook').set(bearer(token))).text).not.toContain(secret);

      const fileId = await upload(h, token, 'Contract <v2>.pdf');
      const password = 'link password 1234';
      const share = await h.request.post(`/api/v1/files/${fileId}/shares`).set(bearer(token)).send({ maxDownloads: 1, password });
      expect(share.status).toBe(201);
      const got = await h.request.get(`/s/${share.body.token}/content`).auth('x', password).set('X-Forwarded-For', '198.51.100.7');
      expect(got.status).toBe(200);
      // The count is settled when the response has ended (on the server's side too).
      await downloadsSettled(h);

      // Committed with the count: the outbox holds both events before any worker ran.
      const queued = await h.sql<{ type: string; channel: string }>('SELECT type, channel FROM notification_outbox ORDER BY type, channel');
      expect(queued).toEqual([
        { type: 'share.downloaded', channel: 'email' },
        { type: 'share.downloaded', channel: 'webhook' },
        { type: 'share.exhausted', channel: 'email' },
        { type: 'share.exhausted', channel: 'webhook' },
      ]);
      await drain(h);

      expect(smtp.mails.map((m) => m.headers.subject).sort()).toEqual(['A link to "Contract <v2>.pdf" is used up', 'Your file "Contract <v2>.pdf" was downloaded']);
      for (const m of smtp.mails) {
        expect(m.to).toEqual(['owner@example.test']);
        expect(m.headers.from).toBe('Files <files@example.test>');
        expect(m.text).toContain(`${BASE}/files/${fileId}`);
        expect(m.html).toContain(`${BASE}/files/${fileId}`);
        expect(m.html).toContain('Contract &lt;v2&gt;.pdf');
        expect(everything(m)).not.toContain(share.body.token);
        expect(everything(m)).not.toContain(password);
        expect(everything(m)).not.toContain('contract text');
      }
      const downloaded = smtp.mails.find((m) => m.headers.subject.includes('downloaded'))!;
      expect(downloaded.text).toContain('198.51.100.7');

      expect(receiver.received).toHaveLength(2);
      for (const r of receiver.received) {
        expect(verifySignature(secret, r.headers['sfs-signature'] as string, r.body)).toBe(true);
        expect(verifySignature('whsec_not-the-secret', r.headers['sfs-signature'] as string, r.body)).toBe(false);
        const body = JSON.parse(r.body);
        expect(r.headers['sfs-event-id']).toBe(body.id);
        expect(r.headers['idempotency-key']).toBe(body.id);
        expect(r.headers['sfs-event-type']).toBe(body.type);
        expect(r.body).not.toContain(share.body.token);
        expect(r.body).not.toContain(password);
      }
      const event = JSON.parse(receiver.received.find((r) => JSON.parse(r.body).type === 'share.downloaded')!.body);
      expect(event.data).toMatchObject({ fileId, fileName: 'Contract <v2>.pdf', clientAddress: '198.51.100.7', downloads: 1, maxDownloads: 1 });
      // The same event by email carries the same idempotency key.
      expect(downloaded.headers['x-sfs-event-id']).toBe(event.id);

      const log = await h.request.get('/api/v1/me/webhook').set(bearer(token));
      expect(log.body.deliveries.map((d: { status: string }) => d.status)).toEqual(['sent', 'sent']);
      // Nothing secret in the database: no link token, no webhook secret, no password.
      const rows = JSON.stringify(await h.tableRows());
      for (const s of [share.body.token, secret, password]) expect(rows).not.toContain(s);
    } finally {
      await receiver.close();
    }
  });

  it('a link sent by email reaches each recipient with its URL, never the password; the link list shows who was sent what', async () => {
    const h = await harness();
    const token = await setupAdmin(h);
    const fileId = await upload(h, token, 'plans.pdf');
    const password = 'recipient password 99';
    const r = await h.request
      .post(`/api/v1/files/${fileId}/shares`)
      .set(bearer(token))
      .send({ password, recipients: ['Ana@Example.test', 'bo@example.test'], message: 'Here are the plans.\nCall me for the password.' });
    expect(r.status).toBe(201);
    expect(r.body.recipients).toEqual([
      { address: 'ana@example.test', status: 'pending', sentAt: null },
      { address: 'bo@example.test', status: 'pending', sentAt: null },
    ]);
    const url = `${BASE}/s/${r.body.token}`;
    expect(r.body.url).toBe(url);
    // Queued, but the URL is sealed: the database holds no token.
    expect(JSON.stringify(await h.tableRows())).not.toContain(r.body.token);
    await drain(h);

    expect(smtp.mails.map((m) => m.to[0]).sort()).toEqual(['ana@example.test', 'bo@example.test']);
    for (const m of smtp.mails) {
      expect(m.to).toHaveLength(1);
      expect(m.headers.subject).toBe('admin shared "plans.pdf" with you');
      expect(m.text).toContain(url);
      expect(m.html).toContain(url);
      expect(m.text).toContain('Call me for the password.');
      expect(m.text).toContain('never sent by email');
      expect(everything(m)).not.toContain(password);
    }
    // Once sent, the sealed URL is gone from the outbox too.
    const sealed = await h.sql<{ n: number }>('SELECT count(*) AS n FROM notification_outbox WHERE sealed IS NOT NULL');
    expect(Number(sealed[0]!.n)).toBe(0);
    const list = await h.request.get(`/api/v1/files/${fileId}/shares`).set(bearer(token));
    expect(list.body.shares[0].recipients.map((x: { address: string; status: string }) => [x.address, x.status])).toEqual([
      ['ana@example.test', 'sent'],
      ['bo@example.test', 'sent'],
    ]);
    // The owner's page shows it too.
    const agent = supertest.agent(h.app);
    const login = await agent.get('/login').set('Accept', 'text/html');
    const _csrf = /name="_csrf" value="([^"]+)"/.exec(login.text)![1]!;
    await agent.post('/login').type('form').send({ _csrf, username: ADMIN.username, password: ADMIN.password });
    const page = await agent.get(`/files/${fileId}`).set('Accept', 'text/html');
    expect(page.text).toContain('Emailed to: <span class="recipient" data-status="sent">ana@example.test (sent)</span>');
    expect(page.text).toContain('It never emails the password');
    // A bad address is refused and leaves nothing behind.
    const before = (await h.sql('SELECT id FROM shares')).length;
    const bad = await h.request.post(`/api/v1/files/${fileId}/shares`).set(bearer(token)).send({ recipients: ['not an address\r\nBcc: x@evil.test'] });
    expect(bad.status).toBe(400);
    expect((await h.sql('SELECT id FROM shares')).length).toBe(before);
  });

  it('a failing receiver is retried with backoff under the same event id until it answers 200', async () => {
    const receiver = await startReceiver((n) => (n < 2 ? 500 : 200));
    try {
      const h = await harness();
      const token = await setupAdmin(h);
      const hook = await h.request.put('/api/v1/me/webhook').set(bearer(token)).send({ url: receiver.url });
      const test = await h.request.post('/api/v1/me/webhook/test').set(bearer(token));
      expect(test.status).toBe(202);
      await h.app.services.notify.runOnce();
      // After the first failure: not given up, the next attempt is at least the base delay later.
      const [row] = await h.sql<{ attempts: number; last_error: string; next_attempt_at: number; last_attempt_at: number; status: string }>('SELECT * FROM notification_outbox');
      expect(row).toMatchObject({ attempts: 1, last_error: 'HTTP 500', status: 'pending' });
      expect(Number(row!.next_attempt_at) - Number(row!.last_attempt_at)).toBeGreaterThanOrEqual(40);
      // The second pause is twice the first (exponential backoff).
      await sleep(Math.max(0, Number(row!.next_attempt_at) - Date.now()) + 5);
      await h.app.services.notify.runOnce();
      const [second] = await h.sql<{ attempts: number; next_attempt_at: number; last_attempt_at: number }>('SELECT * FROM notification_outbox');
      expect(Number(second!.attempts)).toBe(2);
      expect(Number(second!.next_attempt_at) - Number(second!.last_attempt_at)).toBeGreaterThanOrEqual(80);
      await drain(h);
      expect(receiver.received).toHaveLength(3);
      const ids = receiver.received.map((r) => r.headers['sfs-event-id']);
      expect(new Set(ids)).toEqual(new Set([test.body.eventId]));
      for (const r of receiver.received) expect(verifySignature(hook.body.secret, r.headers['sfs-signature'] as string, r.body)).toBe(true);
      const log = await h.request.get('/api/v1/me/webhook').set(bearer(token));
      expect(log.body.deliveries[0]).toMatchObject({ eventId: test.body.eventId, type: 'webhook.test', status: 'sent', attempts: 3 });
    } finally {
      await receiver.close();
    }
  });

  it('a new sign-in from a new address and an admin change to the account notify the user; the admin stream gets every audit event', async () => {
    const receiver = await startReceiver();
    try {
      const h = await harness();
      const admin = await setupAdmin(h);
      const stream = await h.request.put('/api/v1/admin/webhook').set(bearer(admin)).send({ url: receiver.url });
      expect(stream.status).toBe(200);
      const bob = await makeUser(h, admin, 'bob');
      expect((await h.request.patch('/api/v1/me').set(bearer(bob)).send({ email: 'bob@example.test', notifications: { newSignIn: ['email'], accountChanged: ['email'] } })).status).toBe(200);
      // Same address again: nothing. A new one: one email naming it.
      await tokenFor(h, 'bob', 'bob password 123');
      const fresh = await h.request.post('/api/v1/auth/tokens').set('X-Forwarded-For', '203.0.113.9').send({ username: 'bob', password: 'bob password 123' });
      expect(fresh.status).toBe(201);
      const users = await h.request.get('/api/v1/users').set(bearer(admin));
      const bobId = users.body.users.find((u: { username: string }) => u.username === 'bob').id;
      expect((await h.request.patch(`/api/v1/users/${bobId}`).set(bearer(admin)).send({ quotaBytes: 5_000_000, password: 'a reset password 123' })).status).toBe(200);
      await drain(h);
      const subjects = smtp.mails.map((m) => m.headers.subject).sort();
      expect(subjects).toEqual(['An administrator changed your account', 'New sign-in to your account']);
      const signIn = smtp.mails.find((m) => m.headers.subject.startsWith('New sign-in'))!;
      expect(signIn.text).toContain('203.0.113.9');
      expect(signIn.text).toContain(`${BASE}/account`);
      const changed = smtp.mails.find((m) => m.headers.subject.startsWith('An administrator'))!;
      expect(changed.text).toContain('storage quota set to 5000000 bytes');
      expect(changed.text).toContain('password reset by an administrator');
      expect(everything(changed)).not.toContain('a reset password 123');
      // The admin-wide stream: one signed event per audit row, none carrying a secret.
      const actions = receiver.received.map((r) => {
        expect(verifySignature(stream.body.secret, r.headers['sfs-signature'] as string, r.body)).toBe(true);
        return JSON.parse(r.body).data.action as string;
      });
      expect(actions).toEqual(expect.arrayContaining(['user.create', 'auth.login', 'token.create', 'user.notifications', 'user.password_reset']));
      const all = receiver.received.map((r) => r.body).join('\n');
      expect(all).not.toContain('a reset password 123');
      expect(all).not.toContain(fresh.body.token);
    } finally {
      await receiver.close();
    }
  });
});

describe('upload requests', () => {
  it('files arriving through an upload request notify its owner by email and webhook, with names and counts only', async () => {
    const receiver = await startReceiver();
    try {
      const h = await harness();
      const token = await setupAdmin(h);
      await h.request.patch('/api/v1/me').set(bearer(token)).send({ email: 'owner@example.test', notifications: { requestUpload: ['email', 'webhook'] } });
      const hook = await h.request.put('/api/v1/me/webhook').set(bearer(token)).send({ url: receiver.url });
      const req = await h.request.post('/api/v1/requests').set(bearer(token)).send({ title: 'Tax documents 2025' });
      expect(req.status).toBe(201);
      const up = await h.request.post(`/r/${req.body.token}`).field('name', 'Ada Client').attach('file', Buffer.from('secret statement'), 'a.txt').attach('file', Buffer.from('more'), 'b.txt');
      expect(up.status).toBe(201);
      await drain(h);
      expect(smtp.mails).toHaveLength(1);
      const m = smtp.mails[0]!;
      expect(m.headers.subject).toBe('Files arrived through your upload request');
      expect(m.text).toContain('2 file(s) arrived through your upload request "Tax documents 2025"');
      expect(m.text).toContain(`${BASE}/requests/${req.body.id}`);
      expect(everything(m)).not.toContain(req.body.token);
      expect(everything(m)).not.toContain('secret statement');
      expect(receiver.received).toHaveLength(1);
      expect(verifySignature(hook.body.secret, receiver.received[0]!.headers['sfs-signature'] as string, receiver.received[0]!.body)).toBe(true);
      expect(JSON.parse(receiver.received[0]!.body)).toMatchObject({ type: 'request.upload', data: { requestId: req.body.id, requestName: 'Tax documents 2025', count: 2 } });
      expect(receiver.received[0]!.body).not.toContain(req.body.token);
    } finally {
      await receiver.close();
    }
  });
});

describe('changes made with the CLI', () => {
  it('sfs user disable tells the user and feeds the admin-wide stream, through the same outbox', async () => {
    const receiver = await startReceiver();
    try {
      const h = await harness();
      const admin = await setupAdmin(h);
      expect((await h.request.put('/api/v1/admin/webhook').set(bearer(admin)).send({ url: receiver.url })).status).toBe(200);
      const bob = await makeUser(h, admin, 'bob');
      await h.request.patch('/api/v1/me').set(bearer(bob)).send({ email: 'bob@example.test', notifications: { accountChanged: ['email'] } });
      // The S3 credentials of the test service come from this process' environment (scale run).
      const aws = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('AWS_'))) as Record<string, string>;
      const env = { ...aws, ...h.env, PATH: process.env.PATH ?? '', DATA_DIR: h.config.dataDir, UPLOADS_DIR: h.config.uploadsDir, MASTER_KEY: h.keyring.active.material.toString('base64'), LOG_LEVEL: 'silent' };
      const r = await runSfs(['user', 'disable', 'bob'], env);
      expect(r.code, r.stderr).toBe(0);
      await drain(h);
      expect(smtp.mails.map((m) => [m.to[0], m.headers.subject])).toEqual([['bob@example.test', 'An administrator changed your account']]);
      expect(smtp.mails[0]!.text).toContain('account disabled');
      const actions = receiver.received.map((x) => JSON.parse(x.body).data);
      expect(actions.some((a: { action: string; actor: string }) => a.action === 'user.disable' && a.actor === 'cli')).toBe(true);
    } finally {
      await receiver.close();
    }
  });
});

describe('link-expiry reminders', () => {
  it('a live link about to expire gets one reminder however often (and on however many instances) the scan runs', async () => {
    const h = await harness({ NOTIFY_EXPIRY_REMINDER_SECONDS: '3600' });
    const token = await setupAdmin(h);
    await h.request.patch('/api/v1/me').set(bearer(token)).send({ email: 'owner@example.test', notifications: { expiringSoon: ['email'] } });
    const fileId = await upload(h, token, 'soon.txt');
    const soon = await h.request.post(`/api/v1/files/${fileId}/shares`).set(bearer(token)).send({ expiresInSeconds: 600 });
    await h.request.post(`/api/v1/files/${fileId}/shares`).set(bearer(token)).send({ expiresInSeconds: 7200 });
    const revoked = await h.request.post(`/api/v1/files/${fileId}/shares`).set(bearer(token)).send({ expiresInSeconds: 600 });
    await h.request.delete(`/api/v1/shares/${revoked.body.id}`).set(bearer(token));
    const other = await harness({ NOTIFY_EXPIRY_REMINDER_SECONDS: '3600' }, { dir: h.dir, masterKey: h.keyring.active.material, setupCode: 'another-instance-code-1234' });
    await Promise.all([h.app.services.notify.remindExpiring(), other.app.services.notify.remindExpiring()]);
    await h.app.services.notify.remindExpiring();
    await drain(h);
    expect(smtp.mails).toHaveLength(1);
    expect(smtp.mails[0]!.headers.subject).toBe('A link to "soon.txt" expires soon');
    expect(smtp.mails[0]!.text).toContain(new Date(Date.parse(soon.body.expiresAt)).toISOString().slice(0, 16).replace('T', ' '));
    expect(everything(smtp.mails[0]!)).not.toContain(soon.body.token);
  });
});

describe('file-expiry reminders', () => {
  it('a file whose retention ends soon and that has a live link gets one reminder; one without live links gets none', async () => {
    const h = await harness({ NOTIFY_EXPIRY_REMINDER_SECONDS: '3600' });
    const token = await setupAdmin(h);
    await h.request.patch('/api/v1/me').set(bearer(token)).send({ email: 'owner@example.test', notifications: { expiringSoon: ['email'] } });
    const linked = await h.request.put('/api/v1/uploads/linked.txt?expiresInSeconds=1800').set(bearer(token)).send(Buffer.from('a'));
    const alone = await h.request.put('/api/v1/uploads/alone.txt?expiresInSeconds=1800').set(bearer(token)).send(Buffer.from('b'));
    expect([linked.status, alone.status]).toEqual([201, 201]);
    // A link that outlives the reminder window, so only the file's own expiry is due.
    await h.request.post(`/api/v1/files/${linked.body.file.id}/shares`).set(bearer(token)).send({ expiresInSeconds: 86400 });
    await h.app.services.notify.remindExpiring();
    await h.app.services.notify.remindExpiring();
    await drain(h);
    expect(smtp.mails.map((m) => m.headers.subject)).toEqual(['"linked.txt" expires soon']);
    expect(smtp.mails[0]!.text).toContain(`${BASE}/files/${linked.body.file.id}`);
  });
});

describe('the webhook address guard', () => {
  it.each([
    ['http://10.1.2.3/hook', 'plain http off loopback'],
    ['https://10.1.2.3/hook', 'private 10/8'],
    ['https://192.168.0.5/hook', 'private 192.168/16'],
    ['https://172.16.9.9/hook', 'private 172.16/12'],
    ['https://169.254.169.254/latest/meta-data', 'link-local (cloud metadata)'],
    ['https://[::1]/hook', 'IPv6 loopback'],
    ['https://[fe80::1]/hook', 'IPv6 link-local'],
    ['https://[fd00::5]/hook', 'IPv6 unique local'],
    ['https://[::ffff:127.0.0.1]/hook', 'IPv4-mapped loopback'],
    ['https://127.0.0.1/hook', 'IPv4 loopback'],
    ['http://localhost:9/hook', 'a name resolving to 127.0.0.1'],
    ['https://user:pw@example.test/hook', 'credentials in the URL'],
    ['ftp://example.test/hook', 'not http(s)'],
  ])('refuses %s (%s) unless private targets are allowed', async (url) => {
    const h = await harness({ WEBHOOK_ALLOW_PRIVATE: '0' });
    const token = await setupAdmin(h);
    const r = await h.request.put('/api/v1/me/webhook').set(bearer(token)).send({ url });
    expect(r.status).toBe(422);
    expect(r.body.code).toBe('webhook_url_refused');
    // Nothing stored.
    expect((await h.sql('SELECT id FROM webhooks')).length).toBe(0);
  });

  it('checks again at connection time: a webhook set while allowed is not posted to once private targets are refused', async () => {
    const receiver = await startReceiver();
    try {
      const allowed = await harness({ WEBHOOK_ALLOW_PRIVATE: '1' });
      const token = await setupAdmin(allowed);
      const strict = await harness({ WEBHOOK_ALLOW_PRIVATE: '0' }, { dir: allowed.dir, masterKey: allowed.keyring.active.material, setupCode: 'another-instance-code-1234' });
      // A name (resolved at connect time by the guarded lookup) and an IP literal.
      for (const url of [`http://localhost:${receiver.port}/hook`, receiver.url]) {
        expect((await allowed.request.put('/api/v1/me/webhook').set(bearer(token)).send({ url })).status).toBe(200);
        expect((await allowed.request.post('/api/v1/me/webhook/test').set(bearer(token))).status).toBe(202);
        await drain(strict);
      }
      expect(receiver.received).toHaveLength(0);
      const rows = await strict.sql<{ status: string; last_error: string }>('SELECT status, last_error FROM notification_outbox');
      expect(rows).toEqual([
        { status: 'failed', last_error: 'address refused (private)' },
        { status: 'failed', last_error: 'address refused (private)' },
      ]);
    } finally {
      await receiver.close();
    }
  });
});

describe('settings and instances', () => {
  it('PATCH /me and the account page set the address and choices; bad input changes nothing', async () => {
    const receiver = await startReceiver();
    try {
      const h = await harness();
      const token = await setupAdmin(h);
      for (const body of [
        { notifications: { newSignIn: ['email'] } }, // email without an address
        { notifications: { newSignIn: ['sms'] } },
        { notifications: { somethingElse: ['email'] } },
        { email: 'not an address' },
        { email: 'a@example.test\r\nBcc: x@evil.test' },
        { currentPassword: ADMIN.password },
      ]) {
        const r = await h.request.patch('/api/v1/me').set(bearer(token)).send(body);
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(r.body.code).toBe('validation_error');
      }
      expect((await h.request.get('/api/v1/me').set(bearer(token))).body).toMatchObject({ email: null, notifications: { newSignIn: [] } });

      const agent = supertest.agent(h.app);
      const login = await agent.get('/login').set('Accept', 'text/html');
      let _csrf = /name="_csrf" value="([^"]+)"/.exec(login.text)![1]!;
      await agent.post('/login').type('form').send({ _csrf, username: ADMIN.username, password: ADMIN.password });
      const page = await agent.get('/account').set('Accept', 'text/html');
      expect(page.text).toContain('Save notification settings');
      expect(page.text).toContain('Admin-wide webhook');
      _csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
      const saved = await agent.post('/account/notifications').type('form').send({ _csrf, email: 'page@example.test', 'shareDownloaded.email': 'on', 'accountChanged.webhook': 'on' });
      expect(saved.status).toBe(303);
      const me = await h.request.get('/api/v1/me').set(bearer(token));
      expect(me.body.email).toBe('page@example.test');
      expect(me.body.notifications).toMatchObject({ shareDownloaded: ['email'], accountChanged: ['webhook'], newSignIn: [] });

      // The page's webhook form shows the secret once; the test button queues an event that the log shows.
      const set = await agent.post('/account/webhook').type('form').send({ _csrf, url: receiver.url });
      expect(set.headers.location).toBe('/account/webhook/new');
      const shown = await agent.get('/account/webhook/new').set('Accept', 'text/html');
      const secret = /value="(whsec_[A-Za-z0-9_-]{43})"/.exec(shown.text)![1]!;
      expect((await agent.get('/account/webhook/new').set('Accept', 'text/html')).text).not.toContain(secret);
      await agent.post('/account/webhook/test').type('form').send({ _csrf });
      await drain(h);
      expect(verifySignature(secret, receiver.received[0]!.headers['sfs-signature'] as string, receiver.received[0]!.body)).toBe(true);
      const after = await agent.get('/account').set('Accept', 'text/html');
      expect(after.text).toMatch(/<code>webhook\.test<\/code>[\s\S]*?<span class="badge">sent<\/span>/);
      const refused = await agent.post('/account/webhook').type('form').send({ _csrf, url: 'ftp://example.test/' });
      expect(refused.status).toBe(400);
      expect(refused.text).toContain('must be https://');
    } finally {
      await receiver.close();
    }
  });

  it('two instances on one database deliver each event exactly once', async () => {
    const receiver = await startReceiver(async () => {
      await sleep(5);
      return 200;
    });
    try {
      const a = await harness();
      const token = await setupAdmin(a);
      expect((await a.request.put('/api/v1/me/webhook').set(bearer(token)).send({ url: receiver.url })).status).toBe(200);
      const b = await harness({}, { dir: a.dir, masterKey: a.keyring.active.material, setupCode: 'another-instance-code-1234' });
      const ids: string[] = [];
      for (let i = 0; i < 30; i++) ids.push((await (i % 2 ? b : a).request.post('/api/v1/me/webhook/test').set(bearer(token))).body.eventId);
      await drain(a, b);
      const seen = receiver.received.map((r) => r.headers['sfs-event-id'] as string);
      expect(seen.sort()).toEqual([...ids].sort());
    } finally {
      await receiver.close();
    }
  });
});
