/**
 * Signed webhook deliveries. Each POST carries the event as JSON and
 * `SFS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<body>">` under the webhook's
 * secret (as Stripe does); `SFS-Event-Id` is the idempotency key (the same on every retry).
 */
import { createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { bareHost, checkWebhookUrlForm, GUARD_REFUSED, guardedLookup, isPrivateAddress } from './net-guard.js';

/** The signature header value for a body sent at `timestamp` (unix seconds). */
export function signatureHeader(secret: string, timestamp: number, body: string): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
  return `t=${timestamp},v1=${mac}`;
}

/** What one delivery attempt came to: `ok`, or a short reason for the log (never a secret). */
export type WebhookResult = { ok: true; status: number } | { ok: false; error: string; retry: boolean };

/** POSTs one event. The address is re-checked at connection time (guardedLookup); IP literals are checked here. */
export async function postWebhook(
  urlText: string,
  event: { id: string; type: string },
  body: string,
  secret: string,
  opts: { allowPrivate: boolean; timeoutMs: number; now: number },
): Promise<WebhookResult> {
  let url: URL;
  try {
    url = checkWebhookUrlForm(urlText);
  } catch {
    return { ok: false, error: 'url refused', retry: false };
  }
  const host = bareHost(url);
  if (net.isIP(host) && !opts.allowPrivate && isPrivateAddress(host)) return { ok: false, error: 'address refused (private)', retry: false };
  const timestamp = Math.floor(opts.now / 1000);
  const lib = url.protocol === 'https:' ? https : http;
  // A fresh agent per delivery with the guard as its resolver: no pooled connection can
  // outlive a check, and every new connection is checked.
  const agent = new lib.Agent({ keepAlive: false, lookup: guardedLookup(opts.allowPrivate) } as http.AgentOptions);
  return new Promise<WebhookResult>((resolve) => {
    let settled = false;
    const done = (r: WebhookResult) => {
      if (settled) return;
      settled = true;
      agent.destroy();
      resolve(r);
    };
    const req = lib.request(
      url,
      {
        method: 'POST',
        agent,
        timeout: opts.timeoutMs,
        headers: {
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(body),
          'User-Agent': 'sfs-webhook/1',
          'SFS-Event-Id': event.id,
          'SFS-Event-Type': event.type,
          'Idempotency-Key': event.id,
          'SFS-Signature': signatureHeader(secret, timestamp, body),
        },
      },
      (res) => {
        res.resume();
        const status = res.statusCode ?? 0;
        res.on('end', () => done(status >= 200 && status < 300 ? { ok: true, status } : { ok: false, error: `HTTP ${status}`, retry: true }));
        res.on('error', () => done({ ok: false, error: `HTTP ${status} (response cut off)`, retry: true }));
      },
    );
    // Redirects are not followed (a 3xx is a failed attempt): a redirect could point inside.
    req.on('timeout', () => {
      req.destroy();
      done({ ok: false, error: 'timeout', retry: true });
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === GUARD_REFUSED) return done({ ok: false, error: 'address refused (private)', retry: false });
      done({ ok: false, error: err.code ?? 'connection failed', retry: true });
    });
    req.end(body);
  });
}
