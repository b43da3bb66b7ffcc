/** Schema migrations, one numbered list per dialect; applyMigrations picks the database's. */
import type { Database } from '../database.js';
import { migrate as migratePostgres } from './postgres.js';
import { migrate as migrateSqlite } from './sqlite.js';

/** Brings the database's schema to the newest version this server knows; returns that version. */
export async function applyMigrations(db: Database): Promise<number> {
  switch (db.dialect) {
    case 'sqlite':
      return migrateSqlite(db.raw!);
    case 'postgres':
      return migratePostgres(db);
    default:
      throw new Error(`no migrations for database dialect ${String(db.dialect)}`);
  }
}
