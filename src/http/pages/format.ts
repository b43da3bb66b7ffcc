/** Human forms of sizes and times for the pages (the API keeps bytes and ISO 8601). */
import { humanSize } from '../routes/recipient.js';

export { humanSize };

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => String(n).padStart(2, '0');

/** "7 Mar 2026, 14:05 UTC": unambiguous in every locale (public/app.js shows local time on top). */
export function humanTime(ms: number): string {
  const d = new Date(ms);
  return `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()}, ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
}

/** "in 7 days", "3 minutes ago", "just now": the coarsest unit that fits. */
export function relativeTime(ms: number, now: number = Date.now()): string {
  const diff = ms - now;
  const abs = Math.abs(diff);
  if (abs < 45_000) return 'just now';
  const units: [number, string][] = [
    [365 * 86400_000, 'year'],
    [30 * 86400_000, 'month'],
    [86400_000, 'day'],
    [3600_000, 'hour'],
    [60_000, 'minute'],
  ];
  for (const [size, name] of units) {
    if (abs >= size || name === 'minute') {
      const n = Math.max(1, Math.round(abs / size));
      const text = `${n} ${name}${n === 1 ? '' : 's'}`;
      return diff > 0 ? `in ${text}` : `${text} ago`;
    }
  }
  return 'just now';
}

/** A duration in words for select options: 3600 -> "1 hour", 604800 -> "7 days". */
export function humanDuration(seconds: number): string {
  const units: [number, string][] = [
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
  ];
  for (const [size, name] of units) {
    if (seconds >= size && seconds % size === 0) {
      const n = seconds / size;
      return `${n} ${name}${n === 1 ? '' : 's'}`;
    }
  }
  return `${seconds} seconds`;
}

/** The first characters of a hex SHA-256, enough to tell files apart at a glance. */
export function shortHash(hex: string): string {
  return hex.slice(0, 12);
}

/** A size as an admin would type it, without rounding: "10GiB", "500MiB", or plain bytes. */
export function exactSize(n: number): string {
  for (const [size, unit] of [[1024 ** 4, 'TiB'], [1024 ** 3, 'GiB'], [1024 ** 2, 'MiB'], [1024, 'KiB']] as const) {
    if (n >= size && n % size === 0) return `${n / size}${unit}`;
  }
  return String(n);
}
