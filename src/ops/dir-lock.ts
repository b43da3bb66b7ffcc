/**
 * One owner per data directory. The server and the commands that must not run beside it
 * (`sfs restore`) hold an exclusive OS lock on `DATA_DIR/sfs.lock` for as long as they run.
 *
 * Why an OS lock and not a pid file: a pid file is only a claim, and a second process that
 * ignores it (or deletes it on exit) lets two writers split the data. Node has no flock, and
 * we add no dependency for one, so the lock is an SQLite database held in an EXCLUSIVE
 * transaction: SQLite takes a POSIX fcntl write lock on the file, which another process
 * cannot take, and which the OS drops when the holder dies in any way (even SIGKILL), so a
 * crash never leaves a stale lock behind. The lock file itself holds nothing.
 *
 * `sfs.lock.json` beside it says who holds the lock (pid, role, since), for the message a
 * refused process prints. It is information only: the lock is the truth.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';

export const LOCK_FILE = 'sfs.lock';
const HOLDER_FILE = 'sfs.lock.json';

/** Who holds a data directory, as its holder wrote it down. */
export interface LockHolder {
  pid: number;
  who: string;
  since: string;
}

/** Thrown when another process holds the data directory; `code` is stable. */
export class DataDirLockedError extends Error {
  readonly code = 'data_dir_locked';

  constructor(
    readonly dir: string,
    readonly holder: LockHolder | null,
  ) {
    super(
      holder
        ? `the data directory ${dir} is in use: the ${holder.who} is running (pid ${holder.pid}, since ${holder.since}); stop it first`
        : `the data directory ${dir} is in use by another sfs process; stop it first`,
    );
    this.name = 'DataDirLockedError';
  }
}

/** A held lock on a data directory; released by release() or by the process ending. */
export interface DataDirLock {
  readonly dir: string;
  release(): void;
}

function readHolder(dir: string): LockHolder | null {
  try {
    const h = JSON.parse(fs.readFileSync(path.join(dir, HOLDER_FILE), 'utf8')) as LockHolder;
    return Number.isInteger(h.pid) && typeof h.who === 'string' ? h : null;
  } catch {
    return null;
  }
}

/**
 * Takes the exclusive lock on `dir` (created if missing) for `who` ("server", "restore"),
 * or throws DataDirLockedError at once (never waits) if another process or connection holds it.
 */
export function acquireDataDirLock(dir: string, who: string): DataDirLock {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, LOCK_FILE);
  fs.closeSync(fs.openSync(file, 'a', 0o600));
  const db = new Database(file, { timeout: 0 });
  try {
    // The lock is never given back before close, and no journal is ever written.
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code === 'SQLITE_BUSY' || (err as { code?: string }).code === 'SQLITE_LOCKED') {
      throw new DataDirLockedError(dir, readHolder(dir));
    }
    throw err;
  }
  const holderFile = path.join(dir, HOLDER_FILE);
  const me: LockHolder = { pid: process.pid, who, since: new Date().toISOString() };
  fs.writeFileSync(holderFile, JSON.stringify(me) + '\n', { mode: 0o600 });
  let held = true;
  return {
    dir,
    release() {
      if (!held) return;
      held = false;
      // Only our own note is removed; a later holder's is left alone.
      if (readHolder(dir)?.pid === process.pid) fs.rmSync(holderFile, { force: true });
      try {
        db.exec('ROLLBACK');
      } finally {
        db.close();
      }
    },
  };
}
