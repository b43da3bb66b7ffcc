/** Runs the built server (dist/main.js) as a child process, for tests that need a real process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

export const MAIN = path.resolve(import.meta.dirname, '..', 'dist', 'main.js');

export interface Child {
  proc: ChildProcess;
  port: number;
  dir: string;
  stderr: () => string;
  stdout: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Environment for a child server on a temp dir (PORT=0 picks a free port). */
export function childEnv(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    NODE_ENV: 'development',
    HOST: '127.0.0.1',
    PORT: '0',
    DATA_DIR: path.join(dir, 'data'),
    UPLOADS_DIR: path.join(dir, 'uploads'),
    MASTER_KEY_FILE: path.join(dir, 'master.key'),
    LOG_LEVEL: 'warn',
    ...extra,
  };
}

export function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-child-'));
}

/** Runs the server to completion (for start-up failures); resolves with exit code and output. */
export function runToExit(env: Record<string, string>, timeoutMs = 20_000): Promise<{ code: number | null; stderr: string; stdout: string }> {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run "npm run build" first (npm test does)`);
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [MAIN], { env, cwd: env.DATA_DIR ? path.dirname(env.DATA_DIR) : undefined });
    let stderr = '';
    let stdout = '';
    proc.stderr.on('data', (c) => (stderr += c));
    proc.stdout.on('data', (c) => (stdout += c));
    const t = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`server did not exit: ${stderr}`));
    }, timeoutMs);
    proc.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stderr, stdout });
    });
  });
}

/** Starts the server and resolves once it is listening. */
export function startChild(env: Record<string, string>): Promise<Child> {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run "npm run build" first (npm test does)`);
  const dir = path.dirname(env.DATA_DIR!);
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [MAIN], { env, cwd: dir });
    let stderr = '';
    const t = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`server did not start: ${stderr}`));
    }, 20_000);
    let stdout = '';
    proc.stdout.on('data', (c) => (stdout += c));
    proc.stderr.on('data', (c) => {
      stderr += c;
      const m = /listening on https?:\/\/[^:]+:(\d+)/.exec(stderr);
      if (m) {
        clearTimeout(t);
        resolve({
          proc,
          port: Number(m[1]),
          dir,
          stderr: () => stderr,
          stdout: () => stdout,
          stop(signal: NodeJS.Signals = 'SIGTERM') {
            return new Promise((res) => {
              if (proc.exitCode !== null || proc.signalCode !== null) return res(proc.exitCode);
              proc.once('exit', (code) => res(code));
              proc.kill(signal);
            });
          },
        });
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`server exited with ${code}: ${stderr}`));
    });
  });
}

/** JSON request against a child server. */
export function jsonRequest(port: number, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      { host: '127.0.0.1', port, method, path: p, headers: { ...(data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {}), ...headers } },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : null }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** Completes setup on a child server and returns an admin token. */
export async function childAdminToken(c: Child): Promise<string> {
  const code = fs.readFileSync(path.join(c.dir, 'data', 'setup-code'), 'utf8').trim();
  const password = 'child admin password';
  const s = await jsonRequest(c.port, 'POST', '/api/v1/setup', { setupCode: code, username: 'admin', password });
  if (s.status !== 201) throw new Error(`setup: ${s.status} ${JSON.stringify(s.body)}`);
  const t = await jsonRequest(c.port, 'POST', '/api/v1/auth/tokens', { username: 'admin', password, name: 'child' });
  return t.body.token;
}

/** Peak resident memory of a process in bytes (Linux VmHWM). */
export function peakRss(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  if (!m) throw new Error('no VmHWM');
  return Number(m[1]) * 1024;
}

/** Current resident memory of a process in bytes (Linux VmRSS). */
export function currentRss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error('no VmRSS');
  return Number(m[1]) * 1024;
}

export const randomKey = () => randomBytes(32).toString('base64');
