/**
 * A full session at the most verbose log level: no master key, DEK, API token, share token,
 * ticket, password or setup code may appear in any log line, response body or audit row.
 */
import { randomBytes } from 'node:crypto';
import supertest from 'supertest';
import { describe, expect, it } from 'vitest';
import { unwrapDek } from '../src/crypto/envelope.js';
import { chunkOffset } from '../src/crypto/format.js';
import { ADMIN, SETUP_CODE, binaryParser, makeHarness, pattern } from './helpers.js';
import fs from 'node:fs';

describe('secrets stay secret', () => {
  it('nothing secret in logs, error bodies or audit rows after a full session', async () => {
    const masterKey = randomBytes(32);
    const h = await makeHarness({ LOG_LEVEL: 'trace', LOGIN_RATE_LIMIT: '3' }, { masterKey });
    const bodies: string[] = [];
    const keep = <T extends { text?: string; body?: unknown }>(r: T): T => {
      bodies.push(typeof r.text === 'string' ? r.text : JSON.stringify(r.body ?? ''));
      return r;
    };
    const secrets: string[] = [SETUP_CODE, ADMIN.password];
    try {
      keep(await h.request.post('/api/v1/setup').send({ setupCode: 'wrong', ...ADMIN }));
      keep(await h.request.post('/api/v1/setup').send({ setupCode: SETUP_CODE, ...ADMIN }));
      const tokenRes = await h.request.post('/api/v1/auth/tokens').send({ ...ADMIN, name: 'main' });
      const token = tokenRes.body.token as string;
      secrets.push(token);
      const auth = { Authorization: `Bearer ${token}` };
      for (let i = 0; i < 4; i++) keep(await h.request.post('/api/v1/auth/tokens').send({ username: 'admin', password: `bad guess ${i}!` }));
      secrets.push('bad guess 1!');
      keep(await h.request.post('/api/v1/users').set(auth).send({ username: 'ivy', password: 'ivy secret pw 1' }));
      secrets.push('ivy secret pw 1');
      keep(await h.request.patch('/api/v1/me').set(auth).send({ currentPassword: 'nope nope nope', newPassword: 'next secret pw 2' }));
      secrets.push('next secret pw 2');

      const up = await h.request.post('/api/v1/files').set(auth).attach('file', pattern(200_000, 1), 'a.bin');
      const fileId = up.body.files[0].id as string;
      keep(await h.request.put('/api/v1/uploads/b.txt').set(auth).set('Content-Digest', `sha-256=:${randomBytes(32).toString('base64')}:`).send('x'));
      await h.request.get(`/api/v1/files/${fileId}/content`).set(auth).set('Range', 'bytes=10-99');
      keep(await h.request.get(`/api/v1/files/${fileId}/content`).set(auth).set('Range', 'bytes=999999-'));

      const share = await h.request.post(`/api/v1/files/${fileId}/shares`).set(auth).send({ password: 'share secret pw 3', maxDownloads: 5 });
      secrets.push('share secret pw 3');
      keep(await h.request.get(`/s/${share.body.token}/content`).set('Authorization', `Basic ${Buffer.from(':wrong share pw').toString('base64')}`));
      secrets.push('wrong share pw');
      await h.request.get(`/s/${share.body.token}/content`).set('Authorization', `Basic ${Buffer.from(':share secret pw 3').toString('base64')}`).buffer(true).parse(binaryParser);
      const agent = supertest.agent(h.app);
      const page = await agent.get(`/s/${share.body.token}`);
      const csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
      // The CSRF token belongs in the page's form; it must still never reach logs or audit rows.
      // So does the link token in the recipient's own page (the form posts back to the link).
      const logOnly = [csrf, share.body.token as string];
      keep(await agent.post(`/s/${share.body.token}`).type('form').send({ _csrf: csrf, password: 'another wrong pw' }));
      const ok = await agent.post(`/s/${share.body.token}`).type('form').send({ _csrf: csrf, password: 'share secret pw 3' });
      // The details page carries the ticket in its Download link.
      const href = /href="(\/s\/[^"]+\/content\?ticket=[^"]+)"/.exec(ok.text)![1]!;
      const ticket = decodeURIComponent(href.split('ticket=')[1]!);
      secrets.push(ticket.split('.')[1]!, ticket.split('.')[2]!);
      await agent.get(href).buffer(true).parse(binaryParser);
      keep(await h.request.get(`/s/${'A'.repeat(43)}/content`));

      // An integrity failure, which logs an error with a stack trace.
      const p = h.store.pathOf(fileId);
      const buf = fs.readFileSync(p);
      buf[chunkOffset(0, 65536) + 3]! ^= 1;
      fs.writeFileSync(p, buf);
      keep(await h.request.get(`/api/v1/files/${fileId}/content`).set(auth));

      // The DEKs themselves, recovered with the key (as only the server can).
      const rows = h.db.prepare('SELECT id, owner_id, wrap_version, key_id, wrapped_dek, size, sha256, format_version, chunk_size FROM files').all() as {
        id: string;
        owner_id: string;
        wrap_version: 1 | 2;
        key_id: string;
        wrapped_dek: Buffer;
        size: number;
        sha256: Buffer;
        format_version: number;
        chunk_size: number;
      }[];
      const deks = rows.map((r) =>
        unwrapDek(h.keyring.get(r.key_id)!, r.wrapped_dek, {
          wrapVersion: r.wrap_version,
          fileId: r.id,
          ownerId: r.owner_id,
          size: r.size,
          sha256: r.sha256,
          formatVersion: r.format_version,
          chunkSize: r.chunk_size,
        }),
      );
      expect(deks.length).toBeGreaterThan(0);

      const forms = (b: Buffer) => [b.toString('hex'), b.toString('base64'), b.toString('base64url')];
      const needles = [...secrets, ...forms(masterKey), ...deks.flatMap(forms), ...forms(h.keyring.active.kek)];
      const audit = JSON.stringify(h.db.prepare('SELECT * FROM audit_events').all());
      const logs = h.logLines.join('\n');
      expect(logs.length).toBeGreaterThan(10_000); // trace logging really was on
      expect(logs).toMatch(/"level":10|"level":20/);
      for (const needle of needles) {
        expect(logs.includes(needle), `log contains ${needle.slice(0, 6)}…`).toBe(false);
        expect(audit.includes(needle), `audit contains ${needle.slice(0, 6)}…`).toBe(false);
        for (const b of bodies) expect(b.includes(needle), `a response contains ${needle.slice(0, 6)}…`).toBe(false);
      }
      for (const needle of logOnly) {
        expect(logs.includes(needle)).toBe(false);
        expect(audit.includes(needle)).toBe(false);
      }
      // Error bodies carry no internals either.
      for (const b of bodies) expect(b).not.toMatch(/\n\s+at |node_modules|\/src\//);
    } finally {
      h.cleanup();
    }
  });
});
