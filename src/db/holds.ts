/**
 * Repository for legal holds. A file is held when it, its owner or the upload request it came
 * through has a row here; `notHeld` is the one SQL condition every delete and purge statement
 * carries, so the check and the deletion are one statement and no release can slip between.
 */
import type { RawBuilder } from 'kysely';
import { sql } from './kysely.js';
import type { Executor } from './database.js';

export type HoldScope = 'file' | 'user' | 'request';

export interface HoldRow {
  scope: HoldScope;
  targetId: string;
  reason: string;
  reference: string | null;
  placedBy: string;
  placedAt: number;
}

/**
 * The SQL condition "the files row aliased `files` is under no hold": none on the file, on its
 * owner, or on the upload request it arrived through.
 */
export function notHeld(): RawBuilder<boolean> {
  return sql<boolean>`NOT EXISTS (SELECT 1 FROM legal_holds h WHERE (h.scope = 'file' AND h.target_id = files.id) OR (h.scope = 'user' AND h.target_id = files.owner_id) OR (h.scope = 'request' AND h.target_id = files.request_id))`;
}

export class HoldsRepo {
  constructor(private readonly db: Executor) {}

  /** Places or replaces the hold on one target (one statement); returns the hold as stored. */
  async put(h: HoldRow): Promise<HoldRow> {
    await this.db
      .insertInto('legal_holds')
      .values({ scope: h.scope, target_id: h.targetId, reason: h.reason, reference: h.reference, placed_by: h.placedBy, placed_at: h.placedAt })
      .onConflict((oc) => oc.columns(['scope', 'target_id']).doUpdateSet({ reason: h.reason, reference: h.reference, placed_by: h.placedBy, placed_at: h.placedAt }))
      .execute();
    return h;
  }

  /** Releases the hold on one target; the released hold, or undefined when there was none. */
  async release(scope: HoldScope, targetId: string): Promise<HoldRow | undefined> {
    const r = await this.db.deleteFrom('legal_holds').where('scope', '=', scope).where('target_id', '=', targetId).returningAll().executeTakeFirst();
    return r && toHold(r);
  }

  async get(scope: HoldScope, targetId: string): Promise<HoldRow | undefined> {
    const r = await this.db.selectFrom('legal_holds').selectAll().where('scope', '=', scope).where('target_id', '=', targetId).executeTakeFirst();
    return r && toHold(r);
  }

  /** The holds that keep this file (its own, its owner's, its request's). */
  async holdsOnFile(file: { id: string; ownerId: string; requestId?: string | null }): Promise<HoldRow[]> {
    const rows = await this.db
      .selectFrom('legal_holds')
      .selectAll()
      .where((eb) =>
        eb.or([
          eb.and([eb('scope', '=', 'file'), eb('target_id', '=', file.id)]),
          eb.and([eb('scope', '=', 'user'), eb('target_id', '=', file.ownerId)]),
          ...(file.requestId ? [eb.and([eb('scope', '=', 'request'), eb('target_id', '=', file.requestId)])] : []),
        ]),
      )
      .orderBy('scope')
      .execute();
    return rows.map(toHold);
  }

  /** Of these files (all owned by `ownerId`), the ids under a hold (one query, the same condition deletes use). */
  async heldAmong(ownerId: string, fileIds: string[]): Promise<Set<string>> {
    if (fileIds.length === 0) return new Set();
    const rows = await this.db.selectFrom('files').select('id').where('owner_id', '=', ownerId).where('id', 'in', fileIds).where(sql<boolean>`NOT ${notHeld()}`).execute();
    return new Set(rows.map((r) => r.id));
  }

  /** Whether the user, or any file of theirs, is held (such a user cannot be deleted). */
  async userHasHeldFiles(userId: string): Promise<boolean> {
    if (await this.get('user', userId)) return true;
    const r = await this.db.selectFrom('files').select('id').where('owner_id', '=', userId).where(sql<boolean>`NOT ${notHeld()}`).limit(1).executeTakeFirst();
    return r !== undefined;
  }
}

function toHold(r: { scope: HoldScope; target_id: string; reason: string; reference: string | null; placed_by: string; placed_at: number }): HoldRow {
  return { scope: r.scope, targetId: r.target_id, reason: r.reason, reference: r.reference, placedBy: r.placed_by, placedAt: Number(r.placed_at) };
}
