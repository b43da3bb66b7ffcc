/**
 * Hostile input, one table per surface. Every row checks the status, the problem+json code,
 * and that nothing new exists under uploads/ or in the database (except the rows that are
 * supposed to store a file: hostile names are cleaned, not refused).
 */
import { parse as parseDisposition } from 'content-disposition';
import net from 'node:net';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binaryParser, makeHarness, pattern, serve, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
let token: string;
let port: number;
let served: Awaited<ReturnType<typeof serve>>;
const auth = () => ({ Authorization: `Bearer ${token}` });

beforeAll(async () => {
  h = await makeHarness({ MAX_FILE_SIZE: '256KiB', MAX_FILES_PER_REQUEST: '5' });
  token = await setupAdmin(h);
  served = await serve(h.app);
  port = served.port;
});
afterAll(async () => {
  await served.close();
  h.cleanup();
});

const state = async () => ({
  rows: (await h.sql<{ n: number }>('SELECT count(*) AS n FROM files'))[0]!.n,
  blobs: (await h.storedBlobs()).length,
});

/** Sends raw bytes on a socket (optionally half-closing) and returns what came back. */
function raw(payload: Buffer | string, opts: { halfClose?: boolean; waitMs?: number } = {}): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let response = '';
    const done = () => resolve(response);
    sock.on('data', (d) => (response += d));
    sock.on('close', done);
    sock.on('error', done);
    sock.write(payload);
    if (opts.halfClose) sock.end();
    setTimeout(() => sock.destroy(), opts.waitMs ?? 3000);
  });
}

const B = 'XyZbOuNdArY';
const part = (name: string, filename: string | null, body: string) =>
  `--${B}\r\nContent-Disposition: form-data; name="${name}"${filename === null ? '' : `; filename="${filename}"`}\r\nContent-Type: application/octet-stream\r\n\r\n${body}\r\n`;
const multipartRequest = (body: string, extraHeaders = '') =>
  `POST /api/v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: multipart/form-data; boundary=${B}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extraHeaders}Connection: close\r\n\r\n${body}`;

describe('hostile uploads are refused and leave nothing', () => {
  const rows: [string, () => Promise<{ status: number; code?: string }>, number, string][] = [
    ['no file part', async () => pick(await h.request.post('/api/v1/files').set(auth()).field('note', 'x')), 400, 'validation_error'],
    ['an empty field name', async () => pick(await h.request.post('/api/v1/files').set(auth()).attach('', Buffer.from('x'), 'a.txt')), 400, 'validation_error'],
    [
      'two hundred file parts',
      async () => {
        let req = h.request.post('/api/v1/files').set(auth());
        for (let i = 0; i < 200; i++) req = req.attach('file', Buffer.from(`p${i}`), `p${i}.txt`);
        return pick(await req.ok(() => true).catch((e) => e.response ?? { status: 0, body: {} }));
      },
      413,
      'too_many_files',
    ],
    ['a file over the limit', async () => pick(await h.request.post('/api/v1/files').set(auth()).attach('file', pattern(300 * 1024, 1), 'big.bin')), 413, 'file_too_large'],
    ['a body that ends mid-part', async () => parseRaw(await raw(multipartRequest(`--${B}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhalf a fi`))), 400, 'bad_request'],
    ['a boundary that never closes', async () => parseRaw(await raw(multipartRequest(part('file', 'a.txt', 'content') + 'trailing junk'))), 400, 'bad_request'],
    ['a wrong Content-Type', async () => pick(await h.request.post('/api/v1/files').set(auth()).set('Content-Type', 'text/plain').send('file=hello')), 415, 'unsupported_media_type'],
    [
      'a Content-Length shorter than the body',
      async () => {
        const body = part('file', 'a.txt', 'x'.repeat(1000)) + `--${B}--\r\n`;
        const req = `POST /api/v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: multipart/form-data; boundary=${B}\r\nContent-Length: 100\r\nConnection: close\r\n\r\n${body}`;
        return parseRaw(await raw(req));
      },
      400,
      'bad_request',
    ],
    [
      'a Content-Length longer than the body (client then closes its side)',
      async () => {
        const body = part('file', 'a.txt', 'x'.repeat(1000)) + `--${B}--\r\n`;
        const req = `POST /api/v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: multipart/form-data; boundary=${B}\r\nContent-Length: 99999\r\n\r\n${body}`;
        const r = await raw(req, { halfClose: true });
        // The server may answer 400 or just close; it must never store the file.
        return r ? parseRaw(r) : { status: 400, code: 'bad_request' };
      },
      400,
      'bad_request',
    ],
    ['a PUT with a traversal name over the limit', async () => pick(await h.request.put('/api/v1/uploads/..%2F..%2Fbig').set(auth()).send(pattern(300 * 1024, 2))), 413, 'file_too_large'],
  ];

  it.each(rows)('%s', async (_name, send, status, code) => {
    // Let the previous row's aborted upload finish removing its temp file first.
    for (let i = 0; i < 40 && (await h.storedBlobs()).some((f) => f.endsWith('.tmp') || f.startsWith('upload:')); i++) await new Promise((res) => setTimeout(res, 50));
    const before = await state();
    const r = await send();
    expect(r.status).toBe(status);
    expect(r.code).toBe(code);
    // Refused uploads are cleaned up before the answer, but give an aborted stream a moment.
    for (let i = 0; i < 100 && JSON.stringify(await state()) !== JSON.stringify(before); i++) await new Promise((res) => setTimeout(res, 50));
    expect(await state()).toEqual(before);
  });
});

function pick(r: { status: number; body: { code?: string } }) {
  return { status: r.status, code: r.body?.code };
}

function parseRaw(response: string): { status: number; code?: string } {
  const m = /^HTTP\/1\.1 (\d{3})/.exec(response);
  const json = /\{.*\}/s.exec(response);
  let code: string | undefined;
  try {
    code = json ? JSON.parse(json[0]).code : undefined;
  } catch {
    code = undefined;
  }
  return { status: m ? Number(m[1]) : 0, code };
}

describe('hostile file names are cleaned and the file stored', () => {
  const names: [string, string][] = [
    ['../../etc/passwd', 'passwd'],
    ['/absolute/path/report.pdf', 'report.pdf'],
    ['C:\\Users\\x\\evil.exe', 'evil.exe'],
    ['nul\u0000byte.txt', 'nulbyte.txt'],
    ['line%0D%0Abreak.txt', 'linebreak.txt'],
    ['invoice\u202Efdp.exe', 'invoicefdp.exe'],
    ['bell\u0007tab\u0009esc\u001b.txt', 'belltabesc.txt'],
    ['del\u007f and c1\u0085.txt', 'del and c1.txt'],
    ['a'.repeat(5000) + '.pdf', 'a'.repeat(251) + '.pdf'],
    ['....', 'file'],
    ['CON', '_CON'],
    ['aux.txt', '_aux.txt'],
    ['report.pdf. . ', 'report.pdf'],
    ['bad\uFFFDutf8.txt', 'badutf8.txt'],
    ['a.txt"; filename*=UTF-8\'\'evil.exe', 'a.txt"; filename*=UTF-8\'\'evil.exe'],
  ];
  it.each(names)('%j', async (rawName, clean) => {
    // Raw control characters cannot travel in a multipart header: send those in the PUT path.
    const viaPut = /[\u0000-\u001f\u007f-\u009f]/.test(rawName) || rawName.includes('%0D');
    const content = Buffer.from(`content of ${clean.slice(0, 20)}`);
    const r = viaPut
      ? await h.request.put(`/api/v1/uploads/${encodeURIComponent(rawName).replace('%250D%250A', '%0D%0A')}`).set(auth()).send(content)
      : await h.request.post('/api/v1/files').set(auth()).attach('file', content, rawName);
    expect(r.status).toBe(201);
    const file = viaPut ? r.body.file : r.body.files[0];
    expect(file.name).toBe(clean);
    const d = await h.request.get(`/api/v1/files/${file.id}/content`).set(auth()).buffer(true).parse(binaryParser);
    expect((d.body as Buffer).equals(content)).toBe(true);
    // The header parses back to exactly the stored name: no injected parameter survives.
    const cd = parseDisposition(d.headers['content-disposition'] as string);
    expect(cd.type).toBe('attachment');
    expect(cd.parameters.filename).toBe(clean);
  });

  it('a zero-byte file is accepted and round-trips', async () => {
    const r = await h.request.post('/api/v1/files').set(auth()).attach('file', Buffer.alloc(0), 'empty.txt');
    expect(r.status).toBe(201);
    expect(r.body.files[0]).toMatchObject({ size: 0, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' });
    const d = await h.request.get(`/api/v1/files/${r.body.files[0].id}/content`).set(auth()).buffer(true).parse(binaryParser);
    expect(d.status).toBe(200);
    expect((d.body as Buffer).length).toBe(0);
  });
});

describe('hostile API requests', () => {
  let fileId: string;
  beforeAll(async () => {
    fileId = (await h.request.put('/api/v1/uploads/r.bin').set(auth()).send(pattern(100_000, 3))).body.file.id;
  });

  const cases: [string, () => Promise<{ status: number; body: { code?: string } }>, number, string | null][] = [
    ['malformed JSON', () => h.request.post('/api/v1/auth/tokens').set('Content-Type', 'application/json').send('{"a":'), 400, 'invalid_json'],
    ['wrong types', () => h.request.post('/api/v1/auth/tokens').send({ username: ['x'], password: 5 }), 400, 'validation_error'],
    ['huge JSON', () => h.request.post('/api/v1/auth/tokens').send({ username: 'x', password: 'y'.repeat(500_000) }), 413, 'payload_too_large'],
    ['deeply nested JSON', () => h.request.post(`/api/v1/files/${fileId}/shares`).set(auth()).send(JSON.parse('['.repeat(2000) + ']'.repeat(2000))), 400, 'validation_error'],
    ['an id that is not an id', () => h.request.get('/api/v1/files/not-an-id').set(auth()), 404, 'not_found'],
    ['traversal in :id', () => h.request.get('/api/v1/files/..%2F..%2Fdata%2Fsfs.db/content').set(auth()), 404, 'not_found'],
    ['traversal in a share id', () => h.request.delete('/api/v1/shares/..%2F..%2Fx').set(auth()), 404, 'not_found'],
    ['a malformed cursor', () => h.request.get('/api/v1/files?cursor=%00%01').set(auth()), 400, 'validation_error'],
    ['a negative limit', () => h.request.get('/api/v1/files?limit=-1').set(auth()), 400, 'validation_error'],
    ['Authorization malformed', () => h.request.get('/api/v1/me').set('Authorization', 'Bearer a b c'), 401, 'unauthorized'],
    ['Authorization 8 KiB long', () => h.request.get('/api/v1/me').set('Authorization', 'Bearer ' + 'a'.repeat(8000)), 401, 'unauthorized'],
    ['a token with a bad prefix', () => h.request.get('/api/v1/me').set('Authorization', 'Bearer xyz_' + 'a'.repeat(43)), 401, 'unauthorized'],
  ];
  it.each(cases)('%s', async (_name, send, status, code) => {
    const before = await state();
    const r = await send();
    expect(r.status).toBe(status);
    if (code) expect(r.body.code).toBe(code);
    expect(await state()).toEqual(before);
  });

  const ranges: [string, string, number][] = [
    ['malformed', 'bytes=abc-def', 200],
    ['reversed', 'bytes=500-100', 200],
    ['beyond the end', 'bytes=200000-300000', 416],
    ['negative start', 'bytes=-5-10', 200],
    ['hundreds of ranges', 'bytes=' + Array.from({ length: 300 }, (_, i) => `${i * 10}-${i * 10 + 5}`).join(','), 200],
    ['huge numbers', 'bytes=99999999999999999999-', 416],
    ['unit other than bytes', 'pages=1-2', 200],
  ];
  it.each(ranges)('Range %s', async (_name, range, status) => {
    const r = await h.request.get(`/api/v1/files/${fileId}/content`).set(auth()).set('Range', range).buffer(true).parse(binaryParser);
    expect(r.status).toBe(status);
    if (status === 200) expect((r.body as Buffer).length).toBe(100_000);
    if (status === 416) expect(r.headers['content-range']).toBe('bytes */100000');
  });

  it('tokens of disabled users and expired tokens are refused', async () => {
    await h.request.post('/api/v1/users').set(auth()).send({ username: 'henry', password: 'henry password 1' });
    const t = (await h.request.post('/api/v1/auth/tokens').send({ username: 'henry', password: 'henry password 1' })).body.token;
    const id = (await h.sql<{ id: string }>("SELECT id FROM users WHERE username = 'henry'"))[0]!.id;
    expect((await h.request.get('/api/v1/me').set('Authorization', `Bearer ${t}`)).status).toBe(200);
    await h.sql('UPDATE api_tokens SET expires_at = 1 WHERE user_id = ?', [id]);
    expect((await h.request.get('/api/v1/me').set('Authorization', `Bearer ${t}`)).status).toBe(401);
    await h.sql('UPDATE api_tokens SET expires_at = ? WHERE user_id = ?', [Date.now() + 60_000, id]);
    await h.request.patch(`/api/v1/users/${id}`).set(auth()).send({ disabled: true });
    const r = await h.request.get('/api/v1/me').set('Authorization', `Bearer ${t}`);
    expect(r.status).toBe(401);
    expect(r.body.code).toBe('unauthorized');
  });

  it('a forged Host or X-Forwarded-Host is not reflected into links unless trusted', async () => {
    const r = await h.request.post(`/api/v1/files/${fileId}/shares`).set(auth()).set('Host', 'evil.example"><script>').send({});
    expect(r.status).toBe(201);
    expect(r.body.url).toMatch(/^http:\/\/localhost\/s\//);
    const xf = await h.request.post(`/api/v1/files/${fileId}/shares`).set(auth()).set('X-Forwarded-Host', 'evil.example').set('X-Forwarded-Proto', 'https').send({});
    expect(xf.body.url).not.toContain('evil.example');
    expect(xf.body.url).toMatch(/^http:/);
  });
});
