/**
 * Bundle links: one share link for several files, each downloadable on its own or all at
 * once as a zip whose exact bytes are known before streaming (services/zip.ts).
 *
 * Budget: a bundle is one link with one budget, counted as for a single file where "the file"
 * is the bundle. A response that delivers the last byte of the zip, or of one of its files,
 * needs a completion slot and counts one download when it completes; responses under one
 * download ticket (the recipient page's) share one slot and count once, so one complete zip or
 * one complete set of the files fetched from the page is one download. Every response reserves
 * its bytes against a ceiling of (N + 1) × the zip's size. Without a ticket (curl), each
 * completed file is a download of its own: the zip is the way to fetch everything at once.
 */
import { crc32 } from 'node:zlib';
import type { FileRow } from '../db/files.js';
import { ShareFilesRepo } from '../db/share-files.js';
import type { Database } from '../db/database.js';
import type { IntegrityKeys } from './integrity.js';
import { SharesService, type Reservation, type Ticket } from './shares.js';
import type { ShareRow } from '../db/shares.js';
import type { VaultService } from './vault.js';
import { IntegrityError } from '../crypto/format.js';
import { layoutZip, zipEntryNames, zipEtag, type ZipEntry, type ZipLayout } from './zip.js';

export interface BundlesDeps {
  db: Database;
  shares: SharesService;
  vault: VaultService;
  integrity: IntegrityKeys;
  /** Write every zip in ZIP64 form (BUNDLE_ZIP64=always). */
  forceZip64: boolean;
  now?: () => number;
}

/** A live bundle link as a request sees it. */
export interface ResolvedBundle {
  share: ShareRow;
  ticket: Ticket | null;
  repeat: boolean;
  /** The files still in the bundle, in order. */
  files: FileRow[];
  /** How many of its files were deleted since the link was made. */
  withdrawn: number;
  /** The zip's entries (one per file, same order), layout and strong ETag. */
  entries: ZipEntry[];
  layout: ZipLayout;
  etag: string;
}

export class BundlesService {
  readonly members: ShareFilesRepo;
  private readonly now: () => number;

  /** Whether every zip is written in ZIP64 form. */
  readonly forceZip64: boolean;

  constructor(private readonly deps: BundlesDeps) {
    this.members = new ShareFilesRepo(deps.db.kysely, deps.integrity);
    this.forceZip64 = deps.forceZip64;
    this.now = deps.now ?? Date.now;
  }

  /**
   * Resolves a token to a live bundle, or null (unknown, revoked, expired, used up, not a
   * bundle, no files left). A used-up link still resolves for a ticket whose download was counted.
   */
  async resolve(token: string, ticketText?: string): Promise<ResolvedBundle | null> {
    const found = await this.deps.shares.lookup(token, ticketText);
    if (!found || !found.share.bundle) return null;
    const members = await this.members.members(found.share.id, found.share.ownerId);
    // A file past its expiry (and not on hold) is withdrawn at once, as for single links.
    const now = this.now();
    const files: FileRow[] = [];
    for (const f of members.files) if (!(await this.deps.shares.expired(f, now))) files.push(f);
    const withdrawn = members.withdrawn + (members.files.length - files.length);
    if (files.length === 0) return null;
    const names = zipEntryNames(files.map((f) => f.name));
    const entries: ZipEntry[] = files.map((f, i) => ({ name: names[i]!, size: f.size, crc32: f.crc32 ?? null, createdAt: f.createdAt, sha256: f.sha256.toString('hex') }));
    const layout = layoutZip(entries, this.deps.forceZip64);
    const reason = SharesService.unavailableReason(found.share, layout.size, now);
    if (reason && !(reason === 'exhausted' && found.repeat)) return null;
    return { ...found, files, withdrawn, entries, layout, etag: zipEtag(entries, this.deps.forceZip64) };
  }

  /** Reserves budget for one response of this bundle (see the module comment); null when it does not fit. */
  reserve(b: ResolvedBundle, bytes: number, deliversLastByte: boolean): Promise<Reservation | null> {
    return this.deps.shares.reserve(b, bytes, deliversLastByte, b.layout.size);
  }

  /**
   * Fills in the CRC-32 of entries whose file predates recorded CRCs: each such file is
   * decrypted and verified whole once (SHA-256 included), and its CRC recorded on the row.
   */
  async ensureCrcs(b: ResolvedBundle): Promise<void> {
    for (let i = 0; i < b.files.length; i++) {
      if (b.entries[i]!.crc32 !== null) continue;
      const f = b.files[i]!;
      let crc = 0;
      for await (const piece of await this.deps.vault.open(f, { start: 0, end: f.size - 1 })) crc = crc32(piece, crc);
      await this.deps.vault.files.recordCrc32(f.id, crc);
      b.entries[i]!.crc32 = crc;
    }
  }

  /**
   * The verified plaintext of entry `i` for the full zip, with its CRC-32 checked: the last
   * piece is held back until the CRC equals the recorded one (a mismatch is an integrity
   * failure, as the zip's Range answers are built from the recorded value). A file without a
   * recorded CRC gets it recorded once it has been read whole.
   */
  async *fullEntry(b: ResolvedBundle, i: number): AsyncGenerator<Buffer> {
    const f = b.files[i]!;
    const expected = b.entries[i]!.crc32;
    const it = await this.deps.vault.open(f, { start: 0, end: f.size - 1 });
    let crc = 0;
    let held: Buffer | undefined;
    for await (const piece of it) {
      if (held) yield held;
      crc = crc32(piece, crc);
      held = piece;
    }
    if (expected !== null && crc !== expected) throw new IntegrityError('CRC-32 of the decrypted file does not match the record');
    if (expected === null) await this.deps.vault.files.recordCrc32(f.id, crc);
    if (held) yield held;
  }
}
