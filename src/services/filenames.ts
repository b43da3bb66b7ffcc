/**
 * Display names for uploaded files. A name is only ever shown and put in
 * Content-Disposition; it never becomes part of a path. Hostile names are cleaned, not refused.
 */
import mime from 'mime-types';

export const MAX_NAME_LENGTH = 255;

// Controls (Cc), every invisible format character (Cf: bidi overrides and isolates, zero-width
// characters, BOM, soft hyphen, tag characters), line/paragraph separators, and the blank
// fillers that render as nothing (combining grapheme joiner, Hangul fillers).
const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\u034f\u115f\u1160\u3164\uffa0]/gu;

/** Returns a safe display name: no path parts, no control or bidi characters, NFC, at most 255 characters. */
export function cleanFileName(raw: string | undefined | null): string {
  // Keep only the last path component, for both separators.
  let name = (raw ?? '').split(/[\\/]/).pop() ?? '';
  // Strip first, then normalise: removing an invisible character can leave a name non-NFC.
  name = name.replace(UNSAFE, '').replace(/\ufffd/g, '').normalize('NFC').trim();
  // Windows drops trailing dots and spaces, and names made only of dots mean nothing.
  // A loop, not /[. ]+$/: that pattern is retried at every dot or space of a long run and
  // goes quadratic on a hostile name (16 KiB of ". " took 185 ms).
  let end = name.length;
  while (end > 0 && (name[end - 1] === '.' || name[end - 1] === ' ')) end--;
  name = name.slice(0, end);
  // Reserved device names would make the recipient's download fail (or worse) on Windows.
  if (/^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\.|$)/i.test(name)) name = `_${name}`;
  if ([...name].length > MAX_NAME_LENGTH) {
    const chars = [...name];
    const dot = name.lastIndexOf('.');
    const ext = dot > 0 && name.length - dot <= 16 ? [...name.slice(dot)] : [];
    name = chars.slice(0, MAX_NAME_LENGTH - ext.length).join('') + ext.join('');
  }
  return name || 'file';
}

const MIME_PATTERN = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/;

/**
 * Picks the stored media type: a well-formed type the client sent (parameters dropped),
 * else a guess from the name, else application/octet-stream.
 */
export function chooseMimeType(sent: string | undefined, name: string): string {
  const base = (sent ?? '').split(';')[0]!.trim().toLowerCase();
  if (base && base !== 'application/octet-stream' && MIME_PATTERN.test(base)) return base;
  const guessed = mime.lookup(name);
  return guessed || 'application/octet-stream';
}
