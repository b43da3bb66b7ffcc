/**
 * The single-writer operation lock: backup, restore, key rotation, re-encryption and migrate
 * each hold it for as long as they run, so two of them never run at once, on one host or on
 * several instances sharing the database. It is a row in `op_locks` (both dialects), taken in
 * one transaction (serialised across instances: BEGIN IMMEDIATE on SQLite, the transaction
 * advisory lock on PostgreSQL) that refuses while an unexpired row of another holder exists.
 *
 * Why a row with an expiry rather than a session advisory lock: it works the same on SQLite,
 * it names its holder for the refusal message, and it needs no connection pinned for hours.
 * The holder renews it while running; a holder that dies (even by SIGKILL) stops renewing and
 * its row expires after `ttlMs`, so a crash never blocks operations for good.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { Database } from '../db/database.js';
import { AppError } from '../errors.js';

/** The one lock every single-writer operation takes. */
export const OPS_LOCK = 'single-writer';

/** A held operation lock; release() is idempotent. */
export interface OpLock {
  readonly holder: string;
  /** False once a renewal found the lock taken over (it had expired): stop writing. */
  held(): boolean;
  release(): Promise<void>;
}

export interface OpLockOptions {
  /** How long the lock outlives its last renewal (default 60 s). */
  ttlMs?: number;
  name?: string;
}

/**
 * Takes the operation lock for `what` ("backup", "key rotate"…) or throws AppError
 * 'conflict' at once (never waits) naming the current holder. Renews itself every ttl/3.
 */
export async function acquireOpLock(db: Database, what: string, opts: OpLockOptions = {}): Promise<OpLock> {
  const ttlMs = opts.ttlMs ?? 60_000;
  const name = opts.name ?? OPS_LOCK;
  // Random per acquisition, so only this holder renews or releases (a pid repeats across hosts).
  const token = randomBytes(16).toString('hex');
  const now = Date.now();
  const holder = `${what} (pid ${process.pid} on ${os.hostname()}, since ${new Date(now).toISOString()})`;
  const other = await db.transaction(async (trx) => {
    const row = await trx.selectFrom('op_locks').select(['holder', 'expires_at']).where('name', '=', name).executeTakeFirst();
    if (row && row.expires_at > now) return row.holder;
    await trx.deleteFrom('op_locks').where('name', '=', name).execute();
    await trx.insertInto('op_locks').values({ name, token, holder, acquired_at: now, expires_at: now + ttlMs }).execute();
    return null;
  });
  if (other !== null) throw new AppError('conflict', `another single-writer operation holds the operation lock: ${other}; wait for it to finish`);
  let held = true;
  let released = false;
  const renew = async () => {
    try {
      const r = await db.kysely
        .updateTable('op_locks')
        .set({ expires_at: Date.now() + ttlMs })
        .where('name', '=', name)
        .where('token', '=', token)
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) held = false;
    } catch {
      // A failed renewal (database briefly away) is retried at the next tick; expiry decides.
    }
  };
  const timer = setInterval(() => void renew(), Math.max(1000, Math.floor(ttlMs / 3)));
  timer.unref();
  return {
    holder,
    held: () => held && !released,
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      await db.kysely.deleteFrom('op_locks').where('name', '=', name).where('token', '=', token).execute();
    },
  };
}

/** Runs `fn` while holding the operation lock; released however `fn` ends. */
export async function withOpLock<T>(db: Database, what: string, fn: (lock: OpLock) => Promise<T>, opts?: OpLockOptions): Promise<T> {
  const lock = await acquireOpLock(db, what, opts);
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}

/**
 * Takes the named job lease (e.g. the purge job's) if nobody holds it, in ONE statement: an
 * insert that, on a row already there, takes it over only when that row has expired. So of
 * any number of instances trying at once exactly one gets it, on SQLite and on PostgreSQL
 * alike, and a holder that died (SIGKILL) is replaced once its row expires. Null when held.
 * The holder renews it every ttl/3 until release().
 */
export async function tryLease(db: Database, name: string, what: string, ttlMs: number): Promise<OpLock | null> {
  const token = randomBytes(16).toString('hex');
  const now = Date.now();
  const holder = `${what} (pid ${process.pid} on ${os.hostname()}, since ${new Date(now).toISOString()})`;
  const taken = await db.kysely
    .insertInto('op_locks')
    .values({ name, token, holder, acquired_at: now, expires_at: now + ttlMs })
    .onConflict((oc) =>
      oc
        .column('name')
        .doUpdateSet({ token, holder, acquired_at: now, expires_at: now + ttlMs })
        .where('op_locks.expires_at', '<=', now),
    )
    .returning('token')
    .executeTakeFirst();
  if (taken?.token !== token) return null;
  let held = true;
  let released = false;
  const timer = setInterval(() => {
    void db.kysely
      .updateTable('op_locks')
      .set({ expires_at: Date.now() + ttlMs })
      .where('name', '=', name)
      .where('token', '=', token)
      .executeTakeFirst()
      .then((r) => {
        if (Number(r.numUpdatedRows) !== 1) held = false;
      })
      .catch(() => {
        /* retried at the next tick; expiry decides */
      });
  }, Math.max(1000, Math.floor(ttlMs / 3)));
  timer.unref();
  return {
    holder,
    held: () => held && !released,
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      await db.kysely.deleteFrom('op_locks').where('name', '=', name).where('token', '=', token).execute();
    },
  };
}
