/**
 * Master-key files on disk: generation (0600, never overwriting) and loading the keyring
 * from MASTER_KEY / MASTER_KEY_FILE / MASTER_KEYS_PREVIOUS.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, type Config } from './config.js';
import { Keyring, keyIdOf, parseMasterKey } from './crypto/keyring.js';
import type { Executor } from './db/database.js';
import { MasterKeysRepo } from './db/master-keys.js';

export class KeyFileExistsError extends Error {
  constructor(readonly file: string) {
    super(`${file} already exists; refusing to overwrite a master key`);
    this.name = 'KeyFileExistsError';
  }
}

/** Writes a new random master key (base64) to `file` with mode 0600; refuses if the file exists. */
export function generateKeyFile(file: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const key = randomBytes(32);
  let fd: number;
  try {
    // O_EXCL: an existing key (perhaps the only copy) is never replaced.
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new KeyFileExistsError(file);
    throw err;
  }
  try {
    fs.writeSync(fd, key.toString('base64') + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
    key.fill(0);
  }
  fs.chmodSync(file, 0o600);
}

export interface KeyringLoad {
  keyring: Keyring;
  /** Set when a development key file was generated on this start. */
  generatedFile?: string;
}

/**
 * Loads the keyring. The key file may hold several lines: the first is the active key,
 * the rest are previous keys (as are MASTER_KEYS_PREVIOUS). Without any key, development
 * generates one; production refuses.
 */
export function loadKeyring(config: Config, opts: { mayGenerate?: boolean } = {}): KeyringLoad {
  let generatedFile: string | undefined;
  const keys: Buffer[] = [];
  if (config.masterKey) {
    keys.push(parseMasterKey(config.masterKey, 'MASTER_KEY'));
  }
  if (!config.masterKey) {
    if (!fs.existsSync(config.masterKeyFile)) {
      if (opts.mayGenerate === false) {
        throw new ConfigError(
          'MASTER_KEY_FILE',
          `${config.masterKeyFile} is missing, but the database already uses a master key: restore the key file from its backup ` +
            `(a new key could not read any stored file)`,
        );
      }
      if (config.env === 'production') {
        throw new ConfigError(
          'MASTER_KEY',
          `no master key: set MASTER_KEY, or create ${config.masterKeyFile} with "npm run keygen" (and back it up apart from the data)`,
        );
      }
      generateKeyFile(config.masterKeyFile);
      generatedFile = config.masterKeyFile;
    }
    const lines = readKeyLines(config.masterKeyFile);
    if (lines.length === 0) throw new ConfigError('MASTER_KEY_FILE', `${config.masterKeyFile} holds no key`);
    lines.forEach((l, i) => keys.push(parseMasterKey(l, `MASTER_KEY_FILE (${config.masterKeyFile}, key line ${i + 1})`)));
  }
  config.masterKeysPrevious.forEach((k, i) => keys.push(parseMasterKey(k, `MASTER_KEYS_PREVIOUS (entry ${i + 1})`)));
  const [active, ...previous] = keys;
  const keyring = new Keyring(active!, previous);
  keys.forEach((k) => k.fill(0));
  return { keyring, generatedFile };
}

/**
 * The key lines of a key file, refusing a file that group or others can access: a master key
 * readable by another account is as good as published (e.g. `cat a b > both` under umask 022
 * makes a 0644 file). The mode is checked on the open descriptor, so it is the file read.
 */
function readKeyLines(file: string): string[] {
  const fd = fs.openSync(file, 'r');
  try {
    const mode = fs.fstatSync(fd).mode & 0o777;
    // Windows has no POSIX permission bits to check.
    if (process.platform !== 'win32' && (mode & 0o077) !== 0) {
      throw new ConfigError(
        'MASTER_KEY_FILE',
        `${file} is accessible to group or others (mode ${mode.toString(8).padStart(4, '0')}); a master key must be private: chmod 600 ${file}`,
      );
    }
    return fs
      .readFileSync(fd, 'utf8')
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * For a running server: a loader that, asked for a key id the keyring lacks (a rotation ran
 * with a key the server was not started with), re-reads the key file and returns that key
 * only if the file now holds it and it matches the check value the database recorded for it.
 * Returns undefined otherwise (env-configured keys cannot change; the file is re-parsed only
 * when it changed since the last look, so a flood of requests costs one stat each).
 */
export function keyFileLoader(config: Config, db: Executor, onProblem: (message: string) => void = () => {}): (keyId: string) => Promise<Buffer | undefined> {
  // Per key id: the key file's state at the last fruitless look.
  const seen = new Map<string, string>();
  return async (keyId) => {
    if (config.masterKey) return undefined;
    let stamp: string;
    try {
      const st = fs.statSync(config.masterKeyFile);
      stamp = `${st.ino}:${st.mode}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    } catch {
      return undefined;
    }
    if (seen.get(keyId) === stamp) return undefined;
    seen.set(keyId, stamp);
    const row = (await new MasterKeysRepo(db).list()).find((r) => r.keyId === keyId);
    if (!row) return undefined;
    let lines: string[];
    try {
      lines = readKeyLines(config.masterKeyFile);
    } catch (err) {
      onProblem((err as Error).message);
      return undefined;
    }
    for (const line of lines) {
      let material: Buffer;
      try {
        material = parseMasterKey(line, 'MASTER_KEY_FILE');
      } catch {
        continue;
      }
      if (keyIdOf(material) === keyId && Keyring.checkMatches(new Keyring(material).active, row.checkValue)) return material;
      material.fill(0);
    }
    return undefined;
  };
}
