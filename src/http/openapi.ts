/**
 * The OpenAPI 3.1 document, generated from the route table (api-table.ts) and its zod
 * schemas with @asteasolutions/zod-to-openapi. Nothing here is written by hand per route.
 */
import { OpenAPIRegistry, OpenApiGeneratorV31, type RouteConfig, type ZodRequestBody } from '@asteasolutions/zod-to-openapi';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, type ErrorCode } from '../errors.js';
import { Problem, problemWith } from './api-models.js';
import { API, OUTSIDE_API, errorsOf, openApiPath, type ApiOperation } from './api-table.js';
import { z } from './zod.js';

const PACKAGE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json');

export interface OpenApiOptions {
  /** PUBLIC_URL when set; otherwise the document names no host and clients use the one they fetched it from. */
  publicUrl?: string;
  /** For the descriptions only. */
  maxFileSize?: number;
}

const DESCRIPTION = `Every file is encrypted at rest under its own key and authenticated chunk by chunk on the way out.

**Authentication.** Get a token with \`POST /api/v1/auth/tokens\` (username and password), then send
\`Authorization: Bearer <token>\` on every other call. Cookies are ignored by the API.

**Errors** are \`application/problem+json\` (RFC 9457) with a stable \`code\`.

**Recipients** of a share link need no account: \`GET /s/{token}/content\` (and HEAD, with Range), with a password as
HTTP Basic auth with any user name (\`curl -u :PASSWORD -OJ URL\`). Unknown, revoked, expired and used-up links all answer
the same 404; a missing or wrong password is 401.`;

/** Builds the OpenAPI 3.1 document for the whole API, with the routes outside /api/v1 that clients use (OUTSIDE_API). */
export function buildOpenApiDocument(o: OpenApiOptions = {}, table: Record<string, ApiOperation> = { ...API, ...OUTSIDE_API }) {
  const registry = new OpenAPIRegistry();
  registry.register('Problem', Problem);
  const bearer = registry.registerComponent('securitySchemes', 'bearerToken', {
    type: 'http',
    scheme: 'bearer',
    description: 'An API token (sfs_...) from POST /api/v1/auth/tokens',
  });

  for (const [operationId, op] of Object.entries(table)) {
    const responses: RouteConfig['responses'] = {};
    for (const [status, r] of Object.entries(op.responses)) {
      responses[status] = {
        description: r.description,
        ...(r.headers ? { headers: r.headers } : {}),
        ...(r.schema ? { content: { 'application/json': { schema: r.schema } } } : {}),
        ...(r.binary ? { content: { 'application/octet-stream': { schema: z.string().openapi({ format: 'binary', description: 'the stored bytes, with the stored Content-Type' }) } } } : {}),
      };
    }
    const byStatus = new Map<number, ErrorCode[]>();
    for (const code of errorsOf(op)) {
      const s = ERROR_CODES[code].status;
      byStatus.set(s, [...(byStatus.get(s) ?? []), code]);
    }
    for (const [status, codes] of [...byStatus].sort((a, b) => a[0] - b[0])) {
      responses[String(status)] = {
        description: codes.map((c) => `\`${c}\`: ${ERROR_CODES[c].title}`).join('; '),
        ...(status === 429 ? { headers: z.object({ 'Retry-After': z.string().openapi({ description: 'seconds' }) }) } : {}),
        ...(status === 401 ? { headers: z.object({ 'WWW-Authenticate': z.string() }) } : {}),
        content: { 'application/problem+json': { schema: problemWith(codes) } },
      };
    }
    let body: ZodRequestBody | undefined;
    if (op.body?.kind === 'json') body = { required: true, content: { 'application/json': { schema: op.body.schema } } };
    else if (op.body?.kind === 'multipart') {
      body = {
        required: true,
        content: { 'multipart/form-data': { schema: op.body.schema, encoding: { file: { contentType: 'application/octet-stream' } } } },
      };
    } else if (op.body?.kind === 'binary') {
      body = { required: true, content: { 'application/octet-stream': { schema: z.string().openapi({ format: 'binary' }) } } };
    }
    const auth = op.auth === 'admin' ? ' Needs an admin token.' : '';
    registry.registerPath({
      operationId,
      method: op.method,
      path: openApiPath(op),
      tags: [op.tag],
      summary: op.summary,
      ...(op.description || auth ? { description: `${op.description ?? ''}${auth}`.trim() } : {}),
      security: op.auth === 'none' ? [] : [{ [bearer.name]: [] }],
      request: {
        ...(op.params ? { params: op.params } : {}),
        ...(op.query ? { query: op.query } : {}),
        ...(op.headers ? { headers: op.headers } : {}),
        ...(body ? { body } : {}),
      },
      responses,
    });
  }

  const version = (JSON.parse(fs.readFileSync(PACKAGE, 'utf8')) as { version: string }).version;
  const limit = o.maxFileSize === undefined ? '' : `\n\nThis server accepts files up to ${o.maxFileSize} bytes.`;
  return new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: { title: 'Secure file sharing API', version, description: DESCRIPTION + limit },
    servers: [{ url: o.publicUrl ?? '/', description: o.publicUrl ? 'PUBLIC_URL' : 'this server' }],
    tags: [...new Set(Object.values(table).map((op) => op.tag))].map((name) => ({ name })),
  });
}

const cache = new Map<string, string>();

/**
 * The document as JSON text, built once per set of options: it depends on nothing else, and
 * building it takes tens of milliseconds, which every app instance (every test) would pay.
 */
export function openApiJson(o: OpenApiOptions = {}): string {
  const key = JSON.stringify([o.publicUrl ?? null, o.maxFileSize ?? null]);
  let text = cache.get(key);
  if (text === undefined) {
    text = JSON.stringify(buildOpenApiDocument(o));
    cache.set(key, text);
  }
  return text;
}
