/**
 * Entry point of `npm run tunnel` (side effects only): the real @ngrok/ngrok SDK, signals,
 * and the exit code. The wiring itself is in tunnel.ts.
 */
import 'dotenv/config';
import { ConfigError } from './config.js';
import { startTunnel, TunnelError, type ForwardConfig, type TunnelListener } from './tunnel.js';

/** ngrok.forward() from the official SDK, loaded only when a tunnel is really opened. */
async function forward(config: ForwardConfig): Promise<TunnelListener> {
  const ngrok = await import('@ngrok/ngrok');
  return ngrok.forward(config);
}

/** Opens the tunnel and waits for the server; user errors become one line and exit 1. */
async function main(): Promise<void> {
  let tunnel;
  try {
    tunnel = await startTunnel({ env: process.env, forward, log: (text) => process.stderr.write(text) });
  } catch (err) {
    if (err instanceof TunnelError || err instanceof ConfigError) {
      process.stderr.write(`\nsfs tunnel: ${err.message}\n\n`);
      process.exit(1);
    }
    throw err;
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => void tunnel.stop(signal));
  process.exit((await tunnel.exited) ?? 1);
}

main().catch((err) => {
  process.stderr.write(`sfs tunnel: fatal: ${(err as Error).message}\n`);
  process.exit(1);
});
