/**
 * SSRF guard for webhooks: which addresses a webhook may reach, checked when the URL is set
 * AND again when each connection is made (a DNS name can resolve to another address later:
 * DNS rebinding), through a custom `lookup` on the HTTP agent.
 */
import dns from 'node:dns';
import net from 'node:net';
import { AppError } from '../../errors.js';

// Everything that is not a public unicast address: the firm's network, this host, the cloud
// metadata service (169.254.169.254), multicast and reserved ranges.
const BLOCKED = new net.BlockList();
for (const [a, p] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  BLOCKED.addSubnet(a, p, 'ipv4');
for (const [a, p] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const)
  BLOCKED.addSubnet(a, p, 'ipv6');

/** True for an address a webhook may not reach unless private targets are allowed (IPv4-mapped IPv6 is judged as its IPv4). */
export function isPrivateAddress(ip: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return isPrivateAddress(mapped[1]!);
  const family = net.isIP(ip);
  if (family === 4) return BLOCKED.check(ip, 'ipv4');
  if (family === 6) {
    // ::ffff:7f00:1 and friends: the hex spelling of a mapped IPv4 address.
    const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(ip);
    if (hex) {
      const hi = parseInt(hex[1]!, 16);
      const lo = parseInt(hex[2]!, 16);
      return isPrivateAddress(`${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`);
    }
    return BLOCKED.check(ip, 'ipv6');
  }
  return true;
}

const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * Checks a webhook URL's form: https, or http to a loopback host (a receiver on this
 * machine), no credentials, no fragment. Throws webhook_url_refused.
 */
export function checkWebhookUrlForm(text: string): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new AppError('webhook_url_refused', 'url: expected an absolute https:// URL');
  }
  if (text.length > 2000) throw new AppError('webhook_url_refused', 'url: at most 2000 characters');
  if (u.username || u.password) throw new AppError('webhook_url_refused', 'url: must not carry a user name or password');
  if (u.hash) throw new AppError('webhook_url_refused', 'url: must not have a #fragment');
  const loopback = LOOPBACK_NAMES.has(u.hostname.toLowerCase()) || /^127\.\d+\.\d+\.\d+$/.test(u.hostname);
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && loopback)) {
    throw new AppError('webhook_url_refused', 'url: must be https:// (plain http:// only to a loopback address)');
  }
  return u;
}

/** The host of a URL as net/dns want it (IPv6 literals without brackets). */
export function bareHost(u: URL): string {
  return u.hostname.replace(/^\[(.*)\]$/, '$1');
}

/** Resolves a host and refuses it when any address is private (unless allowed). Throws webhook_url_refused. */
export async function checkHostAllowed(host: string, allowPrivate: boolean): Promise<void> {
  if (allowPrivate) return;
  let addresses: string[];
  if (net.isIP(host)) addresses = [host];
  else {
    try {
      addresses = (await dns.promises.lookup(host, { all: true, verbatim: true })).map((a) => a.address);
    } catch {
      throw new AppError('webhook_url_refused', 'url: the host name does not resolve');
    }
  }
  if (addresses.length === 0 || addresses.some(isPrivateAddress)) {
    throw new AppError('webhook_url_refused', 'url: resolves to a private, loopback or link-local address (an administrator can allow these: WEBHOOK_ALLOW_PRIVATE)');
  }
}

/** Error code of a connection refused by the guard (shown in the delivery log). */
export const GUARD_REFUSED = 'ERR_SFS_ADDRESS_REFUSED';

/**
 * A dns.lookup replacement for http(s).Agent: resolves as usual and fails the connection when
 * the address it would use is private (unless allowed), so the check holds at connect time.
 */
export function guardedLookup(allowPrivate: boolean): net.LookupFunction {
  return ((hostname: string, options: dns.LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void) => {
    dns.lookup(hostname, { ...options, verbatim: true }, (err, address, family) => {
      if (err) return callback(err, address, family);
      const list = Array.isArray(address) ? address.map((a) => a.address) : [address as string];
      if (!allowPrivate && list.some(isPrivateAddress)) {
        const refused = Object.assign(new Error(`address refused for ${hostname}`), { code: GUARD_REFUSED }) as NodeJS.ErrnoException;
        return callback(refused, address, family);
      }
      callback(null, address, family);
    });
  }) as net.LookupFunction;
}
