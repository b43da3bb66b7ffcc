/**
 * Master-key files on disk: generation (0600, never overwriting) and loading the keyring
 * from MASTER_KEY / MASTER_KEY_FILE / MASTER_KEYS_PREVIOUS.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, type Config } from './config.js';
import { Keyring, parseMasterKey } from './crypto/keyring.js';

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
    const lines = fs
      .readFileSync(config.masterKeyFile, 'utf8')
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    if (lines.length === 0) throw new ConfigError('MASTER_KEY_FILE', `${config.masterKeyFile} holds no key`);
    lines.forEach((l, i) => keys.push(parseMasterKey(l, `MASTER_KEY_FILE (${config.masterKeyFile}, key line ${i + 1})`)));
  }
  config.masterKeysPrevious.forEach((k, i) => keys.push(parseMasterKey(k, `MASTER_KEYS_PREVIOUS (entry ${i + 1})`)));
  const [active, ...previous] = keys;
  const keyring = new Keyring(active!, previous);
  keys.forEach((k) => k.fill(0));
  return { keyring, generatedFile };
}
