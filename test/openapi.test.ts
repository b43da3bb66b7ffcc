/**
 * The OpenAPI document: valid OpenAPI 3.1, exactly the operations the router serves, request
 * schemas that the routes really validate with, and response schemas that real responses
 * match (checked with a JSON Schema validator against the generated document, not the zod
 * source, so a translation mistake in the generator shows up too).
 */
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { API, OUTSIDE_API, openApiPath, type ApiOperation, type OperationId } from '../src/http/api-table.js';
import { ApiRoutes, checkResponse } from '../src/http/api-router.js';
import * as M from '../src/http/api-models.js';
import { buildOpenApiDocument } from '../src/http/openapi.js';
import { makeHarness, setupAdmin, type Harness } from './helpers.js';

// ajv-formats is CommonJS with a default export; under ESM it arrives wrapped.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (ajv: Ajv2020) => Ajv2020;

let h: Harness;
afterEach(() => h?.cleanup());

const TABLE = API as Record<OperationId, ApiOperation>;
const key = (method: string, path: string) => `${method.toUpperCase()} ${path}`;
type Doc = ReturnType<typeof buildOpenApiDocument>;

/** Validates a document against the OpenAPI schema; on success also returns it with $refs resolved. */
async function validated(doc: unknown): Promise<{ valid: boolean; errors?: unknown; version?: string; resolved?: Doc }> {
  const v = new Validator();
  const res = await v.validate(structuredClone(doc) as Parameters<Validator['validate']>[0]);
  return { valid: res.valid, errors: res.errors, version: v.version, resolved: res.valid ? (v.resolveRefs() as unknown as Doc) : undefined };
}

describe('the OpenAPI document', () => {
  it('is served at /api/v1/openapi.json without a token and is valid OpenAPI 3.1', async () => {
    h = await makeHarness();
    const r = await h.request.get('/api/v1/openapi.json');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    expect(r.body.openapi).toBe('3.1.0');
    const v = await validated(r.body);
    expect(v.errors).toBeUndefined();
    expect(v.valid).toBe(true);
    expect(v.version).toBe('3.1');
  });

  it('the validator does reject broken documents (so the check above can fail)', async () => {
    const doc = buildOpenApiDocument() as unknown as Record<string, any>;
    const noInfo = structuredClone(doc);
    delete noInfo.info;
    expect((await validated(noInfo)).valid).toBe(false);
    const badResponse = structuredClone(doc);
    badResponse.paths['/api/v1/me'].get.responses = { '200': { content: {} } }; // a response without its required description
    expect((await validated(badResponse)).valid).toBe(false);
  });

  it('lists exactly the operations of the route table, with the authentication the router enforces', () => {
    const doc = buildOpenApiDocument();
    const documented = new Map<string, any>();
    for (const [p, item] of Object.entries(doc.paths ?? {})) {
      for (const m of ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace']) {
        const op = (item as Record<string, any>)[m];
        if (op) documented.set(key(m, p), op);
      }
    }
    // The document also describes the routes served outside /api/v1 (recipient download, health checks).
    const all: Record<string, ApiOperation> = { ...TABLE, ...OUTSIDE_API };
    const table = new Map(Object.entries(all).map(([id, op]) => [key(op.method, openApiPath(op)), { id, op }]));
    expect([...documented.keys()].sort()).toEqual([...table.keys()].sort());
    for (const [k, { id, op }] of table) {
      const d = documented.get(k);
      expect(d.operationId).toBe(id);
      expect(d.security).toEqual(op.auth === 'none' ? [] : [{ bearerToken: [] }]);
    }
    // Every path parameter in a path is declared, and no other.
    for (const [p, item] of Object.entries(doc.paths ?? {})) {
      const inPath = [...p.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
      for (const op of Object.values(item as Record<string, any>)) {
        const declared = (op.parameters ?? []).filter((x: any) => x.in === 'path').map((x: any) => x.name).sort();
        expect(declared, p).toEqual(inPath);
      }
    }
  });

  it('each documented path answers exactly its documented methods (Allow), and an undocumented path is 404', async () => {
    h = await makeHarness();
    const token = await setupAdmin(h);
    const byPath = new Map<string, Set<string>>();
    for (const op of Object.values(TABLE)) {
      const methods = byPath.get(op.path) ?? new Set<string>();
      methods.add(op.method.toUpperCase());
      // HTTP: a GET resource also answers HEAD (RFC 9110 9.3.2); Express does that for every GET route.
      if (op.method === 'get') methods.add('HEAD');
      byPath.set(op.path, methods);
    }
    const sample = (p: string) => `/api/v1${p.replace(/:id/g, '0123456789abcdef0123456789abcdef').replace(/:name/g, 'x.txt')}`;
    for (const [p, methods] of byPath) {
      // Express answers OPTIONS with the methods routed for the path: the public view of the router.
      const r = await h.request.options(sample(p)).set('Authorization', `Bearer ${token}`);
      expect(r.status, p).toBe(200);
      expect(new Set(String(r.headers.allow).split(/,\s*/)), p).toEqual(methods);
    }
    const unknown = await h.request.get('/api/v1/nothing-here').set('Authorization', `Bearer ${token}`);
    expect(unknown.status).toBe(404);
    expect(unknown.body.detail).toBe('no such API endpoint');
  });

  it('names PUBLIC_URL as the server when set, and no host otherwise', async () => {
    h = await makeHarness({ PUBLIC_URL: 'https://files.example.org/' });
    const withUrl = await h.request.get('/api/v1/openapi.json').set('Host', 'evil.example');
    expect(withUrl.body.servers).toEqual([{ url: 'https://files.example.org', description: 'PUBLIC_URL' }]);
    h.cleanup();
    h = await makeHarness();
    const without = await h.request.get('/api/v1/openapi.json').set('Host', 'evil.example');
    expect(without.body.servers).toEqual([{ url: '/', description: 'this server' }]);
    expect(JSON.stringify(without.body)).not.toContain('evil.example');
  });
});

describe('request schemas are the ones the routes validate with', () => {
  it('every JSON body refuses a field its documented schema does not have, naming it', async () => {
    h = await makeHarness();
    // Setup only answers while it is open, so it goes first.
    const setupFirst = await h.request.post('/api/v1/setup').send({ notInTheSchema: 1 });
    expect(setupFirst.status).toBe(400);
    expect(setupFirst.body.detail).toMatch(/notInTheSchema/);
    const token = await setupAdmin(h);
    const up = await h.request.put('/api/v1/uploads/a.txt').set('Authorization', `Bearer ${token}`).send('hello');
    const ids: Record<string, string> = { id: up.body.file.id };
    const users = await h.request.get('/api/v1/users').set('Authorization', `Bearer ${token}`);
    const jsonOps = Object.entries(TABLE).filter(([, op]) => op.body?.kind === 'json');
    expect(jsonOps.length).toBeGreaterThanOrEqual(6);
    for (const [id, op] of jsonOps.filter(([id]) => id !== 'setup')) {
      // The documented schema is closed: no additional properties.
      const doc = buildOpenApiDocument();
      const schema = (doc.paths as any)[openApiPath(op)][op.method].requestBody.content['application/json'].schema;
      expect(schema.additionalProperties, id).toBe(false);
      const p = `/api/v1${op.path.replace(':id', id === 'updateUser' ? users.body.users[0].id : ids.id!)}`;
      const r = await (h.request as any)[op.method](p).set('Authorization', `Bearer ${token}`).send({ notInTheSchema: 1 });
      expect(r.status, id).toBe(400);
      expect(r.body.code, id).toBe('validation_error');
      expect(r.body.detail, id).toMatch(/notInTheSchema/);
    }
  });

  it('query limits in the document are the ones enforced', async () => {
    h = await makeHarness();
    const token = await setupAdmin(h);
    const doc = buildOpenApiDocument() as any;
    for (const [path, name] of [['/api/v1/files', 'limit'], ['/api/v1/audit', 'limit']] as const) {
      const param = doc.paths[path].get.parameters.find((x: any) => x.name === name);
      const max = param.schema.maximum as number;
      expect((await h.request.get(`${path}?limit=${max}`).set('Authorization', `Bearer ${token}`)).status).toBe(200);
      const over = await h.request.get(`${path}?limit=${max + 1}`).set('Authorization', `Bearer ${token}`);
      expect(over.status).toBe(400);
      expect(over.body.detail).toMatch(/limit/);
    }
  });
});

describe('responses match the document', () => {
  it('a pass over every operation: each response validates against the generated JSON Schema', async () => {
    h = await makeHarness();
    const doc = (await validated(buildOpenApiDocument())).resolved!;
    const ajv = addFormats(new Ajv2020({ strict: false, allErrors: true }));
    ajv.addFormat('binary', true);
    const seen = new Set<string>();
    const r = h.request;
    const check = async (id: OperationId, req: any) => {
      const res = await req;
      const op = TABLE[id];
      const item = (doc.paths as any)[openApiPath(op)][op.method];
      const documented = item.responses[String(res.status)];
      expect(documented, `${id} answered ${res.status}: ${JSON.stringify(res.body)}`).toBeDefined();
      const type = String(res.headers['content-type'] ?? '').split(';')[0];
      if (documented.content && op.method !== 'head') {
        const media = documented.content[type];
        expect(media, `${id} ${res.status} ${type}`).toBeDefined();
        if (/json/.test(type)) {
          const validate = ajv.compile(media.schema);
          expect(validate(res.body), `${id} ${res.status}: ${ajv.errorsText(validate.errors)}`).toBe(true);
        }
      }
      for (const [name, header] of Object.entries<any>(documented.headers ?? {})) {
        if (header.required) expect(res.headers[name.toLowerCase()], `${id} ${res.status} header ${name}`).toBeDefined();
      }
      seen.add(id);
      return res;
    };
    const setup = await check('setup', r.post('/api/v1/setup').send({ setupCode: 'test-setup-code-0123456789', username: 'admin', password: 'admin password 123' }));
    expect(setup.status).toBe(201);
    const tok = await check('createToken', r.post('/api/v1/auth/tokens').send({ username: 'admin', password: 'admin password 123', name: 'a' }));
    const auth = { Authorization: `Bearer ${tok.body.token}` };
    await check('createToken', r.post('/api/v1/auth/tokens').send({ username: 'admin', password: 'wrong password 123' }));
    await check('getOpenApi', r.get('/api/v1/openapi.json'));
    await check('listTokens', r.get('/api/v1/auth/tokens').set(auth));
    await check('getMe', r.get('/api/v1/me'));
    await check('getMe', r.get('/api/v1/me').set(auth));
    const user = await check('createUser', r.post('/api/v1/users').set(auth).send({ username: 'bob', password: 'bob password 123' }));
    await check('createUser', r.post('/api/v1/users').set(auth).send({ username: 'bob', password: 'bob password 123' }));
    await check('listUsers', r.get('/api/v1/users').set(auth));
    await check('updateUser', r.patch(`/api/v1/users/${user.body.id}`).set(auth).send({ quotaBytes: 1000000 }));
    const bobTok = await r.post('/api/v1/auth/tokens').send({ username: 'bob', password: 'bob password 123' });
    await check('listUsers', r.get('/api/v1/users').set('Authorization', `Bearer ${bobTok.body.token}`));
    const multi = await check('uploadFiles', r.post('/api/v1/files').set(auth).attach('file', Buffer.from('one'), 'one.txt').attach('file', Buffer.from('two'), 'two.txt'));
    await check('uploadFiles', r.post('/api/v1/files').set(auth).field('sha256', '0'.repeat(64)).attach('file', Buffer.from('x'), 'x.txt'));
    const raw = await check('uploadRaw', r.put('/api/v1/uploads/raw.bin').set(auth).send(Buffer.from('raw bytes here')));
    const fid = raw.body.file.id as string;
    await check('listFiles', r.get('/api/v1/files?limit=1').set(auth));
    await check('listFiles', r.get('/api/v1/files?limit=0').set(auth));
    await check('getFile', r.get(`/api/v1/files/${fid}`).set(auth));
    await check('getFile', r.get(`/api/v1/files/${'0'.repeat(32)}`).set(auth));
    await check('headFileContent', r.head(`/api/v1/files/${fid}/content`).set(auth));
    await check('headFileContent', r.head(`/api/v1/files/${fid}/content`).set(auth).set('Range', 'bytes=0-1'));
    await check('getFileContent', r.get(`/api/v1/files/${fid}/content`).set(auth));
    await check('getFileContent', r.get(`/api/v1/files/${fid}/content`).set(auth).set('Range', 'bytes=2-5'));
    await check('getFileContent', r.get(`/api/v1/files/${fid}/content`).set(auth).set('Range', 'bytes=500-'));
    const share = await check('createShare', r.post(`/api/v1/files/${fid}/shares`).set(auth).send({ maxDownloads: 2, password: 'pw pw pw pw', note: 'n' }));
    await check('createShare', r.post(`/api/v1/files/${fid}/shares`).set(auth).send({ maxDownloads: 0 }));
    await check('createBundle', r.post('/api/v1/shares').set(auth).send({ fileIds: [fid, multi.body.files[1].id], maxDownloads: 2 }));
    await check('createBundle', r.post('/api/v1/shares').set(auth).send({ fileIds: [] }));
    await check('createBundle', r.post('/api/v1/shares').set(auth).send({ fileIds: ['0'.repeat(32)] }));
    await check('listShares', r.get(`/api/v1/files/${fid}/shares`).set(auth));
    await check('revokeShare', r.delete(`/api/v1/shares/${share.body.id}`).set(auth));
    await check('revokeShare', r.delete(`/api/v1/shares/${share.body.id}`).set(auth).set('Authorization', 'Bearer nope'));
    await check('listUserShares', r.get(`/api/v1/users/${setup.body.user.id}/shares`).set(auth));
    await check('listUserShares', r.get(`/api/v1/users/${'0'.repeat(32)}/shares`).set(auth));
    const live = await r.post(`/api/v1/files/${fid}/shares`).set(auth).send({});
    await check('revokeUserShare', r.delete(`/api/v1/users/${setup.body.user.id}/shares/${live.body.id}`).set(auth));
    await check('revokeUserShare', r.delete(`/api/v1/users/${setup.body.user.id}/shares/${live.body.id}`).set(auth));
    await check('revokeUserShares', r.delete(`/api/v1/users/${setup.body.user.id}/shares`).set(auth));
    const req1 = await check('createRequest', r.post('/api/v1/requests').set(auth).send({ title: 'Send me', maxFiles: 2, allowedTypes: ['txt'] }));
    await check('createRequest', r.post('/api/v1/requests').set(auth).send({ title: '' }));
    await r.put(`/r/${req1.body.token}/sent.txt`).send(Buffer.from('sent through a request'));
    await check('listRequests', r.get('/api/v1/requests').set(auth));
    await check('getRequest', r.get(`/api/v1/requests/${req1.body.id}`).set(auth));
    await check('getRequest', r.get(`/api/v1/requests/${'0'.repeat(32)}`).set(auth));
    await check('listFiles', r.get(`/api/v1/files?requestId=${req1.body.id}`).set(auth));
    await check('updateRequest', r.patch(`/api/v1/requests/${req1.body.id}`).set(auth).send({ close: true }));
    await check('updateRequest', r.patch(`/api/v1/requests/${req1.body.id}`).set(auth).send({}));
    await check('putRequestHold', r.put(`/api/v1/requests/${req1.body.id}/hold`).set(auth).send({ reason: 'matter' }));
    await check('deleteRequest', r.delete(`/api/v1/requests/${req1.body.id}`).set(auth));
    await check('deleteRequestHold', r.delete(`/api/v1/requests/${req1.body.id}/hold`).set(auth));
    await check('deleteRequestHold', r.delete(`/api/v1/requests/${req1.body.id}/hold`).set(auth));
    await check('putRequestHold', r.put(`/api/v1/requests/${'0'.repeat(32)}/hold`).set(auth).send({ reason: 'matter' }));
    await check('deleteRequest', r.delete(`/api/v1/requests/${req1.body.id}`).set(auth));
    await check('deleteRequest', r.delete(`/api/v1/requests/${req1.body.id}`).set(auth));
    await check('listAudit', r.get(`/api/v1/audit?fileId=${fid}`).set(auth));
    await check('updateFile', r.patch(`/api/v1/files/${fid}`).set(auth).send({ expiresInSeconds: 3600 }));
    await check('updateFile', r.patch(`/api/v1/files/${fid}`).set(auth).send({ expiresInSeconds: 1 }));
    await check('putFileHold', r.put(`/api/v1/files/${fid}/hold`).set(auth).send({ reason: 'case', reference: 'A-1' }));
    await check('putFileHold', r.put(`/api/v1/files/${'0'.repeat(32)}/hold`).set(auth).send({ reason: 'case' }));
    await check('deleteFile', r.delete(`/api/v1/files/${fid}`).set(auth));
    await check('deleteFileHold', r.delete(`/api/v1/files/${fid}/hold`).set(auth));
    await check('deleteFileHold', r.delete(`/api/v1/files/${fid}/hold`).set(auth));
    await check('putUserHold', r.put(`/api/v1/users/${user.body.id}/hold`).set(auth).send({ reason: 'case' }));
    await check('putUserHold', r.put(`/api/v1/users/${user.body.id}/hold`).set('Authorization', `Bearer ${bobTok.body.token}`).send({ reason: 'case' }));
    await check('deleteUserHold', r.delete(`/api/v1/users/${user.body.id}/hold`).set(auth));
    await check('deleteUserHold', r.delete(`/api/v1/users/${user.body.id}/hold`).set(auth));
    await check('deleteFile', r.delete(`/api/v1/files/${multi.body.files[0].id}`).set(auth));
    await check('deleteFile', r.delete(`/api/v1/files/${multi.body.files[0].id}`).set(auth));
    const other = await r.post('/api/v1/auth/tokens').send({ username: 'admin', password: 'admin password 123', name: 'b' });
    await check('revokeToken', r.delete(`/api/v1/auth/tokens/${other.body.id}`).set(auth));
    await check('updateMe', r.patch('/api/v1/me').set(auth).send({ currentPassword: 'wrong password 123', newPassword: 'new password 1234' }));
    await check('updateMe', r.patch('/api/v1/me').set(auth).send({ currentPassword: 'admin password 123', newPassword: 'new password 1234' }));
    await check('updateMe', r.patch('/api/v1/me').set(auth).send({ email: 'admin@example.com', notifications: { newSignIn: ['email', 'webhook'] } }));
    await check('updateMe', r.patch('/api/v1/me').set(auth).send({ notifications: { newSignIn: ['sms'] } }));
    await check('getMyWebhook', r.get('/api/v1/me/webhook').set(auth));
    await check('setMyWebhook', r.put('/api/v1/me/webhook').set(auth).send({ url: 'http://10.0.0.1/hook' }));
    await check('deleteMyWebhook', r.delete('/api/v1/me/webhook').set(auth));
    await check('testMyWebhook', r.post('/api/v1/me/webhook/test').set(auth));
    await check('getAdminWebhook', r.get('/api/v1/admin/webhook').set(auth));
    await check('setAdminWebhook', r.put('/api/v1/admin/webhook').set(auth).send({ url: 'https://192.168.1.1/hook' }));
    await check('deleteAdminWebhook', r.delete('/api/v1/admin/webhook').set(auth));
    await check('testAdminWebhook', r.post('/api/v1/admin/webhook/test').set(auth));
    // The pass really covered the table (add a call above when adding an operation).
    expect([...seen].sort()).toEqual(Object.keys(TABLE).sort());
  });

  it('the response check itself catches an extra field, a missing field, an undocumented status and an undocumented code', () => {
    const op = TABLE.getFile;
    const good = { id: 'a'.repeat(32), name: 'n', size: 1, mimeType: 'text/plain', sha256: 'b'.repeat(64), createdAt: new Date().toISOString(), expiresAt: null };
    expect(checkResponse('getFile', op, 200, 'application/json', good)).toEqual([]);
    expect(checkResponse('getFile', op, 200, 'application/json', { ...good, wrappedKey: 'x' })[0]).toMatch(/wrappedKey/);
    expect(checkResponse('getFile', op, 200, 'application/json', { ...good, sha256: undefined })[0]).toMatch(/sha256/);
    expect(checkResponse('getFile', op, 201, 'application/json', good)[0]).toMatch(/does not document/);
    const problem = { type: 'urn:sfs:problem:not_found', title: 'Not found', status: 404, detail: 'x', code: 'not_found', requestId: 'r' };
    expect(checkResponse('getFile', op, 404, 'application/problem+json', problem)).toEqual([]);
    expect(checkResponse('getFile', op, 404, 'application/json', problem)[0]).toMatch(/problem\+json/);
    expect(checkResponse('getFile', op, 409, 'application/problem+json', { ...problem, status: 409, code: 'conflict' })[0]).toMatch(/does not document/);
    expect(M.Problem.safeParse({ ...problem, stack: 'at x' }).success).toBe(false);
  });
});

describe('the router builder', () => {
  const noop: express.RequestHandler = (_req, res) => void res.end();
  const opts = { auth: noop, requireAdmin: noop };

  it('refuses to build while an operation has no handler, and refuses unknown or doubly bound operations', () => {
    const r = new ApiRoutes(opts);
    r.op('getMe', noop);
    expect(() => r.build()).toThrow(/without a handler: setup, createToken/);
    expect(() => r.op('getMe', noop)).toThrow(/bound twice/);
    expect(() => r.op('noSuchOperation' as OperationId, noop)).toThrow(/unknown API operation/);
  });

  it('registers exactly the table: one route per operation, with its method and path', () => {
    const r = new ApiRoutes(opts);
    for (const id of Object.keys(TABLE) as OperationId[]) r.op(id, noop);
    const router = r.build() as unknown as { stack: { route?: { path: string; methods: Record<string, boolean> } }[] };
    // Express keeps no public route list; its router's stack is the only place to read one.
    const registered = router.stack.map((l) => key(Object.keys(l.route!.methods).join(','), l.route!.path)).sort();
    expect(registered).toEqual(Object.values(TABLE).map((op) => key(op.method, op.path)).sort());
  });
});
