/**
 * Several server processes (dist/main.js) on one PostgreSQL database and one S3 bucket, for
 * the multi-instance suite: start them in parallel, restart one, run `sfs` against the same
 * settings, and make sure every process is gone when the suite ends, however it ends.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { childEnv, startChild, tempDir, type Child } from '../child.js';

export const SFS_CLI = path.resolve(import.meta.dirname, '..', '..', 'dist', 'cli', 'sfs.js');


/** Temp dirs this module made (instances, sfs runs); removeTempDirs() deletes them. */
const dirs = new Set<string>();

/** Deletes every temp dir this module made; call after every process using them stopped. */
export function removeTempDirs(): void {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

// Every child this module started, killed synchronously if the test process exits without
// running the suite's afterAll (a crash, a timeout of the worker).
const live = new Set<Child>();
process.on('exit', () => {
  for (const c of live) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
});

export interface Instance {
  name: string;
  port: number;
  /** Its own temp dir (DATA_DIR, UPLOADS_DIR, key file path); each instance locks its DATA_DIR. */
  dir: string;
  env: Record<string, string>;
  child: Child;
  /** Everything the current and earlier processes of this instance wrote to stdout (pino). */
  log(): string;
}

/** Starts one instance on a fixed loopback port with the shared settings. */
export async function startInstance(name: string, port: number, shared: Record<string, string>): Promise<Instance> {
  const dir = tempDir();
  dirs.add(dir);
  const env = childEnv(dir, { ...shared, PORT: String(port), HOST: '127.0.0.1' });
  const inst: Instance = { name, port, dir, env, child: undefined as unknown as Child, log: () => '' };
  await restartInstance(inst);
  return inst;
}

/** (Re)starts the process of an instance on its port and DATA_DIR; resolves once it listens. */
export async function restartInstance(inst: Instance): Promise<void> {
  const earlier = inst.child ? inst.log() : '';
  const child = await startChild(inst.env);
  live.add(child);
  child.proc.once('exit', () => live.delete(child));
  if (child.port !== inst.port) throw new Error(`${inst.name} listens on ${child.port}, not ${inst.port}`);
  inst.child = child;
  inst.log = () => earlier + child.stdout();
}

/** Stops an instance (SIGTERM, then SIGKILL after a few seconds); never throws. */
export async function stopInstance(inst: Instance | undefined): Promise<void> {
  const c = inst?.child;
  if (!c || c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  const t = setTimeout(() => c.proc.kill('SIGKILL'), 5000);
  await c.stop('SIGTERM');
  clearTimeout(t);
}

/** Which instance logged a request with this X-Request-Id (pino's request line), if any yet. */
export function servedBy(instances: Instance[], requestId: string): string[] {
  const needle = `"id":"${requestId}"`;
  return instances.filter((i) => i.log().includes(needle)).map((i) => i.name);
}

/** Waits until exactly one instance has logged the request (the line follows the response). */
export async function waitServedBy(instances: Instance[], requestId: string): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const who = servedBy(instances, requestId);
    if (who.length > 1) throw new Error(`request ${requestId} logged by ${who.join(', ')}`);
    if (who.length === 1) return who[0]!;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no instance logged request ${requestId}`);
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `sfs ARGS` with `env` asynchronously (uploads in flight keep streaming meanwhile). */
export function runSfs(args: string[], env: Record<string, string>, timeoutMs = 120_000): Promise<CliResult> {
  if (!fs.existsSync(SFS_CLI)) throw new Error(`${SFS_CLI} is missing: run "npm run build" first`);
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [SFS_CLI, ...args], { env, cwd: path.dirname(env.DATA_DIR!), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c) => (stdout += c));
    proc.stderr.on('data', (c) => (stderr += c));
    const t = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`sfs ${args.join(' ')} did not finish: ${stderr}`));
    }, timeoutMs);
    proc.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Environment for `sfs` on the cluster's settings, with a DATA_DIR of its own. */
export function cliEnv(shared: Record<string, string>, extra: Record<string, string> = {}): Record<string, string> {
  const dir = tempDir();
  dirs.add(dir);
  return childEnv(dir, { ...shared, ...extra });
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The parsed body when it is JSON or problem+json. */
  json: any;
}

/** One HTTP request to 127.0.0.1:port; the whole response body is collected. */
export function request(port: number, method: string, p: string, o: { body?: Buffer | string | object; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...o.headers };
    let data: Buffer | undefined;
    if (o.body !== undefined) {
      if (Buffer.isBuffer(o.body) || typeof o.body === 'string') data = Buffer.from(o.body);
      else {
        data = Buffer.from(JSON.stringify(o.body));
        headers['Content-Type'] ??= 'application/json';
      }
      headers['Content-Length'] = data.length;
    }
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(parts);
        const type = String(res.headers['content-type'] ?? '');
        let json: unknown = null;
        if (/json/.test(type) && body.length) json = JSON.parse(body.toString('utf8'));
        resolve({ status: res.statusCode!, headers: res.headers, body, json });
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** The outcome of a streamed upload: a response, or the connection failing before one. */
export type UploadOutcome = { status: number; json: any } | { error: string };

/**
 * A PUT upload whose body is sent in steps the test controls: `send(n)` writes the next n
 * bytes and resolves when they were handed to the socket; `finish()` writes the rest; `done`
 * settles with the response, or with the error if the connection failed before one came.
 */
export function streamedUpload(port: number, name: string, content: Buffer, headers: Record<string, string>) {
  let sent = 0;
  let outcome: ((o: UploadOutcome) => void) | undefined;
  let settled = false;
  const done = new Promise<UploadOutcome>((r) => (outcome = r));
  const settle = (o: UploadOutcome) => {
    if (settled) return;
    settled = true;
    outcome!(o);
  };
  const req = http.request(
    { host: '127.0.0.1', port, method: 'PUT', path: `/api/v1/uploads/${encodeURIComponent(name)}`, agent: false, headers: { ...headers, 'Content-Type': 'application/octet-stream', 'Content-Length': content.length } },
    (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', (err) => settle({ error: err.message }));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let json: unknown = null;
        try {
          json = text ? JSON.parse(text) : null;
        } catch {
          json = { unparsed: text.slice(0, 200) };
        }
        settle({ status: res.statusCode!, json });
      });
    },
  );
  req.on('error', (err) => settle({ error: (err as NodeJS.ErrnoException).code ?? err.message }));
  const write = (chunk: Buffer) =>
    new Promise<void>((resolve) => {
      if (settled || req.destroyed) return resolve();
      // Resolves on error too: the outcome says what happened.
      req.write(chunk, () => resolve());
    });
  return {
    done,
    async send(n: number) {
      const chunk = content.subarray(sent, Math.min(content.length, sent + n));
      sent += chunk.length;
      await write(chunk);
    },
    finish() {
      const rest = content.subarray(sent);
      sent = content.length;
      if (!settled && !req.destroyed) req.end(rest);
      return done;
    },
    abort() {
      req.destroy();
    },
  };
}
