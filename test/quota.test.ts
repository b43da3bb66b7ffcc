/** Storage quotas: enforced while streaming, counting bytes in flight, with nothing left behind. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { makeHarness, makeUser, pattern, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
afterEach(() => h?.cleanup());
const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });
const state = async () => ({
  rows: (await h.sql<{ n: number }>('SELECT count(*) AS n FROM files'))[0]!.n,
  blobs: (await h.storedBlobs()).length,
});

describe('quotas', () => {
  it('an upload that would exceed the quota is stopped with 413 quota_exceeded and leaves nothing', async () => {
    h = await makeHarness({ USER_QUOTA_BYTES: '1MiB' });
    const t = await setupAdmin(h);
    const first = await h.request.post('/api/v1/files').set(bearer(t)).attach('file', pattern(600_000, 1), 'a.bin');
    expect(first.status).toBe(201);
    const before = await state();
    const second = await h.request.post('/api/v1/files').set(bearer(t)).attach('file', pattern(600_000, 2), 'b.bin');
    expect(second.status).toBe(413);
    expect(second.body.code).toBe('quota_exceeded');
    expect(await state()).toEqual(before);
    const put = await h.request.put('/api/v1/uploads/c.bin').set(bearer(t)).send(pattern(600_000, 3));
    expect(put.status).toBe(413);
    expect(put.body.code).toBe('quota_exceeded');
    expect(await state()).toEqual(before);
    const me = await h.request.get('/api/v1/me').set(bearer(t));
    expect(me.body).toMatchObject({ usageBytes: 600_000, quotaBytes: 1024 * 1024 });
    // Deleting frees the space again.
    expect((await h.request.delete(`/api/v1/files/${first.body.files[0].id}`).set(bearer(t))).status).toBe(204);
    expect((await h.request.put('/api/v1/uploads/c.bin').set(bearer(t)).send(pattern(600_000, 3))).status).toBe(201);
  });

  it('parallel uploads cannot together overshoot: bytes in flight count', async () => {
    h = await makeHarness({ USER_QUOTA_BYTES: '1MiB' });
    const t = await setupAdmin(h);
    const server = http.createServer(h.app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    try {
      // Upload A streams 700 000 bytes and pauses before its last byte.
      let finishA: () => void = () => {};
      const a = new Promise<number>((resolve) => {
        const req = http.request({ port, host: '127.0.0.1', method: 'PUT', path: '/api/v1/uploads/a.bin', headers: { ...bearer(t), 'Content-Length': '700001' } }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.write(pattern(700_000, 4));
        finishA = () => req.end(Buffer.from('!'));
      });
      await new Promise((r) => setTimeout(r, 200));
      // Upload B would fit on its own, but not with A in flight.
      const b = await new Promise<{ status: number; body: string }>((resolve) => {
        const req = http.request({ port, host: '127.0.0.1', method: 'PUT', path: '/api/v1/uploads/b.bin', headers: bearer(t) }, (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        });
        req.on('error', () => {});
        req.end(pattern(600_000, 5));
      });
      expect(b.status).toBe(413);
      expect(JSON.parse(b.body).code).toBe('quota_exceeded');
      finishA();
      expect(await a).toBe(201);
      expect((await state()).rows).toBe(1);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('an admin override per user wins over the default, and null restores the default', async () => {
    h = await makeHarness({ USER_QUOTA_BYTES: '100KiB' });
    const admin = await setupAdmin(h);
    const u = await makeUser(h, admin, 'frank');
    const frank = (await h.request.get('/api/v1/me').set(bearer(u))).body;
    expect(frank.quotaBytes).toBe(102400);
    expect((await h.request.put('/api/v1/uploads/x.bin').set(bearer(u)).send(pattern(200_000, 6))).status).toBe(413);
    const patched = await h.request.patch(`/api/v1/users/${frank.id}`).set(bearer(admin)).send({ quotaBytes: 1_000_000 });
    expect(patched.body.quotaBytes).toBe(1_000_000);
    expect((await h.request.put('/api/v1/uploads/x.bin').set(bearer(u)).send(pattern(200_000, 6))).status).toBe(201);
    await h.request.patch(`/api/v1/users/${frank.id}`).set(bearer(admin)).send({ quotaBytes: null });
    expect((await h.request.get('/api/v1/me').set(bearer(u))).body.quotaBytes).toBe(102400);
  });

  it('unlimited by default', async () => {
    h = await makeHarness();
    const t = await setupAdmin(h);
    expect((await h.request.get('/api/v1/me').set(bearer(t))).body.quotaBytes).toBeNull();
  });
});
