/**
 * Tenants are credentials. `native-runner fleet tenant NAME` registers a tenant in the database the workers share:
 * a random 256-bit secret, of which only the SHA-256 is stored, and the tenant's caps. The client holds a credentials
 * file (the tenant's token and the fleet's CA) and no database URL; a worker's client endpoint derives the tenant from
 * the token (looked up by the name it carries, compared in constant time, refused once revoked), never from a field
 * the client sends.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import { randomBytes } from "node:crypto"
import { matchesHash, sha256 } from "./secrets.js"
import * as fs from "node:fs/promises"
import { FleetError } from "../Errors.js"

/** A tenant name: lower-case letters, digits, `-` and `_`, 1 to 63 characters, starting with a letter or digit. */
export const TENANT_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/

/** What a registered tenant may use on each worker (absent: the worker's own caps). */
export interface TenantCaps {
  readonly concurrency?: number | undefined
  readonly queue?: number | undefined
}

/** A tenant the endpoint authenticated. */
export interface Tenant extends TenantCaps {
  readonly name: string
}

/** Creates the tenants table (idempotent; run under the schema lock). */
export const migrate = (sql: SqlClient.SqlClient) =>
  sql`CREATE TABLE IF NOT EXISTS native_runner_tenants (
    name text PRIMARY KEY,
    secret_sha256 bytea NOT NULL,
    concurrency integer,
    queue integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
  )`.pipe(Effect.asVoid)

const TOKEN_PREFIX = "nrt1"

/** `nrt1.<tenant>.<secret>`: the name tells the endpoint which row to compare against; the secret is 32 random bytes. */
const makeToken = (name: string, secret: string) => `${TOKEN_PREFIX}.${name}.${secret}`

const parseToken = (token: string): { readonly name: string; readonly secret: string } | undefined => {
  const parts = token.split(".")
  if (parts.length !== 3 || parts[0] !== TOKEN_PREFIX) return undefined
  const [, name, secret] = parts as [string, string, string]
  return TENANT_NAME.test(name) && /^[A-Za-z0-9_-]{43}$/.test(secret) ? { name, secret } : undefined
}

const storage = (error: SqlError) =>
  new FleetError({ reason: "Storage", message: `the fleet's tenants could not be read or written: ${error.message}` })

/**
 * Registers `name` (or gives it a new secret, un-revoking it) and returns its token. Only the secret's SHA-256 is
 * stored: a database dump does not let anyone in.
 */
export const register = (name: string, caps: TenantCaps) =>
  Effect.gen(function*() {
    if (!TENANT_NAME.test(name)) {
      return yield* new FleetError({
        reason: "Unavailable",
        message: `tenant name ${JSON.stringify(name)}: use 1-63 of a-z, 0-9, - and _, starting with a letter or digit`
      })
    }
    const sql = yield* SqlClient.SqlClient
    const secret = randomBytes(32).toString("base64url")
    yield* sql`INSERT INTO native_runner_tenants (name, secret_sha256, concurrency, queue)
      VALUES (${name}, ${sha256(secret)}, ${caps.concurrency ?? null}, ${caps.queue ?? null})
      ON CONFLICT (name) DO UPDATE SET secret_sha256 = EXCLUDED.secret_sha256, concurrency = EXCLUDED.concurrency,
        queue = EXCLUDED.queue, revoked_at = NULL`.pipe(Effect.mapError(storage))
    return Redacted.make(makeToken(name, secret))
  })

/** Revokes `name`: its token is refused by every worker from the next request on. Fails if there is no such tenant. */
export const revoke = (name: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ name: string }>`UPDATE native_runner_tenants SET revoked_at = now()
      WHERE name = ${name} AND revoked_at IS NULL RETURNING name`.pipe(Effect.mapError(storage))
    if (rows.length === 0) {
      return yield* new FleetError({ reason: "Unavailable", message: `no active tenant ${JSON.stringify(name)}` })
    }
  })

const unauthenticated = new FleetError({ reason: "Unauthenticated", message: "the credential was refused" })

/**
 * The tenant a token belongs to, or `Unauthenticated` (malformed, unknown, wrong secret or revoked: one answer for
 * all, so a caller learns nothing about which). The secret's hash is compared in constant time.
 */
export const authenticate = (token: string): Effect.Effect<Tenant, FleetError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const parsed = parseToken(token)
    if (parsed === undefined) {
      // A malformed token costs the same hash as a real one.
      sha256(token)
      return yield* unauthenticated
    }
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ secret_sha256: Uint8Array; concurrency: number | null; queue: number | null }>`
      SELECT secret_sha256, concurrency, queue FROM native_runner_tenants
      WHERE name = ${parsed.name} AND revoked_at IS NULL`.pipe(Effect.mapError(storage))
    const row = rows[0]
    const same = matchesHash(parsed.secret, row === undefined ? Buffer.alloc(32) : Buffer.from(row.secret_sha256))
    if (row === undefined || !same) return yield* unauthenticated
    return {
      name: parsed.name,
      ...(row.concurrency === null ? {} : { concurrency: row.concurrency }),
      ...(row.queue === null ? {} : { queue: row.queue })
    }
  })

/** A client's credentials: the tenant's token and the fleet's CA (PEM), what `fleet tenant` writes. */
export interface Credentials {
  readonly tenant: string
  readonly token: Redacted.Redacted<string>
  readonly ca: string
}

/** Writes `file` (0600, never over an existing one): the token and the CA a client needs, as JSON. */
export const writeCredentials = (file: string, credentials: Credentials) =>
  Effect.tryPromise({
    try: async () => {
      const handle = await fs.open(file, "wx", 0o600)
      try {
        await handle.writeFile(JSON.stringify({
          tenant: credentials.tenant,
          token: Redacted.value(credentials.token),
          ca: credentials.ca
        }, null, 2) + "\n")
      } finally {
        await handle.close()
      }
    },
    catch: (error) =>
      new FleetError({
        reason: "Unavailable",
        message: `cannot write ${file}: ${error instanceof Error ? error.message : String(error)}`
      })
  })

/** Reads a credentials file; like an ssh key, it must not be readable by other users. */
export const readCredentials = (file: string): Effect.Effect<Credentials, FleetError> =>
  Effect.tryPromise({
    try: async () => {
      const stats = await fs.stat(file)
      if ((stats.mode & 0o077) !== 0) {
        throw new Error(`it is readable by other users (mode ${(stats.mode & 0o777).toString(8)}); chmod 600 it`)
      }
      const parsed: unknown = JSON.parse(await fs.readFile(file, "utf8"))
      if (
        typeof parsed !== "object" || parsed === null || !("token" in parsed) || !("ca" in parsed) ||
        !("tenant" in parsed) || typeof parsed.token !== "string" || typeof parsed.ca !== "string" ||
        typeof parsed.tenant !== "string"
      ) throw new Error("it is not a credentials file ('native-runner fleet tenant' writes one)")
      return { tenant: parsed.tenant, token: Redacted.make(parsed.token), ca: parsed.ca }
    },
    catch: (error) =>
      new FleetError({
        reason: "Unavailable",
        message: `the credentials in ${file} cannot be used: ${error instanceof Error ? error.message : String(error)}`
      })
  })
