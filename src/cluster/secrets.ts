/** The fleet's bearer secrets: how a presented token is taken from a request and compared with a stored hash. */
import { createHash, timingSafeEqual } from "node:crypto"

/** SHA-256 of `text`: what is kept of a secret (a tenant's, the metrics token). */
export const sha256 = (text: string): Buffer => createHash("sha256").update(text).digest()

/** Whether `presented` hashes to `stored`, compared in constant time. */
export const matchesHash = (presented: string, stored: Uint8Array): boolean => {
  const hash = sha256(presented)
  return stored.length === hash.length && timingSafeEqual(stored, hash)
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export const bearerToken = (header: string | undefined): string | undefined =>
  header !== undefined && header.startsWith("Bearer ") ? header.slice("Bearer ".length) : undefined
