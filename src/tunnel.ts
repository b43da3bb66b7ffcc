/**
 * `npm run tunnel`: opens an ngrok tunnel with the official SDK (@ngrok/ngrok), then starts
 * the server (dist/main.js) with PUBLIC_URL set to the tunnel's URL and TRUST_PROXY trusting
 * only the local tunnel hop. The SDK's forward() is passed in, so tests can put a stand-in
 * in its place while everything else runs for real (see tunnel-main.ts for the real wiring).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { isIP } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from './config.js';

/** The part of an ngrok Listener this uses. */
export interface TunnelListener {
  url(): string | null;
  close(): Promise<void>;
}

/** The options of ngrok.forward() this passes (a subset of the SDK's Config). */
export interface ForwardConfig {
  addr: string;
  authtoken: string;
  domain?: string;
  verify_upstream_tls?: boolean;
}

/** ngrok.forward() from @ngrok/ngrok, or a stand-in. */
export type ForwardFn = (config: ForwardConfig) => Promise<TunnelListener>;

export interface TunnelDeps {
  env: Record<string, string | undefined>;
  forward: ForwardFn;
  /** Progress output (stderr in real use); the server's stderr is relayed here too. */
  log: (text: string) => void;
  /** The server entry point; defaults to dist/main.js next to this file. */
  mainScript?: string;
  cwd?: string;
}

export interface RunningTunnel {
  url: string;
  port: number;
  server: ChildProcess;
  /** Resolves with the server's exit code, after the tunnel has been closed. */
  exited: Promise<number | null>;
  /** Stops the server (SIGTERM by default) and closes the tunnel. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** A problem the user can fix; the message is meant to be printed as is. */
export class TunnelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TunnelError';
  }
}

export const NO_TOKEN_MESSAGE = `npm run tunnel needs an ngrok authtoken in NGROK_AUTHTOKEN.
  1. Sign up (free) and copy your token from https://dashboard.ngrok.com/get-started/your-authtoken
  2. NGROK_AUTHTOKEN=<your token> npm run tunnel     (or put NGROK_AUTHTOKEN in .env)
  Or run the ngrok agent yourself: see "Expose it with ngrok" in README.md.`;

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'main.js');

/** Where the tunnel connects to, and which address that local hop comes from. */
function upstream(host: string): { host: string; trust: string } {
  if (['0.0.0.0', '::', 'localhost'].includes(host) || host.startsWith('127.')) return { host: '127.0.0.1', trust: 'loopback' };
  if (host === '::1') return { host: '[::1]', trust: 'loopback' };
  // A specific interface: the agent in this process connects from that same address.
  if (isIP(host) === 4) return { host, trust: `loopback, ${host}` };
  if (isIP(host) === 6) return { host: `[${host}]`, trust: `loopback, ${host}` };
  throw new TunnelError(`HOST=${host}: npm run tunnel needs HOST to be an IP address (the default 127.0.0.1 is best)`);
}

/** Opens the tunnel, then starts the server behind it; resolves once the server listens. */
export async function startTunnel(d: TunnelDeps): Promise<RunningTunnel> {
  const authtoken = d.env.NGROK_AUTHTOKEN?.trim();
  if (!authtoken) throw new TunnelError(NO_TOKEN_MESSAGE);
  const config = loadConfig(d.env, d.cwd);
  if (config.port === 0) throw new TunnelError('PORT=0: the tunnel needs a fixed port (the default is 3000)');
  const up = upstream(config.host);
  const scheme = config.tls ? 'https' : 'http';
  const addr = config.tls ? `https://${up.host}:${config.port}` : `${up.host}:${config.port}`;
  const secret = (text: string) => text.split(authtoken).join('[NGROK_AUTHTOKEN]');

  let listener: TunnelListener;
  try {
    listener = await d.forward({
      addr,
      authtoken,
      ...(d.env.NGROK_DOMAIN?.trim() ? { domain: d.env.NGROK_DOMAIN.trim() } : {}),
      // The hop is to this machine, usually with a self-signed certificate.
      ...(config.tls ? { verify_upstream_tls: false } : {}),
    });
  } catch (err) {
    throw new TunnelError(`could not open the ngrok tunnel: ${secret((err as Error).message ?? String(err))}`);
  }
  const url = listener.url()?.replace(/\/+$/, '');
  if (!url) {
    await listener.close().catch(() => undefined);
    throw new TunnelError('ngrok opened a listener without a URL');
  }

  if (d.env.TRUST_PROXY?.trim() && d.env.TRUST_PROXY.trim() !== up.trust) {
    d.log(`sfs tunnel: TRUST_PROXY=${d.env.TRUST_PROXY.trim()} replaced by "${up.trust}": only the local tunnel hop is trusted\n`);
  }
  if (config.publicUrl && config.publicUrl !== url) d.log(`sfs tunnel: PUBLIC_URL=${config.publicUrl} replaced by the tunnel URL\n`);

  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(d.env)) if (v !== undefined && k !== 'NGROK_AUTHTOKEN') env[k] = v;
  env.PUBLIC_URL = url;
  env.TRUST_PROXY = up.trust;
  const server = spawn(process.execPath, [d.mainScript ?? MAIN], { env, cwd: d.cwd, stdio: ['ignore', 'inherit', 'pipe'] });

  let closed: Promise<void> | undefined;
  const closeTunnel = () => (closed ??= listener.close().catch((err: Error) => d.log(`sfs tunnel: closing the tunnel failed: ${secret(err.message)}\n`)));
  const exited = new Promise<number | null>((resolve) => {
    server.on('exit', (code) => void closeTunnel().then(() => resolve(code)));
  });

  let stderr = '';
  const port = await new Promise<number>((resolve, reject) => {
    server.stderr!.on('data', (chunk: Buffer) => {
      d.log(chunk.toString());
      stderr += chunk.toString();
      const m = /listening on https?:\/\/[^\s:]+:(\d+)/.exec(stderr);
      if (m) resolve(Number(m[1]));
    });
    void exited.then((code) => reject(new TunnelError(`the server did not start (exit code ${code}); see its message above`)));
  });

  d.log(
    `\n  ngrok tunnel: ${url}  ->  ${scheme}://${up.host}:${port}\n` +
      `  Share links use PUBLIC_URL=${url}; TRUST_PROXY=${up.trust} (only the local tunnel hop).\n` +
      `  API reference: ${url}/api/docs\n`,
  );
  if (/setup code/i.test(stderr)) {
    d.log(
      `\n  !! No account exists yet, and the URL above is public. Create the first admin NOW,\n` +
        `  !! from this machine, before you share the URL:\n` +
        `       curl -X POST http://localhost:${port}/api/v1/setup -H 'Content-Type: application/json' \\\n` +
        `            -d '{"setupCode":"<code above>","username":"admin","password":"<at least 10 characters>"}'\n`,
    );
  }
  d.log('  Ctrl-C stops the server and closes the tunnel.\n\n');

  return {
    url,
    port,
    server,
    exited,
    stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (server.exitCode === null && server.signalCode === null) server.kill(signal);
      return exited;
    },
  };
}
