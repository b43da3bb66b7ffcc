/**
 * Removing a departing user: their files are either handed to another user or deleted (one of
 * the two is required, so nothing is lost or kept by accident), their links and tokens end for
 * good, and the user row goes. Shared by the admin page and `sfs user delete`.
 */
import type { Db } from '../db/database.js';
import { SharesRepo } from '../db/shares.js';
import { AppError } from '../errors.js';
import type { AccountsService } from './accounts.js';
import type { AuditInput } from './audit.js';
import type { VaultService } from './vault.js';

export interface OffboardingDeps {
  db: Db;
  accounts: AccountsService;
  vault: VaultService;
  /** Ends the user's browser sessions (the server's session store). */
  endSessions?: (userId: string) => void;
  /** Records one audit event; `base` (actor, client) is merged in by the caller. */
  record: (event: Omit<AuditInput, 'actor'>) => void;
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
  const user = d.accounts.users.byId(userId);
  if (!user) throw new AppError('not_found', 'no such user');
  const receiver = 'transferTo' in decision ? d.accounts.users.byId(decision.transferTo) : undefined;
  if ('transferTo' in decision) {
    if (!receiver) throw new AppError('not_found', 'no such user to transfer the files to');
    if (receiver.id === user.id) throw new AppError('validation_error', 'transferTo: must be another user');
    if (receiver.disabled) throw new AppError('conflict', `"${receiver.username}" is disabled; transfer to an active user`);
  }
  // Before anything is changed: every file's key must be at hand for a transfer (rewrapping
  // needs it), so a missing key stops here with key_unavailable, not halfway through.
  if (receiver) {
    for (let cursor: { createdAt: number; id: string } | null = null; ; ) {
      const page = d.vault.files.listForOwner(user.id, PAGE, cursor);
      for (const f of page) d.vault.keyFor(f);
      if (page.length < PAGE) break;
      cursor = { createdAt: page.at(-1)!.createdAt, id: page.at(-1)!.id };
    }
  }
  // Throws conflict for the last active admin, before anything is changed.
  const { revokedTokens, revokedShares } = await d.accounts.adminUpdate(user.id, { disabled: true });
  d.endSessions?.(user.id);
  const shares = new SharesRepo(d.db, d.accounts.integrity);
  let files = 0;
  let bytes = 0;
  for (;;) {
    const batch = d.vault.files.listForOwner(user.id, PAGE, null);
    if (batch.length === 0) break;
    for (const f of batch) {
      if (receiver) {
        if (!d.vault.transferOwnership(f.id, user.id, receiver.id)) continue;
        // The links were the departing user's decisions; the receiver makes new ones.
        shares.revokeAllForFile(f.id, Date.now());
        d.record({ action: 'file.transfer', outcome: 'success', subjectUserId: receiver.id, fileId: f.id, details: { from: user.id, to: receiver.id, size: f.size } });
      } else {
        await d.vault.delete(user.id, f.id).catch((err: unknown) => {
          if (!(err instanceof AppError && err.code === 'not_found')) throw err;
        });
        d.record({ action: 'file.delete', outcome: 'success', subjectUserId: user.id, fileId: f.id, details: { size: f.size, reason: 'user deleted' } });
      }
      files += 1;
      bytes += f.size;
    }
  }
  d.db
    .transaction(() => {
      // An upload that was already streaming when the user was disabled may have landed.
      if (d.vault.files.listForOwner(user.id, 1, null).length) throw new AppError('conflict', 'a file arrived while deleting; run the deletion again');
      shares.deleteAllForOwner(user.id);
      d.accounts.users.delete(user.id);
    })
    .immediate();
  const limit = receiver ? d.vault.quota.limitOf(receiver.id) : null;
  const result: DeleteUserResult = {
    userId: user.id,
    username: user.username,
    mode: receiver ? 'transfer' : 'delete',
    files,
    bytes,
    revokedShares,
    revokedTokens,
    receiverId: receiver?.id ?? null,
    receiverOverQuota: receiver !== undefined && limit !== null && d.vault.quota.usageOf(receiver.id) > limit,
  };
  d.record({
    action: 'user.delete',
    outcome: 'success',
    subjectUserId: user.id,
    details: { username: user.username, mode: result.mode, files, bytes, transferTo: result.receiverId, receiverOverQuota: result.receiverOverQuota, revokedShares, revokedTokens },
  });
  return result;
}
