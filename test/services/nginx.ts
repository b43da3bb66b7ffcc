/**
 * nginx from Debian's package as a reverse proxy in front of several server instances, for the
 * multi-instance suite (test/multi-instance.test.ts). It runs as a child of the test process
 * (`daemon off`) with its own prefix, configuration, pid file, error log and temp paths in a
 * temp dir, listening on loopback only. The configuration is the shipped deploy/nginx.conf,
 * rendered with loopback ports and that temp dir.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const NGINX_BIN = process.env.SFS_TEST_NGINX ?? '/usr/sbin/nginx';
const SHIPPED = path.resolve(import.meta.dirname, '..', '..', 'deploy', 'nginx.conf');

/** Why nginx cannot run here ('' when it can). */
export function nginxMissing(): string {
  return fs.existsSync(NGINX_BIN) ? '' : `no nginx at ${NGINX_BIN} (apt-get install -y nginx)`;
}

export interface NginxOptions {
  listenPort: number;
  /** 127.0.0.1 ports of the instances, balanced round-robin. */
  upstreams: number[];
}

/** The variables deploy/nginx.conf takes (docs/deploy.md renders it with envsubst on exactly these). */
export const SHIPPED_VARS = ['SFS_LISTEN', 'SFS_SERVER_NAME', 'SFS_UPSTREAMS', 'SFS_TLS_CERT', 'SFS_TLS_KEY', 'SFS_NGINX_STATE'] as const;

/**
 * The configuration for a test run, written into `prefix`: deploy/nginx.conf with its
 * variables set as envsubst would (only those six names; nginx's own $variables stay), so
 * the configuration docs/deploy.md ships is the one tested. Only loopback addresses go into
 * it. What a test needs on top (no daemon; as root, workers that stay root so they can use
 * the temp dir) is given with -g, so the file itself is the shipped one.
 */
export function renderNginxConf(prefix: string, o: NginxOptions): string {
  const upstreams = o.upstreams.map((p) => `server 127.0.0.1:${p};`).join(' ');
  // The shipped server block names certificate files even when it listens on plain HTTP
  // (nginx loads them at start): a throwaway self-signed pair.
  const cert = path.join(prefix, 'cert.pem');
  const key = path.join(prefix, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-keyout', key, '-out', cert, '-subj', '/CN=localhost'], { stdio: 'ignore' });
  const vars: Record<(typeof SHIPPED_VARS)[number], string> = {
    SFS_LISTEN: `127.0.0.1:${o.listenPort}`,
    SFS_SERVER_NAME: 'localhost',
    SFS_UPSTREAMS: upstreams,
    SFS_TLS_CERT: cert,
    SFS_TLS_KEY: key,
    SFS_NGINX_STATE: prefix,
  };
  let text = fs.readFileSync(SHIPPED, 'utf8');
  for (const [k, v] of Object.entries(vars)) text = text.split(`\${${k}}`).join(v);
  const left = /\$\{SFS_[A-Z_]+\}/.exec(text);
  if (left) throw new Error(`deploy/nginx.conf uses ${left[0]}, which the multi-instance suite does not set`);
  return text;
}

const TEMPS = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'];

export interface Nginx {
  port: number;
  prefix: string;
  proc: ChildProcess;
  errorLog(): string;
  stop(): Promise<void>;
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port. */
export async function waitForPort(port: number, isAlive: () => boolean, what: string, attempts = 200): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    if (!isAlive()) throw new Error(`${what} exited before listening`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} is not listening on 127.0.0.1:${port}`);
}

/** Starts nginx in front of `upstreams`; checks the configuration first (nginx -t). */
export async function startNginx(o: NginxOptions): Promise<Nginx> {
  const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-nginx-'));
  for (const t of TEMPS) fs.mkdirSync(path.join(prefix, t));
  const conf = path.join(prefix, 'nginx.conf');
  fs.writeFileSync(conf, renderNginxConf(prefix, o));
  const errorLog = () => {
    try {
      return fs.readFileSync(path.join(prefix, 'error.log'), 'utf8');
    } catch {
      return '';
    }
  };
  // -e: the error log before the configuration is read, so nothing goes to /var/log/nginx.
  const globals = ['daemon off;', ...(process.getuid?.() === 0 ? ['user root;'] : [])].join(' ');
  const args = ['-p', prefix, '-c', conf, '-e', path.join(prefix, 'error.log'), '-g', globals];
  let stderr = '';
  const proc = spawn(NGINX_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.on('data', (c) => (stderr += c));
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  // If the test process ends without stopping it (a crashed worker), SIGTERM still reaches
  // the master, which stops its workers: SIGKILL would leave them holding the port.
  const onExit = () => {
    if (alive()) proc.kill('SIGTERM');
  };
  process.on('exit', onExit);
  proc.once('exit', () => process.off('exit', onExit));
  try {
    await waitForPort(o.listenPort, alive, 'nginx');
  } catch (err) {
    proc.kill('SIGKILL');
    const why = `${(err as Error).message}: ${stderr.trim()} ${errorLog().trim().split('\n').slice(-3).join(' | ')}`;
    fs.rmSync(prefix, { recursive: true, force: true });
    throw new Error(why);
  }
  return {
    port: o.listenPort,
    prefix,
    proc,
    errorLog,
    stop() {
      return new Promise<void>((resolve) => {
        const done = () => {
          fs.rmSync(prefix, { recursive: true, force: true });
          resolve();
        };
        if (!alive()) return done();
        // SIGTERM: fast shutdown, the master stops its workers before it exits.
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        proc.once('exit', () => {
          clearTimeout(t);
          done();
        });
        proc.kill('SIGTERM');
      });
    },
  };
}
