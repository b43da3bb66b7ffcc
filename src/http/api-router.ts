/**
 * Builds the Express router for /api/v1 from the route table (api-table.ts). Route modules
 * bind handlers to operation ids; method, path and authentication come from the table, so
 * the router serves exactly the documented operations, and build() refuses to produce a
 * router while any table entry has no handler.
 */
import { Router, type RequestHandler } from 'express';
import { ERROR_CODES, type ErrorCode } from '../errors.js';
import { problemWith } from './api-models.js';
import { API, errorsOf, type ApiOperation, type OperationId } from './api-table.js';

export interface ApiRoutesOptions {
  /** Requires a bearer token (requireToken). */
  auth: RequestHandler;
  /** Requires the caller to be an admin (requireAdmin). */
  requireAdmin: RequestHandler;
  /**
   * When set (tests), every response of every operation is checked against the table: the
   * status must be documented and a JSON body must match its schema. Each mismatch is
   * reported here; the response itself is left alone.
   */
  onContractViolation?: (message: string) => void;
}

/** Collects handler bindings for the operations of the route table. */
export class ApiRoutes {
  private readonly bindings = new Map<OperationId, RequestHandler[]>();

  constructor(
    private readonly o: ApiRoutesOptions,
    private readonly table: Record<OperationId, ApiOperation> = API,
  ) {}

  /** Serves operation `id` with `handlers` (after the authentication the table asks for). */
  op(id: OperationId, ...handlers: RequestHandler[]): void {
    if (!Object.hasOwn(this.table, id)) throw new Error(`unknown API operation "${id}"`);
    if (this.bindings.has(id)) throw new Error(`API operation "${id}" is bound twice`);
    if (handlers.length === 0) throw new Error(`API operation "${id}" has no handler`);
    this.bindings.set(id, handlers);
  }

  /** The router: every table entry in table order; throws if any entry has no handler. */
  build(): Router {
    const missing = Object.keys(this.table).filter((id) => !this.bindings.has(id as OperationId));
    if (missing.length) throw new Error(`API operations without a handler: ${missing.join(', ')}`);
    const router = Router();
    for (const [id, spec] of Object.entries(this.table) as [OperationId, ApiOperation][]) {
      const chain: RequestHandler[] = [];
      if (this.o.onContractViolation) chain.push(contractCheck(id, spec, this.o.onContractViolation));
      if (spec.auth !== 'none') chain.push(this.o.auth);
      if (spec.auth === 'admin') chain.push(this.o.requireAdmin);
      router[spec.method](spec.path, ...chain, ...this.bindings.get(id)!);
    }
    return router;
  }
}

/** Checks one JSON response body against what the table documents; returns the problems found. */
export function checkResponse(id: string, spec: ApiOperation, status: number, contentType: string | undefined, body: unknown): string[] {
  const where = `${id} (${spec.method.toUpperCase()} ${spec.path}) answered ${status}`;
  const success = spec.responses[status];
  if (success) {
    if (!success.schema) return body === undefined || body === '' ? [] : [`${where} with a body, but the table documents none`];
    if (!/^application\/json\b/.test(contentType ?? '')) return [`${where} with Content-Type ${contentType}, expected application/json`];
    const r = success.schema.safeParse(body);
    return r.success ? [] : [`${where} with a body that does not match its schema: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`];
  }
  const codes = errorsOf(spec).filter((c) => ERROR_CODES[c].status === status);
  if (codes.length === 0) return [`${where}, which the table does not document`];
  if (!/^application\/problem\+json\b/.test(contentType ?? '')) return [`${where} with Content-Type ${contentType}, expected application/problem+json`];
  const r = problemWith(codes as ErrorCode[]).safeParse(body);
  return r.success ? [] : [`${where} with a problem that does not match (documented codes: ${codes.join(', ')}): ${JSON.stringify(body)}`];
}

/** Test-time middleware: reports responses that differ from the table (see onContractViolation). */
export function contractCheck(id: string, spec: ApiOperation, report: (message: string) => void): RequestHandler {
  return (_req, res, next) => {
    let checked = false;
    const send = res.send.bind(res);
    res.send = (body?: unknown) => {
      // res.json() calls send() again with the serialised string; check that one.
      if (typeof body === 'string' || Buffer.isBuffer(body)) {
        checked = true;
        const type = String(res.getHeader('content-type') ?? '');
        let parsed: unknown = String(body);
        if (/json/.test(type)) {
          try {
            parsed = JSON.parse(String(body));
          } catch {
            report(`${id} answered ${res.statusCode} with invalid JSON`);
          }
        }
        for (const m of checkResponse(id, spec, res.statusCode, type, parsed)) report(m);
      }
      return send(body);
    };
    res.on('finish', () => {
      // Bodies sent by streaming (downloads) or res.end() (204, HEAD): the status must still be documented.
      if (checked) return;
      const ok = spec.responses[res.statusCode] !== undefined || errorsOf(spec).some((c) => ERROR_CODES[c].status === res.statusCode);
      if (!ok) report(`${id} (${spec.method.toUpperCase()} ${spec.path}) answered ${res.statusCode}, which the table does not document`);
    });
    next();
  };
}
