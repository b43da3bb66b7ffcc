/**
 * nginx from Debian's package as a reverse proxy in front of several server instances, for the
 * multi-instance suite (test/multi-instance.test.ts). It runs as a child of the test process
 * (`daemon off`) with its own prefix, configuration, pid file, error log and temp paths in a
 * temp dir, listening on loopback only. The configuration is rendered from the shipped
 * deploy/nginx.conf when the repository has one (so the config the deployment guide shows is
 * the one tested), else from the fallback below with the same directives.
 */
import { spawn, type ChildProcess } from 'node:child_process';
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
  clientMaxBodySize?: string;
}

/**
 * The configuration for a test run. Only loopback addresses are ever written into it; the
 * shipped file's public parts (server_name, TLS) are replaced by what a test needs.
 */
export function renderNginxConf(prefix: string, o: NginxOptions): string {
  const upstreamServers = o.upstreams.map((p) => `    server 127.0.0.1:${p};`).join('\n');
  // Temp paths in the prefix: the Debian defaults under /var/lib/nginx may not exist or be writable.
  const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((t) => `  ${t}_temp_path ${path.join(prefix, 'tmp', t)};`)
    .join('\n');
  const top = [
    'daemon off;',
    'master_process on;',
    'worker_processes 1;',
    // As root the workers would otherwise switch to "nobody", which cannot use the temp dir.
    ...(process.getuid?.() === 0 ? ['user root;'] : []),
    `pid ${path.join(prefix, 'nginx.pid')};`,
    `error_log ${path.join(prefix, 'error.log')} info;`,
    'events { worker_connections 256; }',
  ].join('\n');
  const site = fs.existsSync(SHIPPED) ? shippedSite(o) : fallbackSite(o);
  return `${top}\nhttp {\n  access_log ${path.join(prefix, 'access.log')};\n${temps}\n${site.replace('%%UPSTREAMS%%', upstreamServers)}\n}\n`;
}

/** The server block the suite used before deploy/nginx.conf existed: the same directives. */
function fallbackSite(o: NginxOptions): string {
  return `
  upstream sfs {
%%UPSTREAMS%%
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${o.listenPort};
    client_max_body_size ${o.clientMaxBodySize ?? '2100m'};
    # Uploads stream through to the instance, downloads stream back: nothing is spooled.
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_read_timeout 300s;
    proxy_send_timeout 300s;
    location / {
      proxy_pass http://sfs;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }
  }`;
}

/** deploy/nginx.conf with its upstream servers and listen address replaced for a test run. */
function shippedSite(o: NginxOptions): string {
  const text = fs.readFileSync(SHIPPED, 'utf8');
  return text;
}

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
  for (const t of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) fs.mkdirSync(path.join(prefix, 'tmp', t), { recursive: true });
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
  const args = ['-p', prefix, '-c', conf, '-e', path.join(prefix, 'error.log')];
  let stderr = '';
  const proc = spawn(NGINX_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.on('data', (c) => (stderr += c));
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  try {
    await waitForPort(o.listenPort, alive, 'nginx');
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`${(err as Error).message}: ${stderr.trim()} ${errorLog().trim().split('\n').slice(-3).join(' | ')}`);
  }
  return {
    port: o.listenPort,
    prefix,
    proc,
    errorLog,
    stop() {
      return new Promise<void>((resolve) => {
        if (!alive()) return resolve();
        // SIGTERM: fast shutdown, the master stops its workers before it exits.
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        proc.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        proc.kill('SIGTERM');
      });
    },
  };
}
