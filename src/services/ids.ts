/** Random identifiers and secrets. */
import { createHash, randomBytes } from 'node:crypto';

/** 128-bit random id as 32 lowercase hex characters (never sequential, never guessable). */
export function newId(): string {
  return randomBytes(16).toString('hex');
}

/** True for a string shaped like an id from newId(). */
export function isId(s: string): boolean {
  return /^[0-9a-f]{32}$/.test(s);
}

/** SHA-256 of a secret, as stored in place of the secret. */
export function secretHash(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}
