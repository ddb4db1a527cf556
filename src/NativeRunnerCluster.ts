/**
 * The runner as a fleet: the same `NativeRunner` Tag served by worker machines through `@effect/cluster`, with
 * PostgreSQL as the shared store. `layerClient` provides `NativeRunner` (code that uses the runner does not change);
 * `layerWorker` hosts runs on a machine with its own local live layer. Delivery is at-most-once by default: each run
 * is claimed durably before anything is spawned, and a run whose worker died fails with `FleetError` "WorkerLost"
 * instead of running twice. A repeated request id (`withRequestId`) returns the stored outcome.
 */
import * as NodeClusterSocket from "@effect/platform-node/NodeClusterSocket"
import * as RunnerAddress from "@effect/cluster/RunnerAddress"
import type { Sharding } from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import * as TestRunner from "@effect/cluster/TestRunner"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { hostname } from "node:os"
import type { NativeRunnerError } from "./Errors.js"
import * as Exec from "./Exec.js"
import * as NativeRunner from "./NativeRunner.js"
import * as Claims from "./cluster/claims.js"
import { currentRequestId, layerClientWith as clientLayer } from "./cluster/client.js"
import { serveHealth } from "./cluster/health.js"
import { layerHandlers } from "./cluster/worker.js"


import { FleetError } from "./Errors.js"

export { FleetError }

/**
 * Shards per group. Client and workers must agree (a mismatch drops messages silently), so it is fixed here rather
 * than an option.
 */
export const SHARDS_PER_GROUP = 300

const Positive = Schema.Int.pipe(Schema.positive())

/** Where a client's runs go and how they are delivered. Defaults: tenant "default", spread 16, at-most-once. */
export const ClientOptions = Schema.Struct({
  /** The tenant of every run of this client: the routing key, and the unit of the workers' per-tenant caps. */
  tenant: Schema.optionalWith(Schema.NonEmptyString, { default: () => "default" }),
  /** Entities a tenant's runs are spread over (round robin); 1 pins the tenant's runs to one worker at a time. */
  spread: Schema.optionalWith(Positive, { default: () => 16 }),
  /** "at-most-once" (never run twice; a lost run fails) or "at-least-once" (a lost run is run again elsewhere). */
  delivery: Schema.optionalWith(Schema.Literal("at-most-once", "at-least-once"), {
    default: () => "at-most-once" as const
  })
})
export type ClientOptions = typeof ClientOptions.Encoded

/** The worker's defaults. */
export const WORKER_DEFAULTS = { concurrency: 16, queue: 64, grace: Duration.seconds(10) } as const

/** How a worker takes work. Defaults: concurrency 16, tenantConcurrency = concurrency, queue 64, grace 10 s. */
export const WorkerOptions = Schema.Struct({
  /** Runs in flight on this worker, all tenants together. */
  concurrency: Schema.optionalWith(Positive, { default: () => WORKER_DEFAULTS.concurrency }),
  /** Runs in flight on this worker for one tenant (default: `concurrency`). */
  tenantConcurrency: Schema.optional(Positive),
  /** Runs of one tenant waiting here for a slot; one more fails at once with `FleetError` "Busy". */
  queue: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => WORKER_DEFAULTS.queue }),
  /** On shutdown, how long runs in flight may finish before their trees are killed. */
  grace: Schema.optionalWith(Exec.DurationInput, { default: () => WORKER_DEFAULTS.grace })
})
export type WorkerOptions = typeof WorkerOptions.Encoded

const decode = <A, I>(schema: Schema.Schema<A, I>, options: unknown) => NativeRunner.decodeOptions(schema, options)

/**
 * Runs `effect` with `requestId` as the request id of its fleet execs: a repeat of an id returns the stored outcome
 * instead of running again (and a lost run's id keeps failing with "WorkerLost").
 *
 * @example
 * const result = yield* NativeRunnerCluster.withRequestId("build-42", NativeRunner.exec({ argv: ["make"] }))
 */
export const withRequestId = <A, E, R>(requestId: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locally(effect, currentRequestId, Option.some(requestId))

/** The client over the cluster in context (`Sharding`): any transport and storage `@effect/cluster` offers. */
export const layerClientWith = (
  options: ClientOptions = {}
): Layer.Layer<NativeRunner.NativeRunner, NativeRunnerError, Sharding> =>
  Layer.unwrapEffect(Effect.map(decode(ClientOptions, options), clientLayer))

/**
 * Where a worker claims runs: `layerClaimsSql` (PostgreSQL; the claims table must exist, see `migrate`) for a fleet,
 * `layerClaimsMemory` for a cluster inside one process. `workerId` names this worker in claims and results.
 */
export const layerClaimsSql = (workerId: string) => Claims.layerSql(workerId)
export const layerClaimsMemory = (workerId: string) => Claims.layerMemory(workerId)

/**
 * The worker's handlers over the cluster in context (`Sharding`), with the local runner (`NativeRunner`) and a claim
 * store (`layerClaimsSql` or `layerClaimsMemory`): what `layerWorker` wires to PostgreSQL, and `layerMemory` to memory.
 */
export const layerWorkerWith = (options: WorkerOptions = {}) =>
  Layer.unwrapEffect(
    Effect.map(decode(WorkerOptions, options), (o) =>
      layerHandlers({ concurrency: o.concurrency, tenantConcurrency: o.tenantConcurrency ?? o.concurrency, queue: o.queue })
    )
  )

/**
 * A whole fleet in this process, over memory: one worker using `local` as its runner, and a client. For tests and
 * for trying the fleet API; remote and local execs go through the same entity, serialization included.
 *
 * @example
 * const layer = NativeRunnerCluster.layerMemory(NativeRunner.layerNode(), { client: { tenant: "t1" } })
 */
export const layerMemory = <E>(
  local: Layer.Layer<NativeRunner.NativeRunner, E>,
  options: { readonly client?: ClientOptions; readonly worker?: WorkerOptions } = {}
): Layer.Layer<NativeRunner.NativeRunner, E | NativeRunnerError> => {
  // One claim store, shared by the worker (claims) and the client (waits for interrupted runs to settle).
  const claims = layerClaimsMemory(`memory-${process.pid}`)
  const worker = layerWorkerWith(options.worker).pipe(Layer.provide(claims), Layer.provide(local))
  const cluster = TestRunner.layer.pipe(
    Layer.provide(ShardingConfig.layer({ shardsPerGroup: SHARDS_PER_GROUP, entityMessagePollInterval: Duration.millis(50) }))
  )
  return layerClientWith(options.client).pipe(Layer.provide(Layer.provideMerge(worker, cluster)), Layer.provide(claims))
}

/** How to reach the fleet's PostgreSQL. The URL is kept `Redacted`: it never reaches an error message or a log. */
export interface DatabaseOptions {
  readonly databaseUrl: string | Redacted.Redacted<string>
}

const pg = (databaseUrl: DatabaseOptions["databaseUrl"]) =>
  PgClient.layer({
    url: Redacted.isRedacted(databaseUrl) ? databaseUrl : Redacted.make(databaseUrl),
    // Fleet clients and workers hold few connections each: the cluster's lock connection, ours, and a small pool.
    maxConnections: 8
  })

const shardingConfig = {
  shardsPerGroup: SHARDS_PER_GROUP,
  // A worker is taken for dead when its heartbeat (every shardLockRefreshInterval) is older than shardLockExpiration;
  // only then do its shards move and a run it claimed answer "WorkerLost". The defaults (10 s, 35 s) made a SIGKILLed
  // worker's run fail about 34 s later (measured); 2 s and 10 s make it about 10 s, for one small UPDATE per worker
  // every 2 s. Shard locks themselves are PostgreSQL advisory locks, dropped at once with the dead worker's connection.
  shardLockRefreshInterval: Duration.seconds(2),
  shardLockExpiration: Duration.seconds(10),
  runnerHealthCheckInterval: Duration.seconds(5),
  // Replies come back over the runner connection; polling storage is the fallback.
  entityReplyPollInterval: Duration.millis(200),
  refreshAssignmentsInterval: Duration.seconds(1)
} as const

/**
 * A client of the fleet whose workers share `databaseUrl`: provides `NativeRunner`. It registers no runner and
 * hosts nothing; it reads shard assignments from the database and talks to workers directly.
 *
 * @example
 * const FleetRunner = NativeRunnerCluster.layerClient({ databaseUrl: "postgres://runner@db/fleet", tenant: "acme" })
 */
export const layerClient = (
  options: ClientOptions & DatabaseOptions
): Layer.Layer<NativeRunner.NativeRunner, NativeRunnerError> => {
  const { databaseUrl, ...client } = options
  const cluster = Layer.merge(
    NodeClusterSocket.layer({ clientOnly: true, storage: "sql", shardingConfig }),
    Claims.layerSqlReader
  ).pipe(Layer.provide(pg(databaseUrl)), Layer.mapError(unavailable))
  return layerClientWith(client).pipe(Layer.provide(cluster))
}

/** Joining the fleet failed (database unreachable, listen address taken, schema creation failed). */
const unavailable = (error: { readonly message: string }): FleetError =>
  new FleetError({ reason: "Unavailable", message: `the fleet could not be joined: ${error.message}` })

/** Where a worker listens for other runners and clients, and (optionally) serves health and metrics. */
export interface WorkerAddress {
  readonly listen: { readonly host: string; readonly port: number }
  readonly health?: { readonly host: string; readonly port: number } | undefined
  /** The options of the worker's local live layer (`NativeRunner.layerNode`): sandbox, limits, caps. */
  readonly runner?: NativeRunner.Options | undefined
  /** The worker's local runner, instead of `NativeRunner.layerNode(runner)` (e.g. with an `Audit` sink provided). */
  readonly local?: Layer.Layer<NativeRunner.NativeRunner, NativeRunnerError> | undefined
}

/**
 * Creates the fleet's tables in the `SqlClient`'s database (the cluster's and the claims table) while holding one
 * advisory lock, so workers started together do not race on schema creation. `layerWorker` runs it at start.
 */
export const migrate = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* Effect.scoped(Effect.gen(function*() {
    const connection = yield* sql.reserve
    yield* Effect.acquireRelease(
      connection.executeRaw("SELECT pg_advisory_lock($1, $2)", [Claims.LOCK_CLASS, Claims.SCHEMA_LOCK]),
      () =>
        Effect.ignore(connection.executeRaw("SELECT pg_advisory_unlock($1, $2)", [Claims.LOCK_CLASS, Claims.SCHEMA_LOCK]))
    )
    yield* Effect.scoped(Layer.build(Layer.mergeAll(SqlMessageStorage.layer, SqlRunnerStorage.layer).pipe(
      Layer.provide(ShardingConfig.layer(shardingConfig))
    )))
    yield* Claims.migrate
  }))
})

/**
 * A worker: registers with the fleet at `listen`, hosts the runs routed to its shards with its own local live layer
 * (`NativeRunner.layerNode(runner)`), and serves `GET /health` and `GET /metrics` on `health` when given. Closing the
 * layer (SIGTERM in the CLI) stops taking work, lets runs in flight finish within `grace`, then kills their trees.
 */
export const layerWorker = (
  options: WorkerOptions & DatabaseOptions & WorkerAddress
): Layer.Layer<never, NativeRunnerError> => {
  const { databaseUrl, listen, health, runner, local, ...worker } = options
  return Layer.unwrapEffect(Effect.map(decode(WorkerOptions, worker), (decoded) => {
    const workerId = `${hostname()}:${listen.port}:${process.pid}`
    const draining = { value: false }
    const cluster = NodeClusterSocket.layer({
      storage: "sql",
      shardingConfig: {
        ...shardingConfig,
        runnerAddress: Option.some(RunnerAddress.make(listen.host, listen.port)),
        // On shutdown the cluster waits this long for the entities' runs in flight, then interrupts them.
        entityTerminationTimeout: decoded.grace
      }
    }).pipe(Layer.provide(Layer.effectDiscard(migrate)))
    // The claims store after the cluster layer, whose start created its table.
    const shared = Claims.layerSql(workerId).pipe(
      Layer.provideMerge(cluster),
      Layer.provideMerge(pg(databaseUrl)),
      Layer.mapError(unavailable)
    )
    // Released first on shutdown (built last): /health says "draining" while the runs in flight finish.
    const drainMark = Layer.scopedDiscard(Effect.addFinalizer(() => Effect.sync(() => (draining.value = true))))
    const handlers = layerWorkerWith(worker).pipe(Layer.provide(local ?? NativeRunner.layerNode(runner ?? {})))
    const work = Layer.mergeAll(handlers, drainMark).pipe(Layer.provide(shared))
    if (health === undefined) return work
    // Built first, released last: health and metrics stay up for the whole drain.
    const server = Layer.scopedDiscard(serveHealth(health, { workerId, draining: () => draining.value })).pipe(
      Layer.mapError(unavailable)
    )
    return work.pipe(Layer.provide(server))
  }))
}
