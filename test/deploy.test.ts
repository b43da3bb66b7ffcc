/**
 * The files docs/deploy.md ships: the nginx configuration (rendered as the guide says, checked
 * by nginx itself, then run in front of a real instance), the systemd unit
 * (systemd-analyze verify), the environment file (accepted by the configuration loader), and
 * a server started from a built tree with production dependencies only.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parse as parseEnv } from 'dotenv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const NGINX = fs.existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : null;
const REQUIRE = process.env.REQUIRE_SERVICES === '1';
if (!NGINX) {
  if (REQUIRE) throw new Error('REQUIRE_SERVICES=1 but nginx is not installed (apt-get install -y nginx)');
  console.log('  SKIPPED the nginx checks of deploy/nginx.conf: no /usr/sbin/nginx (apt-get install -y nginx)');
}
const SYSTEMD_ANALYZE = spawnSync('systemd-analyze', ['--version']).status === 0;
const NGINX_VARS = ['SFS_LISTEN', 'SFS_SERVER_NAME', 'SFS_UPSTREAMS', 'SFS_TLS_CERT', 'SFS_TLS_KEY', 'SFS_NGINX_STATE'];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-deploy-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Renders deploy/nginx.conf with envsubst exactly as docs/deploy.md shows. */
function renderNginx(vars: Record<string, string>): string {
  const r = spawnSync('envsubst', [NGINX_VARS.map((v) => `\${${v}}`).join(' ')], {
    input: fs.readFileSync(path.join(ROOT, 'deploy', 'nginx.conf')),
    env: { PATH: process.env.PATH ?? '', ...vars },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`envsubst failed: ${r.stderr}`);
  return r.stdout;
}

/** A rendered configuration in its own state directory, with a throwaway certificate. */
function nginxSetup(name: string, listen: string, upstreams: number[]): { conf: string; state: string } {
  const state = path.join(tmp, name);
  fs.mkdirSync(state, { recursive: true });
  const cert = path.join(state, 'cert.pem');
  const key = path.join(state, 'key.pem');
  const ssl = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-keyout', key, '-out', cert, '-subj', '/CN=localhost'], { encoding: 'utf8' });
  if (ssl.status !== 0) throw new Error(`openssl: ${ssl.stderr}`);
  const text = renderNginx({
    SFS_LISTEN: listen,
    SFS_SERVER_NAME: 'localhost',
    SFS_UPSTREAMS: upstreams.map((p) => `server 127.0.0.1:${p} max_fails=3 fail_timeout=10s;`).join(' '),
    SFS_TLS_CERT: cert,
    SFS_TLS_KEY: key,
    SFS_NGINX_STATE: state,
  });
  const conf = path.join(state, 'nginx.conf');
  fs.writeFileSync(conf, text);
  return { conf, state };
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

describe.runIf(NGINX)('deploy/nginx.conf', () => {
  it('renders with only its own variables replaced, and nginx -t accepts it', () => {
    const { conf, state } = nginxSetup('check', '127.0.0.1:18443 ssl', [13001, 13002, 13003]);
    const text = fs.readFileSync(conf, 'utf8');
    expect(text).not.toMatch(/\$\{SFS_/);
    // nginx's own variables survive the substitution.
    expect(text).toContain('proxy_set_header X-Forwarded-For $remote_addr;');
    expect(text).toContain('server 127.0.0.1:13003 max_fails=3 fail_timeout=10s;');
    for (const d of ['proxy_request_buffering off;', 'proxy_buffering off;', 'client_max_body_size 0;', 'proxy_read_timeout 300s;', 'X-Forwarded-Proto $scheme']) expect(text).toContain(d);
    const r = spawnSync(NGINX!, ['-t', '-p', state, '-c', conf], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('test is successful');
    expect(r.stderr).not.toMatch(/\[warn\]|\[emerg\]/);
  });
});

describe.runIf(SYSTEMD_ANALYZE)('deploy/sfs.service', () => {
  it('passes systemd-analyze verify without a warning and has the hardening the guide names', () => {
    const unit = path.join(ROOT, 'deploy', 'sfs.service');
    const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    // Unknown keys are only warnings to systemd-analyze; here they fail.
    expect(r.stderr.trim()).toBe('');
    const text = fs.readFileSync(unit, 'utf8');
    for (const line of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'ReadWritePaths=/var/lib/sfs', 'PrivateTmp=yes', 'LoadCredential=master-key:/etc/sfs/master-key', 'Environment=MASTER_KEY_FILE=%d/master-key', 'Environment=NODE_ENV=production']) {
      expect(text.split('\n')).toContain(line);
    }
  });
});

describe('deploy/sfs.env.example', () => {
  it('is a configuration the server accepts', () => {
    const env = parseEnv(fs.readFileSync(path.join(ROOT, 'deploy', 'sfs.env.example')));
    const ca = path.join(tmp, 'db-ca.pem');
    fs.writeFileSync(ca, 'placeholder');
    const config = loadConfig({ ...env, DATABASE_SSL_CA_FILE: ca, NODE_ENV: 'production', MASTER_KEY_FILE: '/run/credentials/sfs.service/master-key' }, tmp);
    expect(config.database.kind).toBe('postgres');
    expect(config.storage).toMatchObject({ kind: 's3', bucket: 'sfs-files', prefix: 'prod/' });
    expect(config.trustProxy).toBe('10.0.0.10');
  });
});

describe('a built tree with production dependencies only', () => {
  const tree = path.join(tmp, 'release');
  let server: ChildProcess | undefined;
  let port = 0;
  let stderr = '';

  beforeAll(async () => {
    for (const p of ['dist', 'package.json', 'package-lock.json', 'views', 'public']) fs.cpSync(path.join(ROOT, p), path.join(tree, p), { recursive: true });
    // --ignore-scripts keeps this to seconds: the packages whose install scripts the project
    // allows (package.json "allowScripts") build native addons, which takes a minute for
    // better-sqlite3. Their build output from this checkout is copied in instead: the same
    // Node, the same sources, so it is what `npm ci --omit=dev` would have compiled
    // (docs/deploy.md runs that, scripts included). argon2's shipped linux prebuild is not
    // enough on every machine, which is why its install script builds one too.
    const ci = spawnSync('npm', ['ci', '--omit=dev', '--ignore-scripts', '--offline', '--no-audit', '--no-fund'], { cwd: tree, encoding: 'utf8' });
    if (ci.status !== 0) throw new Error(`npm ci failed: ${ci.stderr}`);
    const allowed = Object.entries((JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { allowScripts: Record<string, boolean> }).allowScripts);
    for (const [name, ok] of allowed) {
      const built = path.join(ROOT, 'node_modules', name, 'build');
      if (ok && fs.existsSync(path.join(tree, 'node_modules', name)) && fs.existsSync(built)) fs.cpSync(built, path.join(tree, 'node_modules', name, 'build'), { recursive: true });
    }
    expect(fs.existsSync(path.join(tree, 'node_modules', 'vitest'))).toBe(false);
    const key = path.join(tree, 'master.key');
    fs.writeFileSync(key, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
    server = spawn(process.execPath, ['dist/main.js'], {
      cwd: tree,
      env: { PATH: process.env.PATH ?? '', NODE_ENV: 'production', HOST: '127.0.0.1', PORT: '0', DATA_DIR: path.join(tree, 'var', 'data'), UPLOADS_DIR: path.join(tree, 'var', 'uploads'), MASTER_KEY_FILE: key, TRUST_PROXY: 'loopback', LOG_LEVEL: 'warn' },
    });
    port = await new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 30_000);
      server!.stderr!.on('data', (c) => {
        stderr += c;
        const m = /listening on http:\/\/[^:]+:(\d+)/.exec(stderr);
        if (m) {
          clearTimeout(t);
          resolve(Number(m[1]));
        }
      });
      server!.on('exit', (code) => reject(new Error(`server exited (${code}): ${stderr}`)));
    });
  });
  afterAll(() => {
    server?.kill('SIGTERM');
  });

  it('starts and answers /healthz, a page and the API document', async () => {
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    // The pages (views/, public/, ejs) and the OpenAPI document (package.json) load too.
    expect((await fetch(`http://127.0.0.1:${port}/login`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/api/v1/openapi.json`)).status).toBe(200);
  });

  it.runIf(NGINX)('behind the shipped nginx configuration over TLS', async () => {
    const listen = await freePort();
    const { conf, state } = nginxSetup('run', `127.0.0.1:${listen} ssl`, [port]);
    const nginx = spawn(NGINX!, ['-p', state, '-c', conf, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let nginxErr = '';
    nginx.stderr!.on('data', (c) => (nginxErr += c));
    try {
      const get = (p: string) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          https
            .get({ host: '127.0.0.1', port: listen, path: p, rejectUnauthorized: false }, (res) => {
              let body = '';
              res.on('data', (c) => (body += c));
              res.on('end', () => resolve({ status: res.statusCode!, body }));
            })
            .on('error', reject);
        });
      let r: { status: number; body: string } | undefined;
      for (let i = 0; i < 50 && !r; i++) r = await get('/healthz').catch(async () => void (await new Promise((w) => setTimeout(w, 100))));
      expect(r, nginxErr).toMatchObject({ status: 200, body: '{"status":"ok"}' });
    } finally {
      nginx.kill('SIGTERM');
    }
  });
});
