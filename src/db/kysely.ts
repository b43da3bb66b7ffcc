/**
 * Kysely's runtime, loaded from its CommonJS build. Its ES module build is some 280 files,
 * and Node's ES module loader keeps about 6 MiB more resident for them than the CommonJS
 * loader does; the server's memory bound (test/server.test.ts) has no room for that.
 * Types still come from `import type ... from 'kysely'` (the same declarations).
 */
import { createRequire } from 'node:module';
import type * as K from 'kysely';

const kysely = createRequire(import.meta.url)('kysely') as typeof K;

export const { Kysely, SqliteDialect, SqliteDriver, PostgresAdapter, PostgresDialect, PostgresDriver, CompiledQuery, sql } = kysely;
