/**
 * Repository for `oidc_identities`: which OpenID Connect identity (issuer, subject) signs in
 * as which user. Every row is sealed with a MAC over issuer, subject and user id
 * (services/integrity.ts identityMacFields); a row read here that fails it is reported as not
 * intact, and callers refuse it like an unknown identity.
 */
import type { Executor } from './database.js';
import { identityMacFields, type IntegrityKeys } from '../services/integrity.js';

export interface IdentityRow {
  issuer: string;
  subject: string;
  userId: string;
  email: string | null;
  createdAt: number;
  lastLoginAt: number | null;
  /** The row's MAC verified when it was read. */
  intact: boolean;
}

export class OidcIdentitiesRepo {
  constructor(
    private readonly db: Executor,
    private readonly keys: IntegrityKeys,
  ) {}

  private read(r: { issuer: string; subject: string; user_id: string; email: string | null; created_at: number; last_login_at: number | null; row_mac: Buffer }): IdentityRow {
    return {
      issuer: r.issuer,
      subject: r.subject,
      userId: r.user_id,
      email: r.email,
      createdAt: Number(r.created_at),
      lastLoginAt: r.last_login_at === null ? null : Number(r.last_login_at),
      intact: this.keys.rowMacMatches('oidc_identities', identityMacFields({ issuer: r.issuer, subject: r.subject, userId: r.user_id }), r.row_mac),
    };
  }

  /** The row for one provider identity, if linked. */
  async byIdentity(issuer: string, subject: string): Promise<IdentityRow | undefined> {
    const r = await this.db.selectFrom('oidc_identities').selectAll().where('issuer', '=', issuer).where('subject', '=', subject).executeTakeFirst();
    return r && this.read(r);
  }

  /** The identities linked to a user, oldest first. */
  async listForUser(userId: string): Promise<IdentityRow[]> {
    const rows = await this.db.selectFrom('oidc_identities').selectAll().where('user_id', '=', userId).orderBy('created_at').execute();
    return rows.map((r) => this.read(r));
  }

  /** True when the user has at least one intact linked identity (an "SSO user"). */
  async linked(userId: string): Promise<boolean> {
    return (await this.listForUser(userId)).some((i) => i.intact);
  }

  /** Links an identity (sealed); a second link of the same identity fails on the primary key. */
  async insert(i: { issuer: string; subject: string; userId: string; email: string | null; now: number }): Promise<void> {
    await this.db
      .insertInto('oidc_identities')
      .values({
        issuer: i.issuer,
        subject: i.subject,
        user_id: i.userId,
        email: i.email,
        created_at: i.now,
        last_login_at: i.now,
        row_mac: this.keys.rowMac('oidc_identities', identityMacFields(i)),
      })
      .execute();
  }

  /** Records a sign-in and the email the provider stated this time (neither is sealed: they grant nothing). */
  async touch(issuer: string, subject: string, email: string | null, now: number): Promise<void> {
    await this.db.updateTable('oidc_identities').set({ last_login_at: now, email }).where('issuer', '=', issuer).where('subject', '=', subject).execute();
  }
}
