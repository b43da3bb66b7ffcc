/**
 * Password hashing with argon2id (OWASP: m=19 MiB, t=2, p=1). Hashing runs on libuv's
 * small thread pool, so a semaphore bounds how many run at once and file I/O never starves.
 */
import argon2 from 'argon2';
import { Semaphore } from '../util/semaphore.js';

export const MIN_PASSWORD_LENGTH = 10;
export const MAX_PASSWORD_LENGTH = 1024;

const OPTIONS = { type: argon2.argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;

export class PasswordHasher {
  private readonly gate: Semaphore;
  private dummy: Promise<string> | undefined;

  constructor(concurrency: number) {
    this.gate = new Semaphore(concurrency);
  }

  /** Returns an encoded argon2id hash (salt and parameters included). */
  hash(password: string): Promise<string> {
    return this.gate.run(() => argon2.hash(password, OPTIONS));
  }

  /** Verifies a password against a hash; false for any malformed hash. */
  verify(encoded: string, password: string): Promise<boolean> {
    return this.gate.run(async () => {
      try {
        return await argon2.verify(encoded, password);
      } catch {
        return false;
      }
    });
  }

  /**
   * Spends the same work as a real verification and returns false: used when the user does
   * not exist, so response time does not reveal which usernames exist.
   */
  async verifyNothing(password: string): Promise<false> {
    this.dummy ??= this.hash('sfs timing equaliser, never a real password');
    await this.verify(await this.dummy, password);
    return false;
  }
}
