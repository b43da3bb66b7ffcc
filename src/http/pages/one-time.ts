/**
 * New secrets (a link, an API token) shown on exactly one page view: the POST that creates
 * one keeps it in the session and redirects (303) to a GET page; that GET takes it out and
 * shows it, so a reload shows "already shown" instead of creating another. The session row
 * is in the database, so the secret is kept there sealed (AES-256-GCM under a key derived
 * from the master key, bound to the session id and the page), never in the clear.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Request } from 'express';
import type { Keyring } from '../../crypto/keyring.js';

declare module 'express-session' {
  interface SessionData {
    /** At most one secret waiting for its one view. */
    oneTime?: { kind: string; ref: string; sealed: string };
  }
}

const LABEL = 'sfs/v1 one-time view';

export class OneTimeView {
  private readonly key: Buffer;

  constructor(keyring: Keyring) {
    this.key = keyring.derive(LABEL);
  }

  /** Keeps `payload` for the next GET that takes the same kind and ref (replacing any earlier one). */
  put(req: Request, kind: string, ref: string, payload: unknown): void {
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, nonce);
    c.setAAD(this.aad(req, kind, ref));
    const body = Buffer.concat([c.update(JSON.stringify(payload), 'utf8'), c.final()]);
    req.session.oneTime = { kind, ref, sealed: Buffer.concat([nonce, body, c.getAuthTag()]).toString('base64url') };
  }

  /** Removes and returns the waiting payload for kind and ref, or null when it was shown already (or never kept). */
  take<T>(req: Request, kind: string, ref: string): T | null {
    // Express answers HEAD with the GET route; a HEAD (a link checker, a prefetch) shows nothing,
    // so it must not use up the one view.
    if (req.method === 'HEAD') return null;
    const held = req.session?.oneTime;
    if (!held || held.kind !== kind || held.ref !== ref) return null;
    delete req.session.oneTime;
    try {
      const raw = Buffer.from(held.sealed, 'base64url');
      const d = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, 12));
      d.setAAD(this.aad(req, kind, ref));
      d.setAuthTag(raw.subarray(raw.length - 16));
      return JSON.parse(Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]).toString('utf8')) as T;
    } catch {
      // Sealed under another session id or key: treat it as already shown.
      return null;
    }
  }

  private aad(req: Request, kind: string, ref: string): Buffer {
    return Buffer.from(`${kind}|${ref}|${req.sessionID}`, 'utf8');
  }
}
