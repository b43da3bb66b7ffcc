/**
 * The master-key ring: the active key that wraps new DEKs and previous keys that can
 * still unwrap older ones. Every sub-key is derived with HKDF under a labelled info
 * string, so no derived value can be confused with another.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';

export const MASTER_KEY_LENGTH = 32;

const INFO_KEY_ID = 'sfs/v1 key id';
const INFO_KEK = 'sfs/v1 key-encryption key';
const INFO_CHECK = 'sfs/v1 key check value';

/** Derives a labelled 32-byte sub-key (HKDF-SHA256, empty salt) from a master key. */
export function deriveSubkey(master: Buffer, label: string, length = 32): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), Buffer.from(label, 'utf8'), length));
}

/** Key id: 8 bytes of HKDF output, hex. Identifies a key without revealing anything about it. */
export function keyIdOf(master: Buffer): string {
  return deriveSubkey(master, INFO_KEY_ID, 8).toString('hex');
}

/** Key check value: an HMAC under a derived key, stored in the database to detect a wrong key. */
export function checkValueOf(master: Buffer): Buffer {
  const k = deriveSubkey(master, INFO_CHECK);
  const kcv = createHmac('sha256', k).update('sfs key check value').digest();
  k.fill(0);
  return kcv;
}

export interface MasterKey {
  id: string;
  /** Key-encryption key for wrapping DEKs (never the master key itself). */
  kek: Buffer;
  checkValue: Buffer;
  /** Kept so further labelled sub-keys (audit, sessions) can be derived later. */
  material: Buffer;
}

/** Parses base64 key text into 32 bytes, or throws with a message that never echoes the text. */
export function parseMasterKey(text: string, source: string): Buffer {
  const trimmed = text.trim();
  const buf = Buffer.from(trimmed, 'base64');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) || buf.length !== MASTER_KEY_LENGTH) {
    throw new Error(`${source} must be base64 of exactly 32 bytes (create one with: npm run keygen)`);
  }
  return buf;
}

export class Keyring {
  readonly active: MasterKey;
  private readonly byId = new Map<string, MasterKey>();

  /** Builds a ring from raw keys; the first is active. Duplicate keys are ignored. */
  constructor(active: Buffer, previous: Buffer[] = []) {
    this.active = Keyring.load(active);
    this.byId.set(this.active.id, this.active);
    for (const k of previous) {
      const mk = Keyring.load(k);
      if (!this.byId.has(mk.id)) this.byId.set(mk.id, mk);
    }
  }

  private static load(material: Buffer): MasterKey {
    if (material.length !== MASTER_KEY_LENGTH) throw new RangeError('master key must be 32 bytes');
    return {
      id: keyIdOf(material),
      kek: deriveSubkey(material, INFO_KEK),
      checkValue: checkValueOf(material),
      material: Buffer.from(material),
    };
  }

  /** The key with this id, or undefined when it is not loaded. */
  get(id: string): MasterKey | undefined {
    return this.byId.get(id);
  }

  private loader: ((id: string) => Buffer | undefined | Promise<Buffer | undefined>) | undefined;

  /**
   * Installs a source for keys introduced after start-up (a rotation run beside a live
   * server); the loader must only return a key it has checked against the database.
   */
  setLoader(loader: (id: string) => Buffer | undefined | Promise<Buffer | undefined>): void {
    this.loader = loader;
  }

  /** The key with this id, asking the loader (and keeping what it returns, as a previous key) when it is not loaded. */
  async resolve(id: string): Promise<MasterKey | undefined> {
    const known = this.byId.get(id);
    if (known || !this.loader) return known;
    // Asynchronous: the loader checks the key against the database's check value.
    const material = await this.loader(id);
    if (!material) return undefined;
    const mk = Keyring.load(material);
    material.fill(0);
    if (mk.id !== id) return undefined;
    this.byId.set(id, mk);
    return mk;
  }

  /** All loaded key ids, active first. */
  ids(): string[] {
    return [...this.byId.keys()];
  }

  /** Derives a labelled sub-key of the active master key (e.g. for the audit MAC). */
  derive(label: string): Buffer {
    return deriveSubkey(this.active.material, label);
  }

  /** Constant-time comparison of a stored check value with the loaded key's. */
  static checkMatches(key: MasterKey, stored: Buffer): boolean {
    return stored.length === key.checkValue.length && timingSafeEqual(stored, key.checkValue);
  }
}
