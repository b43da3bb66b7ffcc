/**
 * Where the audit chain's head is kept outside the database, so that rows cut off the end of
 * the log show (services/audit.ts). A head is only `{seq, mac}` of a row already committed:
 * no secret (the MAC is a chain value, not a key) and nothing a reader could use.
 *
 * The one rule every backend keeps: a head that is lost, overwritten by an older one, or
 * never written only weakens the check (fewer rows are covered); it can never make an intact
 * chain fail, because every head ever written names a row that exists. That is why no
 * conditional write is needed anywhere (Swift's s3api, among others, has none).
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';

export interface AuditHead {
  seq: number;
  mac: string;
}

export interface AuditHeadStore {
  /** Every head recorded outside the database (at most one on disk; one per writer in a bucket). */
  readAll(): Promise<AuditHead[]>;
  /** Records this writer's newest head; never replaces a newer head of this writer with an older one. */
  write(head: AuditHead): Promise<void>;
  /** Replaces every recorded head with `head`, or removes them all (null): for a restore. */
  replace(head: AuditHead | null): Promise<void>;
  /** Where the heads are, for messages (a file path or an s3:// location). */
  describe(): string;
}

/** The head in a stored text, or null when it is not one (a torn or foreign file counts as none). */
export function parseHead(text: string): AuditHead | null {
  try {
    const h = JSON.parse(text) as Partial<AuditHead>;
    return Number.isSafeInteger(h.seq) && (h.seq as number) > 0 && typeof h.mac === 'string' && /^[0-9a-f]{64}$/.test(h.mac)
      ? { seq: h.seq as number, mac: h.mac }
      : null;
  } catch {
    return null;
  }
}

/** The bytes a head is stored as. */
export function headText(head: AuditHead): string {
  return JSON.stringify({ seq: head.seq, mac: head.mac }) + '\n';
}

/**
 * The single-node layout: one file (`data/audit-head`), shared by the server and `sfs`
 * commands on the same host. A write reads the file first and only moves it forward, then
 * replaces it atomically (temp file + rename), as it always has, so existing data
 * directories keep working unchanged.
 */
export class FileAuditHeads implements AuditHeadStore {
  constructor(readonly file: string) {}

  async readAll(): Promise<AuditHead[]> {
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const h = parseHead(text);
    return h ? [h] : [];
  }

  async write(head: AuditHead): Promise<void> {
    const [current] = await this.readAll().catch(() => []);
    if (current && current.seq >= head.seq) return;
    const tmp = `${this.file}.${process.pid}.tmp`;
    await fsp.writeFile(tmp, headText(head), { mode: 0o600 });
    await fsp.rename(tmp, this.file);
  }

  async replace(head: AuditHead | null): Promise<void> {
    if (!head) return fsp.rm(this.file, { force: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    await fsp.writeFile(tmp, headText(head), { mode: 0o600 });
    await fsp.rename(tmp, this.file);
  }

  describe(): string {
    return this.file;
  }

  /** The head in the file, read synchronously (the old `readHead`), or null. */
  readSync(): AuditHead | null {
    try {
      return parseHead(fs.readFileSync(this.file, 'utf8'));
    } catch {
      return null;
    }
  }
}
