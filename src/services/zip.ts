/**
 * The zip of a bundle: stored entries (no compression), UTF-8 names (general-purpose bit 11),
 * ZIP64 where needed (or always, when forced), fixed timestamps. A full download is written by
 * yazl from the decrypted, verified plaintext. Because every entry has a known size, a
 * recorded CRC-32 and a fixed date, the archive's exact bytes are known before streaming:
 * `layoutZip` computes yazl's layout (the data-descriptor layout it uses for streams: local
 * header with zero CRC and sizes and bit 3 set, the data, a data descriptor, then the central
 * directory), so a Range request is answered from the covering pieces alone and equals the
 * same slice of yazl's output (the tests compare them byte for byte).
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { ZipFile } from 'yazl';

/** One file of the archive, in order. */
export interface ZipEntry {
  /** The entry name as written (see zipEntryNames). */
  name: string;
  size: number;
  /** Unsigned CRC-32 of the content; needed for the bytes after the data, not for the layout. */
  crc32: number | null;
  /** The upload time (ms): the entry's date is its UTC day at 12:00 (see dosDate). */
  createdAt: number;
  /** The content's SHA-256 (hex), for the ETag: it determines the content and so the CRC. */
  sha256: string;
}

/** Where each piece of the archive lies. */
export interface ZipLayout {
  size: number;
  entries: { name: Buffer; size: number; headerOffset: number; dataOffset: number; zip64: boolean; descriptorLength: number }[];
  centralOffset: number;
  centralSize: number;
  /** Offset of the end records (ZIP64 record and locator when used, then the classic record). */
  endOffset: number;
  zip64End: boolean;
  forceZip64: boolean;
}

const LOCAL_HEADER = 30;
const CENTRAL_RECORD = 46;
const ZIP64_EXTRA = 28;
const DESCRIPTOR = 16;
const ZIP64_DESCRIPTOR = 24;
const ZIP64_END_RECORD = 56;
const ZIP64_LOCATOR = 20;
const END_RECORD = 22;
const FLAGS = (1 << 11) | (1 << 3); // UTF-8 names; CRC and sizes in the data descriptor
const MADE_BY = (3 << 8) | 63; // Unix, spec 6.3 (yazl's value)
const NEEDED = 20;
const NEEDED_ZIP64 = 45;
/** Regular file, rw-r--r--. */
export const ENTRY_MODE = 0o100644;
/** Changes whenever the bytes this module produces for the same files would change. */
const LAYOUT_VERSION = 'sfs-zip-1';

/**
 * The entry's DOS date and time: the UTC calendar day of the upload at 12:00:00. Noon, because
 * yazl encodes a Date with local-time getters: a Date built from these components in local
 * time gives the same fields in every time zone (noon is never skipped by a DST change), so
 * the bytes do not depend on where the server runs.
 */
export function dosDate(createdAt: number): { date: number; time: number; local: Date } {
  const d = new Date(createdAt);
  const y = Math.min(Math.max(d.getUTCFullYear(), 1980), 2107);
  const m = d.getUTCMonth();
  const day = d.getUTCDate();
  return { date: day | ((m + 1) << 5) | ((y - 1980) << 9), time: 12 << 11, local: new Date(y, m, day, 12, 0, 0) };
}

/**
 * Entry names for a bundle: each file's display name, made acceptable to every unzipper (no
 * separators, no drive prefix, no "." or "..") and unique ignoring case ("a (2).txt").
 */
export function zipEntryNames(names: string[]): string[] {
  const seen = new Set<string>();
  return names.map((raw) => {
    let base = raw.replace(/[\\/]/g, '_').replace(/^([A-Za-z]):/, '$1_');
    if (base === '' || base === '.' || base === '..') base = `_${base}`;
    let name = base;
    const dot = base.lastIndexOf('.');
    const [stem, ext] = dot > 0 ? [base.slice(0, dot), base.slice(dot)] : [base, ''];
    for (let n = 2; seen.has(name.toLowerCase()); n++) name = `${stem} (${n})${ext}`;
    seen.add(name.toLowerCase());
    return name;
  });
}

/** The archive's layout (and so its length) for these entries; CRCs are not needed for it. */
export function layoutZip(entries: ZipEntry[], forceZip64: boolean): ZipLayout {
  let cursor = 0;
  let central = 0;
  const out: ZipLayout['entries'] = [];
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const headerOffset = cursor;
    // yazl's rule (Entry.useZip64Format): forced, or a size or header offset past 0xfffffffe.
    const zip64 = forceZip64 || e.size > 0xfffffffe || headerOffset > 0xfffffffe;
    const dataOffset = headerOffset + LOCAL_HEADER + name.length;
    const descriptorLength = zip64 ? ZIP64_DESCRIPTOR : DESCRIPTOR;
    cursor = dataOffset + e.size + descriptorLength;
    central += CENTRAL_RECORD + name.length + (zip64 ? ZIP64_EXTRA : 0);
    out.push({ name, size: e.size, headerOffset, dataOffset, zip64, descriptorLength });
  }
  const centralOffset = cursor;
  // yazl's rule when it writes the end records (getEndOfCentralDirectoryRecord).
  const zip64End = forceZip64 || entries.length >= 0xffff || central >= 0xffffffff || centralOffset >= 0xffffffff;
  const endOffset = centralOffset + central;
  const size = endOffset + (zip64End ? ZIP64_END_RECORD + ZIP64_LOCATOR : 0) + END_RECORD;
  return { size, entries: out, centralOffset, centralSize: central, endOffset, zip64End, forceZip64 };
}

/** A strong ETag for the archive: it names the layout version, the ZIP64 choice and each entry's name, date and content. */
export function zipEtag(entries: ZipEntry[], forceZip64: boolean): string {
  const h = createHash('sha256').update(`${LAYOUT_VERSION}|${forceZip64 ? 1 : 0}|${entries.length}`);
  for (const e of entries) h.update(`|${Buffer.from(e.name).toString('base64')}|${e.size}|${e.sha256}|${dosDate(e.createdAt).date}`);
  return `"zip-${h.digest('base64url').slice(0, 32)}"`;
}

function localHeader(l: ZipLayout['entries'][number], date: { date: number; time: number }): Buffer {
  const b = Buffer.alloc(LOCAL_HEADER + l.name.length);
  b.writeUInt32LE(0x04034b50, 0);
  b.writeUInt16LE(NEEDED, 4); // yazl writes 20 here even for ZIP64 entries
  b.writeUInt16LE(FLAGS, 6);
  b.writeUInt16LE(0, 8); // stored
  b.writeUInt16LE(date.time, 10);
  b.writeUInt16LE(date.date, 12);
  // CRC-32 and sizes are 0 here: they follow the data in the descriptor (bit 3).
  b.writeUInt16LE(l.name.length, 26);
  b.writeUInt16LE(0, 28);
  l.name.copy(b, LOCAL_HEADER);
  return b;
}

function descriptor(l: ZipLayout['entries'][number], crc: number): Buffer {
  const b = Buffer.alloc(l.descriptorLength);
  b.writeUInt32LE(0x08074b50, 0);
  b.writeUInt32LE(crc, 4);
  if (l.zip64) {
    b.writeBigUInt64LE(BigInt(l.size), 8);
    b.writeBigUInt64LE(BigInt(l.size), 16);
  } else {
    b.writeUInt32LE(l.size, 8);
    b.writeUInt32LE(l.size, 12);
  }
  return b;
}

/** The central directory and the end records, from the layout and the entries' CRCs. */
function centralDirectory(layout: ZipLayout, entries: ZipEntry[], crcs: number[]): Buffer {
  const parts: Buffer[] = [];
  layout.entries.forEach((l, i) => {
    const date = dosDate(entries[i]!.createdAt);
    const b = Buffer.alloc(CENTRAL_RECORD + l.name.length + (l.zip64 ? ZIP64_EXTRA : 0));
    b.writeUInt32LE(0x02014b50, 0);
    b.writeUInt16LE(MADE_BY, 4);
    b.writeUInt16LE(l.zip64 ? NEEDED_ZIP64 : NEEDED, 6);
    b.writeUInt16LE(FLAGS, 8);
    b.writeUInt16LE(0, 10);
    b.writeUInt16LE(date.time, 12);
    b.writeUInt16LE(date.date, 14);
    b.writeUInt32LE(crcs[i]!, 16);
    b.writeUInt32LE(l.zip64 ? 0xffffffff : l.size, 20);
    b.writeUInt32LE(l.zip64 ? 0xffffffff : l.size, 24);
    b.writeUInt16LE(l.name.length, 28);
    b.writeUInt16LE(l.zip64 ? ZIP64_EXTRA : 0, 30);
    b.writeUInt16LE(0, 32); // comment
    b.writeUInt16LE(0, 34); // disk
    b.writeUInt16LE(0, 36); // internal attributes
    b.writeUInt32LE((ENTRY_MODE << 16) >>> 0, 38);
    b.writeUInt32LE(l.zip64 ? 0xffffffff : l.headerOffset, 42);
    l.name.copy(b, CENTRAL_RECORD);
    if (l.zip64) {
      const o = CENTRAL_RECORD + l.name.length;
      b.writeUInt16LE(0x0001, o);
      b.writeUInt16LE(ZIP64_EXTRA - 4, o + 2);
      b.writeBigUInt64LE(BigInt(l.size), o + 4);
      b.writeBigUInt64LE(BigInt(l.size), o + 12);
      b.writeBigUInt64LE(BigInt(l.headerOffset), o + 20);
    }
    parts.push(b);
  });
  const n = layout.entries.length;
  if (layout.zip64End) {
    const r = Buffer.alloc(ZIP64_END_RECORD);
    r.writeUInt32LE(0x06064b50, 0);
    r.writeBigUInt64LE(BigInt(ZIP64_END_RECORD - 12), 4);
    r.writeUInt16LE(MADE_BY, 12);
    r.writeUInt16LE(NEEDED_ZIP64, 14);
    r.writeBigUInt64LE(BigInt(n), 24);
    r.writeBigUInt64LE(BigInt(n), 32);
    r.writeBigUInt64LE(BigInt(layout.centralSize), 40);
    r.writeBigUInt64LE(BigInt(layout.centralOffset), 48);
    const loc = Buffer.alloc(ZIP64_LOCATOR);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(layout.endOffset), 8);
    loc.writeUInt32LE(1, 16);
    parts.push(r, loc);
  }
  const e = Buffer.alloc(END_RECORD);
  e.writeUInt32LE(0x06054b50, 0);
  const manyEntries = layout.forceZip64 || n >= 0xffff;
  e.writeUInt16LE(manyEntries ? 0xffff : n, 8);
  e.writeUInt16LE(manyEntries ? 0xffff : n, 10);
  e.writeUInt32LE(layout.forceZip64 || layout.centralSize >= 0xffffffff ? 0xffffffff : layout.centralSize, 12);
  e.writeUInt32LE(layout.forceZip64 || layout.centralOffset >= 0xffffffff ? 0xffffffff : layout.centralOffset, 16);
  parts.push(e);
  return Buffer.concat(parts);
}

/** A piece of the archive: metadata bytes, or a span of one entry's content. */
type Piece = { at: number; kind: 'meta'; bytes: () => Buffer; length: number } | { at: number; kind: 'data'; entry: number; length: number };

function pieces(layout: ZipLayout, entries: ZipEntry[], crcs: number[]): Piece[] {
  const out: Piece[] = [];
  layout.entries.forEach((l, i) => {
    const date = dosDate(entries[i]!.createdAt);
    out.push({ at: l.headerOffset, kind: 'meta', length: l.dataOffset - l.headerOffset, bytes: () => localHeader(l, date) });
    if (l.size > 0) out.push({ at: l.dataOffset, kind: 'data', entry: i, length: l.size });
    out.push({ at: l.dataOffset + l.size, kind: 'meta', length: l.descriptorLength, bytes: () => descriptor(l, crcs[i]!) });
  });
  out.push({ at: layout.centralOffset, kind: 'meta', length: layout.size - layout.centralOffset, bytes: () => centralDirectory(layout, entries, crcs) });
  return out;
}

/** Opens the verified plaintext of entry `i`, bytes [start, end] inclusive. */
export type OpenEntry = (i: number, start: number, end: number) => Promise<AsyncIterable<Buffer>>;

/**
 * Bytes [start, end] (inclusive) of the archive, built from the covering pieces only: the
 * content of an entry is opened only for the span the range covers (the vault then decrypts
 * just the covering chunks). Every entry's CRC-32 must be known.
 */
export async function* zipRange(layout: ZipLayout, entries: ZipEntry[], start: number, end: number, open: OpenEntry): AsyncGenerator<Buffer> {
  const crcs = entries.map((e) => {
    if (e.crc32 === null) throw new Error('every CRC-32 must be known for a range of the zip');
    return e.crc32;
  });
  for (const p of pieces(layout, entries, crcs)) {
    const lo = Math.max(start, p.at);
    const hi = Math.min(end, p.at + p.length - 1);
    if (lo > hi) continue;
    if (p.kind === 'meta') yield p.bytes().subarray(lo - p.at, hi - p.at + 1);
    else yield* await open(p.entry, lo - p.at, hi - p.at);
  }
}

/**
 * The whole archive, written by yazl from each entry's plaintext (opened lazily, one entry at
 * a time, in order). A failing entry stream destroys the output with its error, so the
 * response is cut, never ended cleanly.
 */
export function zipStream(entries: ZipEntry[], forceZip64: boolean, open: (i: number) => Promise<AsyncIterable<Buffer>>): Readable {
  const zip = new ZipFile();
  const out = zip.outputStream as unknown as Readable;
  const fail = (err: unknown) => out.destroy(err instanceof Error ? err : new Error(String(err)));
  zip.on('error', fail);
  entries.forEach((e, i) => {
    zip.addReadStreamLazy(
      e.name,
      { size: e.size, compress: false, mtime: dosDate(e.createdAt).local, mode: ENTRY_MODE, forceDosTimestamp: true, forceZip64Format: forceZip64 },
      (cb) => {
        open(i).then(
          (it) => {
            const rs = Readable.from(it, { objectMode: false, highWaterMark: 256 * 1024 });
            // yazl pipes this stream without watching it: its error must reach the output.
            rs.on('error', fail);
            cb(null, rs);
          },
          fail,
        );
      },
    );
  });
  zip.end({ forceZip64Format: forceZip64, comment: '' });
  return out;
}
