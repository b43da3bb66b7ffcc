/**
 * Removing a departing user: their files are either handed to another user or deleted (one of
 * the two is required, so nothing is lost or kept by accident), their links and tokens end for
 * good, and the user row goes. Shared by the admin page and `sfs user delete`.
 */
import type { Database } from '../db/database.js';
import { FilesRepo } from '../db/files.js';
import { UsersRepo } from '../db/users.js';
import { SharesRepo } from '../db/shares.js';
import { AppError } from '../errors.js';
import type { AccountsService } from './accounts.js';
import type { AuditInput } from './audit.js';
import type { VaultService } from './vault.js';
import { HoldsRepo } from '../db/holds.js';

export interface OffboardingDeps {
  db: Database;
  accounts: AccountsService;
  vault: VaultService;
  /** Ends the user's browser sessions (the server's session store). */
  endSessions?: (userId: string) => Promise<unknown> | void;
  /** Records one audit event; `base` (actor, client) is merged in by the caller. */
  record: (event: Omit<AuditInput, 'actor'>) => Promise<unknown> | void;
  /** Removes the user's resumable uploads with their stored ciphertext (services/tus.ts removeUploadsOf). */
  dropUploads?: (userId: string) => Promise<unknown>;
}

export type FilesDecision = { transferTo: string } | { deleteFiles: true };

export interface DeleteUserResult {
  userId: string;
  username: string;
  mode: 'transfer' | 'delete';
  files: number;
  bytes: number;
  revokedShares: number;
  revokedTokens: number;
  receiverId: string | null;
  /** The receiver's quota is exceeded after the transfer (allowed: the admin decided). */
  receiverOverQuota: boolean;
}

const PAGE = 200;

/**
 * Deletes a user after transferring or deleting every file they own. The user is disabled
 * first (tokens and links revoked, sessions ended), so nothing new arrives while files move.
 * Each file moved or deleted is audited (file.transfer / file.delete) and the whole as user.delete.
 */
export async function deleteUser(d: OffboardingDeps, userId: string, decision: FilesDecision): Promise<DeleteUserResult> {
  const user = await d.accounts.users.byId(userId);
  if (!user) throw new AppError('not_found', 'no such user');
  const receiver = 'transferTo' in decision ? await d.accounts.users.byId(decision.transferTo) : undefined;
  if ('transferTo' in decision) {
    if (!receiver) throw new AppError('not_found', 'no such user to transfer the files to');
    if (receiver.id === user.id) throw new AppError('validation_error', 'transferTo: must be another user');
    if (receiver.disabled) throw new AppError('conflict', `"${receiver.username}" is disabled; transfer to an active user`);
  }
  // Before anything is changed: every file's key must be at hand for a transfer (rewrapping
  // needs it), so a missing key stops here with key_unavailable, not halfway through.
  if (receiver) {
    for (let cursor: { createdAt: number; id: string } | null = null; ; ) {
      const page = await d.vault.files.listForOwner(user.id, PAGE, cursor);
      for (const f of page) await d.vault.keyFor(f);
      if (page.length < PAGE) break;
      cursor = { createdAt: page.at(-1)!.createdAt, id: page.at(-1)!.id };
    }
  }
  // Held data may not go: neither the user's files nor (so nothing is orphaned) the user.
  if (await new HoldsRepo(d.db.kysely).userHasHeldFiles(user.id)) {
    throw new AppError('legal_hold', `"${user.username}" or one of their files is under a legal hold; an administrator must release it before the user can be deleted`);
  }
  // Throws conflict for the last active admin, before anything is changed.
  const { revokedTokens, revokedShares } = await d.accounts.adminUpdate(user.id, { disabled: true });
  await d.endSessions?.(user.id);
  const shares = new SharesRepo(d.db.kysely, d.accounts.integrity);
  let files = 0;
  let bytes = 0;
  for (;;) {
    const batch = await d.vault.files.listForOwner(user.id, PAGE, null);
    if (batch.length === 0) break;
    for (const f of batch) {
      if (receiver) {
        if (!(await d.vault.transferOwnership(f.id, user.id, receiver.id))) continue;
        // The links were the departing user's decisions; the receiver makes new ones.
        await shares.revokeAllForFile(f.id, Date.now());
        await d.record({ action: 'file.transfer', outcome: 'success', subjectUserId: receiver.id, fileId: f.id, details: { from: user.id, to: receiver.id, size: f.size } });
      } else {
        await d.vault.delete(user.id, f.id).catch((err: unknown) => {
          if (!(err instanceof AppError && err.code === 'not_found')) throw err;
        });
        await d.record({ action: 'file.delete', outcome: 'success', subjectUserId: user.id, fileId: f.id, details: { size: f.size, reason: 'user deleted' } });
      }
      files += 1;
      bytes += f.size;
    }
  }
  // Incomplete resumable uploads go with their ciphertext (the row cascade alone would leave it).
  await d.dropUploads?.(user.id);
  // Database work only in here: the blobs were removed above, outside any transaction.
  await d.db.transaction(async (trx) => {
    // An upload that was already streaming when the user was disabled may have landed.
    if ((await new FilesRepo(trx).listForOwner(user.id, 1, null)).length) throw new AppError('conflict', 'a file arrived while deleting; run the deletion again');
    await new SharesRepo(trx, d.accounts.integrity).deleteAllForOwner(user.id);
    await new UsersRepo(trx, d.accounts.integrity).delete(user.id);
  });
  const limit = receiver ? await d.vault.quota.limitOf(receiver.id) : null;
  const result: DeleteUserResult = {
    userId: user.id,
    username: user.username,
    mode: receiver ? 'transfer' : 'delete',
    files,
    bytes,
    revokedShares,
    revokedTokens,
    receiverId: receiver?.id ?? null,
    receiverOverQuota: receiver !== undefined && limit !== null && (await d.vault.quota.usageOf(receiver.id)) > limit,
  };
  await d.record({
    action: 'user.delete',
    outcome: 'success',
    subjectUserId: user.id,
    details: { username: user.username, mode: result.mode, files, bytes, transferTo: result.receiverId, receiverOverQuota: result.receiverOverQuota, revokedShares, revokedTokens },
  });
  return result;
}
