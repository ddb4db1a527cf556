/**
 * The durable claim of each fleet run, keyed by tenant and request id (`claimKey`): written before anything is spawned (at-most-once), read
 * to answer a repeated request id with the stored outcome (idempotency), and checked against the owner's liveness so
 * a run whose worker died is reported lost instead of being run again.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { FleetError } from "../Errors.js"

/**
 * The key a run is claimed under: its tenant and its request id together, so that request ids are the tenant's own
 * (tenant B's "deploy-7" is not tenant A's). Stored in `request_id`.
 */
export const claimKey = (tenant: string, requestId: string): string => JSON.stringify([tenant, requestId])

/** A finished run's stored outcome: the encoded `WireResult` or the encoded `WireError`. */
export type Outcome = { readonly _tag: "Done"; readonly result: unknown } | { readonly _tag: "Failed"; readonly error: unknown }

/** What a claim attempt found. */
export type ClaimState =
  | { readonly _tag: "Claimed"; readonly attempt: number }
  | { readonly _tag: "Running"; readonly workerId: string; readonly ownerAlive: boolean; readonly fingerprint: string | null }
  | { readonly _tag: "Finished"; readonly outcome: Outcome; readonly fingerprint: string | null }
  | { readonly _tag: "Lost"; readonly workerId: string; readonly fingerprint: string | null }

export interface ClaimStoreService {
  /** This worker's id, as claims name it. */
  readonly workerId: string
  /**
   * Claims `requestId` for this worker if nobody has, recording the request's fingerprint; otherwise says what the
   * existing claim is (with the fingerprint it was made with).
   */
  readonly claim: (requestId: string, tenant: string, fingerprint: string) => Effect.Effect<ClaimState, FleetError>
  /**
   * Takes over a claim that did not finish (lost, or running with a dead owner) for at-least-once delivery; false
   * when another worker took it first.
   */
  readonly reclaim: (requestId: string, previousWorkerId: string) => Effect.Effect<boolean, FleetError>
  readonly finish: (requestId: string, outcome: Outcome) => Effect.Effect<void, FleetError>
  /**
   * Marks a claim that will not finish as lost: its owner died, or it was interrupted (by its caller, or by its
   * worker's shutdown past the grace). Under at-most-once every later repeat then fails the same way.
   */
  readonly markLost: (requestId: string, workerId: string) => Effect.Effect<void, FleetError>
  /** True once the claim is no longer running (finished or lost), or its owner is dead, or there is none. */
  readonly settled: (requestId: string) => Effect.Effect<boolean, FleetError>
}

export class ClaimStore extends Context.Tag("effect-native-runner/cluster/ClaimStore")<ClaimStore, ClaimStoreService>() {}

/**
 * What a client reads of the claims: whether a run it stopped waiting for (interrupted) has settled on its worker, so
 * an interrupted fleet exec returns once the worker has killed the tree, as a local one does.
 */
export class ClaimReader extends Context.Tag("effect-native-runner/cluster/ClaimReader")<ClaimReader, {
  readonly settled: (requestId: string) => Effect.Effect<boolean, FleetError>
  /** The claim's end once it has one: its stored outcome (done), or lost; None while it runs or before it exists. */
  readonly ended: (requestId: string) => Effect.Effect<Option.Option<Ended>, FleetError>
}>() {}

/** How a claim ended: with its stored outcome, or lost on `workerId`. */
export type Ended = { readonly _tag: "Done"; readonly outcome: Outcome } | { readonly _tag: "Lost"; readonly workerId: string }

/** Polls `settled` until it holds or `bound` has passed; never fails. */
export const awaitSettled = (
  reader: ClaimReader["Type"],
  requestId: string,
  bound: Duration.DurationInput
): Effect.Effect<void> =>
  reader.settled(requestId).pipe(
    Effect.orElseSucceed(() => true),
    Effect.repeat({ until: (settled) => settled, schedule: Schedule.spaced(Duration.millis(25)) }),
    Effect.timeoutOption(bound),
    Effect.asVoid
  )

const storageError = (requestId: string) => (error: SqlError): FleetError =>
  new FleetError({ reason: "Storage", requestId, message: `the fleet database failed: ${error.message}` })

type MemoryClaim =
  | { readonly state: "running" | "lost"; readonly workerId: string; readonly fingerprint: string }
  | { readonly state: "done"; readonly workerId: string; readonly outcome: Outcome; readonly fingerprint: string }

/**
 * Claims in memory, for a cluster inside one process (tests, `layerMemory`): every owner is this process, so it is
 * alive as long as the store is.
 */
export const layerMemory = (workerId: string): Layer.Layer<ClaimStore | ClaimReader> =>
  Layer.effectContext(
    Effect.gen(function*() {
      const claims = yield* Ref.make(new Map<string, MemoryClaim>())
      const update = (requestId: string, f: (claim: MemoryClaim | undefined) => MemoryClaim | undefined) =>
        Ref.update(claims, (map) => {
          const next = f(map.get(requestId))
          return next === undefined ? map : new Map(map).set(requestId, next)
        })
      const store = ClaimStore.of({
        workerId,
        claim: (requestId, _tenant, fingerprint) =>
          Ref.modify(claims, (map): [ClaimState, Map<string, MemoryClaim>] => {
            const existing = map.get(requestId)
            if (existing === undefined) {
              return [{ _tag: "Claimed", attempt: 1 }, new Map(map).set(requestId, { workerId, state: "running", fingerprint })]
            }
            const stored = existing.fingerprint
            switch (existing.state) {
              case "running":
                return [{ _tag: "Running", workerId: existing.workerId, ownerAlive: true, fingerprint: stored }, map]
              case "lost":
                return [{ _tag: "Lost", workerId: existing.workerId, fingerprint: stored }, map]
              case "done":
                return [{ _tag: "Finished", outcome: existing.outcome, fingerprint: stored }, map]
            }
          }),
        reclaim: (requestId) =>
          Ref.modify(claims, (map): [boolean, Map<string, MemoryClaim>] => {
            const existing = map.get(requestId)
            return existing?.state === "lost"
              ? [true, new Map(map).set(requestId, { workerId, state: "running", fingerprint: existing.fingerprint })]
              : [false, map]
          }),
        // Only a running claim finishes: a claim marked lost stays lost.
        finish: (requestId, outcome) =>
          update(requestId, (c) =>
            c?.state === "running" ? { workerId: c.workerId, state: "done", outcome, fingerprint: c.fingerprint } : c),
        markLost: (requestId, owner) =>
          update(requestId, (c) =>
            c?.state === "running" && c.workerId === owner ? { workerId: owner, state: "lost", fingerprint: c.fingerprint } : c),
        settled: (requestId) => Effect.map(Ref.get(claims), (map) => map.get(requestId)?.state !== "running")
      })
      const ended = (requestId: string) =>
        Effect.map(Ref.get(claims), (map): Option.Option<Ended> => {
          const claim = map.get(requestId)
          return claim?.state === "done"
            ? Option.some({ _tag: "Done", outcome: claim.outcome })
            : claim?.state === "lost"
            ? Option.some({ _tag: "Lost", workerId: claim.workerId })
            : Option.none()
        })
      return Context.make(ClaimStore, store).pipe(Context.add(ClaimReader, { settled: store.settled, ended }))
    })
  )

/** The advisory-lock class of this package (`pg_advisory_lock(int4, int4)`; the cluster's own locks use one bigint). */
export const LOCK_CLASS = 0x454e52 // "ENR"
/** The lock id (in LOCK_CLASS) held while the schema is created, so workers started together do not race. */
export const SCHEMA_LOCK = 0

const schema = (sql: SqlClient.SqlClient) =>
  sql`CREATE TABLE IF NOT EXISTS native_runner_claims (
    request_id text PRIMARY KEY,
    tenant text NOT NULL,
    worker_id text NOT NULL,
    worker_lock integer NOT NULL,
    state text NOT NULL,
    attempt integer NOT NULL,
    fingerprint text,
    outcome jsonb,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
  )`

/** Creates the claims table (idempotent). Run it holding the schema lock, as the worker's start does. */
export const migrate: Effect.Effect<void, SqlError, SqlClient.SqlClient> = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.asVoid(Effect.zipRight(
    schema(sql),
    // A table made before claims had fingerprints: its old claims have none (and never conflict).
    sql`ALTER TABLE native_runner_claims ADD COLUMN IF NOT EXISTS fingerprint text`
  )))

interface ClaimRow {
  readonly worker_id: string
  readonly worker_lock: number
  readonly state: string
  readonly attempt: number
  readonly outcome: Outcome | null
  readonly fingerprint: string | null
  readonly owner_alive: boolean
}

/**
 * Claims in PostgreSQL. The worker holds a session advisory lock (LOCK_CLASS, its lock id) on a connection of its own
 * for its whole life; PostgreSQL drops it the moment that connection goes (a SIGKILLed worker included), so "is the
 * owner alive" is one look at `pg_locks`, with no heartbeat to tune.
 */
export const layerSql = (
  workerId: string,
  retention?: Duration.DurationInput
): Layer.Layer<ClaimStore, SqlError, SqlClient.SqlClient> => Layer.scoped(ClaimStore, makeSql(workerId, retention))

/**
 * Deletes finished and lost claims older than `retention` every half of it (at least every minute, at most every
 * 250 ms), so stored outcomes do not pile up for ever. Every worker sweeps; the statement is idempotent.
 */
const sweep = (sql: SqlClient.SqlClient, retention: Duration.DurationInput) => {
  const retentionMs = Math.max(0, Math.floor(Duration.toMillis(Duration.decode(retention))))
  const every = Math.min(60_000, Math.max(250, Math.floor(retentionMs / 2)))
  const once = sql`DELETE FROM native_runner_claims WHERE state IN ('done', 'lost')
      AND finished_at < now() - make_interval(secs => ${retentionMs / 1000})`.pipe(
    Effect.catchAll((error) => Effect.logWarning(`native-runner worker: the claims sweep failed: ${error.message}`))
  )
  return Effect.forkScoped(Effect.repeat(once, Schedule.spaced(Duration.millis(every))).pipe(Effect.interruptible))
}

const makeSql = (
  workerId: string,
  retention: Duration.DurationInput = Duration.hours(24)
): Effect.Effect<ClaimStoreService, SqlError, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const lock = yield* holdOwnerLock(sql)
    yield* sweep(sql, retention)
    const lockId = lock.lockId
    const read = readClaim(sql)
    const notHeld = (requestId: string) =>
      new FleetError({
        reason: "Unavailable",
        requestId,
        message: "this worker is taking its liveness lock again (its database connection dropped); nothing ran, retry"
      })
    const claim = (requestId: string, tenant: string, fingerprint: string): Effect.Effect<ClaimState, FleetError> =>
      Effect.gen(function*() {
        if (!lock.held()) {
          // An existing claim is answered as usual (a repeat needs no lock); a new one waits for the lock.
          const [existing] = yield* read(requestId)
          return existing === undefined ? yield* notHeld(requestId) : stateOf(existing)
        }
        const inserted = yield* sql`INSERT INTO native_runner_claims (request_id, tenant, worker_id, worker_lock, state, attempt, fingerprint)
          VALUES (${requestId}, ${tenant}, ${workerId}, ${lockId}, 'running', 1, ${fingerprint})
          ON CONFLICT (request_id) DO NOTHING RETURNING request_id`
        if (inserted.length === 1) return { _tag: "Claimed", attempt: 1 } as const
        const [row] = yield* read(requestId)
        if (row === undefined) return yield* claim(requestId, tenant, fingerprint)
        return stateOf(row)
      }).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(storageError(requestId)(e))))
    return ClaimStore.of({
      workerId,
      claim,
      reclaim: (requestId, previous) =>
        !lock.held() ? Effect.fail(notHeld(requestId)) : sql`UPDATE native_runner_claims SET worker_id = ${workerId}, worker_lock = ${lockId}, attempt = attempt + 1,
            state = 'running', finished_at = NULL
            WHERE request_id = ${requestId} AND worker_id = ${previous} AND state IN ('running', 'lost')
            RETURNING request_id`.pipe(
          Effect.map((rows) => rows.length === 1),
          Effect.mapError(storageError(requestId))
        ),
      finish: (requestId, outcome) =>
        // Only from running: a claim already marked lost (its owner was taken for dead) is never turned "done".
        sql`UPDATE native_runner_claims SET state = 'done', outcome = ${JSON.stringify(outcome)}::jsonb, finished_at = now()
            WHERE request_id = ${requestId} AND worker_id = ${workerId} AND state = 'running'`.pipe(
          Effect.asVoid,
          Effect.mapError(storageError(requestId))
        ),
      markLost: (requestId, owner) =>
        sql`UPDATE native_runner_claims SET state = 'lost', finished_at = now()
            WHERE request_id = ${requestId} AND worker_id = ${owner} AND state = 'running'`.pipe(
          Effect.asVoid,
          Effect.mapError(storageError(requestId))
        ),
      settled: (requestId) =>
        read(requestId).pipe(
          Effect.map(settledOf),
          Effect.mapError(storageError(requestId))
        )
    })
  })

const readClaim = (sql: SqlClient.SqlClient) => (requestId: string) =>
  sql<ClaimRow>`SELECT worker_id, worker_lock, state, attempt, outcome, fingerprint,
      EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
        AND classid = ${LOCK_CLASS}::oid AND objid = c.worker_lock::oid AND objsubid = 2) AS owner_alive
    FROM native_runner_claims c WHERE request_id = ${requestId}`

const settledOf = (rows: ReadonlyArray<ClaimRow>): boolean =>
  rows[0] === undefined || rows[0].state !== "running" || !rows[0].owner_alive

/** The client's reader of the claims in PostgreSQL. */
export const layerSqlReader: Layer.Layer<ClaimReader, never, SqlClient.SqlClient> = Layer.effect(
  ClaimReader,
  Effect.map(SqlClient.SqlClient, (sql) => ({
    settled: (requestId: string) =>
      readClaim(sql)(requestId).pipe(Effect.map(settledOf), Effect.mapError(storageError(requestId))),
    ended: (requestId: string) =>
      sql<{ readonly state: string; readonly worker_id: string; readonly outcome: Outcome | null }>`SELECT state, worker_id, outcome
          FROM native_runner_claims WHERE request_id = ${requestId}`.pipe(
        Effect.map(([row]): Option.Option<Ended> =>
          row?.state === "done"
            ? Option.some({ _tag: "Done", outcome: row.outcome ?? { _tag: "Failed", error: null } })
            : row?.state === "lost"
            ? Option.some({ _tag: "Lost", workerId: row.worker_id })
            : Option.none()
        ),
        Effect.mapError(storageError(requestId))
      )
  }))
)

const stateOf = (row: ClaimRow): ClaimState => {
  switch (row.state) {
    case "done":
      return { _tag: "Finished", outcome: row.outcome ?? { _tag: "Failed", error: null }, fingerprint: row.fingerprint }
    case "lost":
      return { _tag: "Lost", workerId: row.worker_id, fingerprint: row.fingerprint }
    default:
      return { _tag: "Running", workerId: row.worker_id, ownerAlive: row.owner_alive, fingerprint: row.fingerprint }
  }
}

/** How often the worker checks the connection that holds its liveness lock. */
export const LOCK_WATCH_INTERVAL_MS = 500

/**
 * How long a worker that finds a claim's owner without its lock waits, and looks again, before it takes the owner
 * for dead: longer than the owner needs to notice a dropped lock connection and take the lock again.
 */
export const OWNER_CONFIRM_MS = 3_000

/** The worker's liveness lock: its id, and whether this worker holds it right now. */
export interface OwnerLock {
  readonly lockId: number
  readonly held: () => boolean
}

/**
 * Takes a free lock id in LOCK_CLASS on a reserved connection and holds it until the scope closes. A watchdog checks
 * that connection every LOCK_WATCH_INTERVAL_MS; when it is gone (the server ended the backend, the network dropped
 * it) the same lock id is taken again on a new connection. While it is not held the worker takes no new claims.
 */
const holdOwnerLock = (sql: SqlClient.SqlClient): Effect.Effect<OwnerLock, SqlError, Scope.Scope> =>
  Effect.gen(function*() {
    const take = (wanted: number | undefined) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        return yield* Effect.gen(function*() {
          const connection = yield* Scope.extend(sql.reserve, scope)
          for (;;) {
            const lockId = wanted ?? 1 + Math.floor(Math.random() * 0x7ffffffe)
            const [row] = yield* connection.execute("SELECT pg_try_advisory_lock($1, $2) AS taken", [LOCK_CLASS, lockId], undefined)
            if (row?.taken === true) return { lockId, connection, scope }
            // Our own id held by someone else cannot happen (ids are random and ours); do not spin on it.
            if (wanted !== undefined) return yield* new SqlError({ message: `lock ${wanted} is held by another session` })
          }
        }).pipe(Effect.onError(() => Scope.close(scope, Exit.void)))
      })
    const first = yield* take(undefined)
    let current = first
    const held = { value: true }
    yield* Effect.addFinalizer(() => Scope.close(current.scope, Exit.void))
    const check = Effect.gen(function*() {
      // Only a failed query means the connection (and the lock) is gone. A slow one is waited for: cutting it short
      // would hand a connection that still holds the lock back to the pool, and overlap the next check with it.
      const ok = yield* current.connection.execute("SELECT 1", [], undefined).pipe(
        Effect.as(true),
        Effect.orElseSucceed(() => false)
      )
      if (ok && held.value) return
      held.value = false
      yield* Scope.close(current.scope, Exit.void)
      const next = yield* Effect.either(take(first.lockId))
      if (next._tag === "Right") {
        current = next.right
        held.value = true
        yield* Effect.logWarning(`native-runner worker: the liveness lock's connection was lost; lock ${first.lockId} taken again`)
      }
    })
    yield* Effect.forkScoped(Effect.repeat(check, Schedule.spaced(Duration.millis(LOCK_WATCH_INTERVAL_MS))).pipe(Effect.interruptible))
    return { lockId: first.lockId, held: () => held.value }
  })
