#!/usr/bin/env node
/**
 * The `sfs` command line: host-side operations that read the same configuration as the
 * server. Passwords are read from a prompt or stdin, never from argv (argv is visible to
 * every user of the host through ps).
 */
import 'dotenv/config';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config.js';
import { openDatabase } from '../db/database.js';
import { AppError } from '../errors.js';
import { KeyFileExistsError, generateKeyFile } from '../keyfile.js';
import { AccountsService } from '../services/accounts.js';
import { PasswordHasher } from '../services/passwords.js';

const HELP: Record<string, string> = {
  main: `Usage: sfs <command> [options]

Commands:
  key generate [--out FILE]      write a new random master key (mode 0600); never overwrites
  user create NAME [--admin]     create a user; the password is read from a prompt or stdin

Every command reads the same settings as the server (environment and .env).
Run "sfs <command> --help" for details.`,
  'key generate': `Usage: sfs key generate [--out FILE]

Writes 32 random bytes, base64, to FILE (default: MASTER_KEY_FILE, ./master.key) with
mode 0600. Refuses to overwrite an existing file. Back the key up apart from the data.`,
  'user create': `Usage: sfs user create NAME [--admin]

Creates a user (role "user", or "admin" with --admin). The password (at least 10
characters) is read from the terminal without echo, or from the first line of stdin.
Creating a user closes the first-run setup.`,
};

class UsageError extends Error {}

async function readPassword(): Promise<string> {
  if (!process.stdin.isTTY) {
    const rl = readline.createInterface({ input: process.stdin });
    for await (const line of rl) {
      rl.close();
      return line;
    }
    throw new UsageError('no password on stdin');
  }
  const ask = (prompt: string) =>
    new Promise<string>((resolve) => {
      const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: true });
      // Mute the echo of typed characters.
      (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = (s: string) => {
        if (s.includes(prompt)) process.stdout.write(prompt);
      };
      rl.question(prompt, (answer) => {
        rl.close();
        process.stdout.write('\n');
        resolve(answer);
      });
    });
  const a = await ask('Password: ');
  const b = await ask('Repeat password: ');
  if (a !== b) throw new UsageError('the passwords do not match');
  return a;
}

async function run(argv: string[]): Promise<number> {
  const [group, action, ...rest] = argv;
  const name = `${group ?? ''} ${action ?? ''}`.trim();
  if (!group || group === '--help' || group === '-h' || group === 'help') {
    process.stdout.write(HELP.main + '\n');
    return group ? 0 : 2;
  }
  if (!HELP[name]) throw new UsageError(`unknown command "${name}"\n\n${HELP.main}`);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(HELP[name] + '\n');
    return 0;
  }
  const config = loadConfig();

  if (name === 'key generate') {
    const { values } = parseArgs({ args: rest, options: { out: { type: 'string' } }, strict: true });
    const file = values.out ? path.resolve(values.out) : config.masterKeyFile;
    generateKeyFile(file);
    process.stdout.write(`Wrote a new master key to ${file} (mode 0600).\nBack it up now, separately from data/ and uploads/.\n`);
    return 0;
  }

  if (name === 'user create') {
    const { values, positionals } = parseArgs({ args: rest, options: { admin: { type: 'boolean', default: false } }, allowPositionals: true, strict: true });
    const username = positionals[0];
    if (!username || positionals.length > 1) throw new UsageError(HELP[name]);
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(username)) throw new UsageError('NAME: use 1-64 letters, digits, dot, underscore or hyphen');
    const password = await readPassword();
    fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    const db = openDatabase(config.dbFile);
    try {
      const accounts = new AccountsService({ db, hasher: new PasswordHasher(1), tokenDefaultTtl: config.tokenDefaultTtl, tokenMaxTtl: config.tokenMaxTtl });
      const user = await accounts.createUser(username, password, values.admin ? 'admin' : 'user');
      // Any user closes the first-run setup; its code is useless from now on.
      fs.rmSync(path.join(config.dataDir, 'setup-code'), { force: true });
      process.stdout.write(`Created ${user.role} "${user.username}" (${user.id}).\n`);
    } finally {
      db.close();
    }
    return 0;
  }
  return 2;
}

run(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    if (err instanceof UsageError || err instanceof ConfigError || err instanceof KeyFileExistsError) {
      process.stderr.write(`sfs: ${err.message}\n`);
      process.exit(2);
    }
    if (err instanceof AppError) {
      process.stderr.write(`sfs: ${err.detail}\n`);
      process.exit(1);
    }
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`sfs: ${(err as Error).message}\n`);
      process.exit(2);
    }
    process.stderr.write(`sfs: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
