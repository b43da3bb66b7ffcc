/**
 * Dialect-neutral table dumps for backup, restore and migrate: one JSON-lines file per table,
 * each line one row as a JSON object, blobs (BLOB / BYTEA: wrapped keys, MACs, hashes) as
 * `{"$b64": "..."}`. Rows are copied verbatim: wrapped DEKs, keyed hashes and integrity MACs
 * stay exactly what they were, so nothing is unwrapped or re-sealed on the way, and a dump
 * from SQLite loads into PostgreSQL and back.
 */
import BetterSqlite3 from 'better-sqlite3';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import type { Database, Trx } from '../db/database.js';
import { sql } from '../db/kysely.js';
import type { Schema } from '../db/schema.js';

/** Tables that are never dumped: schema bookkeeping and the operation lock of the source. */
const NOT_DUMPED = new Set(['schema_version', 'op_locks']);

/**
 * Load order: referenced tables before the tables referencing them. Tables this list does
 * not name (added by later migrations) load after it, in name order.
 */
const LOAD_ORDER = ['master_keys', 'secrets', 'users', 'api_tokens', 'upload_requests', 'files', 'shares', 'share_files', 'share_reservations', 'share_ticket_downloads', 'audit_events', 'sessions', 'notification_settings', 'webhooks', 'notification_outbox', 'sign_in_addresses', 'share_recipients'];

export type Row = Record<string, unknown>;

/** What one table's dump holds. */
export interface TableDump {
  name: string;
  file: string;
  rows: number;
  sha256: string;
}

/** Orders table names for loading (see LOAD_ORDER). */
export function loadOrder(names: string[]): string[] {
  const known = LOAD_ORDER.filter((n) => names.includes(n));
  return [...known, ...names.filter((n) => !LOAD_ORDER.includes(n)).sort()];
}

function encodeRow(row: Row): string {
  const out: Row = {};
  for (const [k, v] of Object.entries(row)) out[k] = Buffer.isBuffer(v) || v instanceof Uint8Array ? { $b64: Buffer.from(v).toString('base64') } : v;
  return JSON.stringify(out);
}

function decodeRow(line: string): Row {
  const row = JSON.parse(line) as Row;
  for (const [k, v] of Object.entries(row)) {
    if (v && typeof v === 'object' && typeof (v as { $b64?: unknown }).$b64 === 'string') row[k] = Buffer.from((v as { $b64: string }).$b64, 'base64');
  }
  return row;
}

/** A consistent, read-only view of every table of a database, read row by row. */
export interface Snapshot {
  schemaVersion: number;
  tables: string[];
  rows(table: string): AsyncIterable<Row>;
  close(): Promise<void>;
}

const safeName = (t: string) => {
  // Table names come from the catalogue, but they are spliced into SQL: allow plain names only.
  if (!/^[a-z_][a-z0-9_]*$/.test(t)) throw new Error(`unexpected table name ${JSON.stringify(t)}`);
  return t;
};

/** A snapshot of a SQLite file that nobody else writes (an online-backup copy, or a locked source). */
export function sqliteFileSnapshot(file: string): Snapshot {
  const copy = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
  const tables = (copy.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[])
    .map((r) => r.name)
    .filter((n) => !NOT_DUMPED.has(n));
  return {
    schemaVersion: copy.pragma('user_version', { simple: true }) as number,
    tables,
    async *rows(table) {
      // better-sqlite3 iterates one row at a time: memory stays flat with the table size.
      for (const r of copy.prepare(`SELECT * FROM ${safeName(table)}`).iterate()) yield r as Row;
    },
    async close() {
      copy.close();
    },
  };
}

/**
 * A REPEATABLE READ, READ ONLY transaction on one dedicated PostgreSQL connection: every table
 * is read from the same snapshot. Deliberately not db.transaction(): that takes the
 * transaction advisory lock, which would stop every instance's writes for the whole dump. A
 * snapshot needs no lock: every writer's transaction is atomic, so it sees each whole or not.
 */
export async function postgresSnapshot(db: Database): Promise<Snapshot> {
  if (!db.pool) throw new Error('postgresSnapshot needs a PostgreSQL database');
  const client = await db.pool.connect();
  let open = true;
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const tables = (
      await client.query<{ table_name: string }>(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name",
      )
    ).rows
      .map((r) => r.table_name)
      .filter((n) => !NOT_DUMPED.has(n));
    const v = await client.query<{ version: number }>('SELECT version FROM schema_version');
    return {
      schemaVersion: v.rows[0]?.version ?? 0,
      tables,
      async *rows(table) {
        // A cursor inside the snapshot transaction: a page at a time, never the whole table.
        await client.query(`DECLARE dump_cursor NO SCROLL CURSOR FOR SELECT * FROM ${safeName(table)}`);
        try {
          for (;;) {
            const page = await client.query<Row>('FETCH 500 FROM dump_cursor');
            for (const r of page.rows) yield r;
            if (page.rows.length < 500) break;
          }
        } finally {
          await client.query('CLOSE dump_cursor');
        }
      },
      async close() {
        if (!open) return;
        open = false;
        try {
          await client.query('COMMIT');
        } finally {
          client.release();
        }
      },
    };
  } catch (err) {
    client.release(err as Error);
    throw err;
  }
}

/**
 * Writes every table of the snapshot into `dir/tables/<name>.jsonl` (mode 0600, fsynced).
 * `onRow` sees each row as read (backup collects the file ids it must copy from it).
 */
export async function writeDump(snap: Snapshot, dir: string, onRow?: (table: string, row: Row) => void): Promise<TableDump[]> {
  const tdir = path.join(dir, 'tables');
  await fsp.mkdir(tdir, { recursive: true, mode: 0o700 });
  const out: TableDump[] = [];
  for (const name of snap.tables) {
    const file = path.join('tables', `${name}.jsonl`);
    const fh = await fsp.open(path.join(dir, file), 'w', 0o600);
    const h = createHash('sha256');
    let rows = 0;
    let buf = '';
    try {
      for await (const r of snap.rows(name)) {
        onRow?.(name, r);
        buf += encodeRow(r) + '\n';
        rows++;
        if (buf.length > 1 << 20) {
          h.update(buf);
          await fh.write(buf);
          buf = '';
        }
      }
      h.update(buf);
      await fh.write(buf);
      await fh.sync();
    } finally {
      await fh.close();
    }
    out.push({ name, file, rows, sha256: h.digest('hex') });
  }
  return out;
}

/** Every row of one table dump, decoded. */
export async function* readDump(dir: string, t: TableDump): AsyncGenerator<Row> {
  const rl = readline.createInterface({ input: fs.createReadStream(path.join(dir, t.file), { encoding: 'utf8' }), crlfDelay: Infinity });
  for await (const line of rl) if (line) yield decodeRow(line);
}

/** The SHA-256 of a dump file as stored (to check it against the manifest). */
export async function sha256Of(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The schema version a database is at (PRAGMA user_version, or schema_version on PostgreSQL). */
export async function schemaVersionOf(db: Database): Promise<number> {
  if (db.dialect === 'sqlite') return db.raw!.pragma('user_version', { simple: true }) as number;
  const { rows } = await sql<{ version: number }>`SELECT version FROM schema_version`.execute(db.kysely);
  return rows[0]?.version ?? 0;
}

/** Tables of `db` holding any row (ignoring the operation lock): a restore target must have none. */
export async function nonEmptyTables(db: Database, tables: string[]): Promise<string[]> {
  const busy: string[] = [];
  for (const t of tables) {
    const { rows } = await sql<{ one: number }>`SELECT 1 AS one FROM ${sql.table(safeName(t))} LIMIT 1`.execute(db.kysely);
    if (rows.length) busy.push(t);
  }
  return busy;
}

/**
 * Inserts every dumped row into `trx` (one transaction: the target shows all of it or none),
 * in load order, then deletes `droppedFiles` (files deleted while the backup ran; their links
 * go with them by ON DELETE CASCADE). Local file reads only: no network inside the transaction.
 */
export async function loadDump(trx: Trx, dir: string, tables: TableDump[], droppedFiles: string[] = []): Promise<number> {
  let n = 0;
  const byName = new Map(tables.map((t) => [t.name, t]));
  for (const name of loadOrder([...byName.keys()])) {
    const t = byName.get(name)!;
    let batch: Row[] = [];
    const flush = async () => {
      if (!batch.length) return;
      await trx.insertInto(safeName(name) as keyof Schema).values(batch as never).execute();
      n += batch.length;
      batch = [];
    };
    for await (const r of readDump(dir, t)) {
      batch.push(r);
      if (batch.length >= 200) await flush();
    }
    await flush();
  }
  for (const id of droppedFiles) await trx.deleteFrom('files').where('id', '=', id).execute();
  return n;
}
