/**
 * The outbox survives a crash (issue 17): a server process is SIGKILLed after an event was
 * committed and before it was delivered (once before any worker claimed it, once while the
 * webhook request was in flight), restarted on the same data, and the event still arrives,
 * with the same idempotency key.
 */
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { childAdminToken, childEnv, jsonRequest, startChild, tempDir, type Child } from './child.js';
import { startReceiver, verifySignature } from './notify-helpers.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const waitFor = async (cond: () => boolean, what: string) => {
  for (let i = 0; i < 400; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
};

describe('notifications across a SIGKILL', () => {
  it('an event committed before the crash is delivered after the restart, under the same event id', async () => {
    let killOnFirst: Child | null = null;
    const receiver = await startReceiver((n) => {
      // Scenario 2: the first attempt of the second event hangs, and the server dies meanwhile.
      if (n === 1 && killOnFirst) {
        killOnFirst.proc.kill('SIGKILL');
        return 'hang';
      }
      return 200;
    });
    const dir = tempDir();
    dirs.push(dir);
    const base = { WEBHOOK_ALLOW_PRIVATE: '1', NOTIFY_LEASE_SECONDS: '2', NOTIFY_TIMEOUT_SECONDS: '1' };
    try {
      // Scenario 1: the worker has made its first pass and waits ten minutes; the event is
      // committed, the process is killed before any worker claims it.
      let child = await startChild(childEnv(dir, { ...base, NOTIFY_POLL_MS: '600000' }));
      const token = await childAdminToken(child);
      const auth = { Authorization: `Bearer ${token}` };
      const hook = await jsonRequest(child.port, 'PUT', '/api/v1/me/webhook', { url: receiver.url }, auth);
      expect(hook.status).toBe(200);
      const first = await jsonRequest(child.port, 'POST', '/api/v1/me/webhook/test', undefined, auth);
      expect(first.status).toBe(202);
      await child.stop('SIGKILL');
      expect(receiver.received).toHaveLength(0);

      child = await startChild(childEnv(dir, { ...base, NOTIFY_POLL_MS: '50' }));
      await waitFor(() => receiver.received.length === 1, 'the first event after the restart');
      expect(receiver.received[0]!.headers['sfs-event-id']).toBe(first.body.eventId);

      // Scenario 2: killed while the delivery is in flight (claimed, not recorded).
      killOnFirst = child;
      const second = await jsonRequest(child.port, 'POST', '/api/v1/me/webhook/test', undefined, auth);
      expect(second.status).toBe(202);
      await waitFor(() => child.proc.signalCode === 'SIGKILL', 'the kill');
      killOnFirst = null;
      child = await startChild(childEnv(dir, { ...base, NOTIFY_POLL_MS: '50' }));
      // The dead process's lease runs out (2 s) and the new one delivers it again.
      await waitFor(() => receiver.received.length === 3, 'the redelivery');
      const ids = receiver.received.map((r) => r.headers['sfs-event-id']);
      expect(ids).toEqual([first.body.eventId, second.body.eventId, second.body.eventId]);
      for (const r of receiver.received) expect(verifySignature(hook.body.secret, r.headers['sfs-signature'] as string, r.body)).toBe(true);
      const log = await jsonRequest(child.port, 'GET', '/api/v1/me/webhook', undefined, auth);
      expect(log.body.deliveries.map((d: { status: string }) => d.status)).toEqual(['sent', 'sent']);
      await child.stop();
    } finally {
      await receiver.close();
    }
  });
});
