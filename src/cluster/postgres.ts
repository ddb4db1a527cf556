/**
 * The fleet on PostgreSQL: the connection, the cluster's settings shared by clients and workers, schema creation under
 * an advisory lock, and how a worker's layers are put together (health outlives the drain, claims follow the schema).
 */
import * as RunnerAddress from "@effect/cluster/RunnerAddress"
import type { Sharding } from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { hostname } from "node:os"
import { FleetError, type NativeRunnerError } from "../Errors.js"
import * as Claims from "./claims.js"
import * as Tenants from "./tenants.js"
import { serveHealth } from "./health.js"
import { type FleetTls, loadFleetTls } from "./pki.js"
import { layerClusterTls } from "./tls.js"
import { serveClients } from "./endpoint.js"

/**
 * Shards per group. Client and workers must agree (a mismatch drops messages silently), so it is fixed here rather
 * than an option.
 */
export const SHARDS_PER_GROUP = 300

export type DatabaseUrl = string | Redacted.Redacted<string>

/** A connection pool to the fleet's database. */
export const pg = (databaseUrl: DatabaseUrl) =>
  PgClient.layer({
    url: Redacted.isRedacted(databaseUrl) ? databaseUrl : Redacted.make(databaseUrl),
    // Fleet clients and workers hold few connections each: the cluster's lock connection, ours, and a small pool.
    maxConnections: 8
  })

export const shardingConfig = {
  shardsPerGroup: SHARDS_PER_GROUP,
  // A worker is taken for dead when its heartbeat (every shardLockRefreshInterval) is older than shardLockExpiration;
  // only then do its shards move and a run it claimed answer "WorkerLost". The defaults (10 s, 35 s) made a SIGKILLed
  // worker's run fail about 34 s later (measured). A refresh that takes longer than min(interval, expiration / 3)
  // makes the cluster take its own shard locks for unhealthy and force-interrupt every run on the worker: with 2 s and
  // 10 s that happened under load (PostgreSQL on the same 2 busy cores), killing runs and leaving a request
  // unanswered. 5 s and 15 s give a refresh 5 s, for one small UPDATE per worker every 5 s. Shard locks themselves are
  // PostgreSQL advisory locks, dropped at once with the dead worker's connection.
  shardLockRefreshInterval: Duration.seconds(5),
  shardLockExpiration: Duration.seconds(15),
  runnerHealthCheckInterval: Duration.seconds(5),
  // Replies come back over the runner connection; polling storage is the fallback.
  entityReplyPollInterval: Duration.millis(200),
  refreshAssignmentsInterval: Duration.seconds(1)
} as const

/** Joining the fleet failed (database unreachable, listen address taken, schema creation failed). */
const unavailable = (error: { readonly message: string }): FleetError =>
  new FleetError({ reason: "Unavailable", message: `the fleet could not be joined: ${error.message}` })

/** Creates the cluster's tables and the claims table while holding the schema lock. */
export const migrate: Effect.Effect<void, SqlError, SqlClient.SqlClient> = Effect.gen(function*() {
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
    yield* Tenants.migrate(sql)
  }))
})

/** What a worker is made of, besides its handlers' own options. */
export interface WorkerParts<E> {
  readonly databaseUrl: DatabaseUrl
  readonly listen: { readonly host: string; readonly port: number }
  /** The fleet directory: the worker's certificate and key and the fleet's CA (`native-runner fleet init`). */
  readonly fleetDir: string
  readonly health?: { readonly host: string; readonly port: number } | undefined
  /** Where clients with a tenant credential reach this worker (HTTPS); absent: no client endpoint here. */
  readonly clientListen?: { readonly host: string; readonly port: number } | undefined
  readonly grace: Duration.DurationInput
  /** How long finished and lost claims are kept (`Claims.layerSql`). */
  readonly retention?: Duration.DurationInput | undefined
  /** The entity's handlers with their local runner; they need the cluster and a claim store. */
  readonly handlers: Layer.Layer<never, E, Sharding | Claims.ClaimStore>
}

/** A worker on PostgreSQL: schema, cluster, claims, handlers, and health and metrics that outlive the drain. */
export const workerLayer = <E>(parts: WorkerParts<E>): Layer.Layer<never, E | NativeRunnerError> =>
  // No certificate, no worker: it never listens in the clear.
  Layer.unwrapEffect(Effect.map(loadFleetTls(parts.fleetDir), (material) => workerLayerWith(parts, material)))

const workerLayerWith = <E>(parts: WorkerParts<E>, material: FleetTls): Layer.Layer<never, E | NativeRunnerError> => {
  const { listen, health } = parts
  const workerId = `${hostname()}:${listen.port}:${process.pid}`
  const draining = { value: false }
  const ready = { value: false }
  const cluster = layerClusterTls(material, {
    clientOnly: false,
    shardingConfig: {
      ...shardingConfig,
      runnerAddress: Option.some(RunnerAddress.make(listen.host, listen.port)),
      // On shutdown the cluster waits this long for the entities' runs in flight, then interrupts them.
      entityTerminationTimeout: parts.grace
    }
  }).pipe(Layer.provide(Layer.effectDiscard(migrate)))
  // The claims store after the cluster layer, whose start created its table.
  const shared = Layer.merge(Claims.layerSql(workerId, parts.retention), Claims.layerSqlReader).pipe(
    Layer.provideMerge(cluster),
    Layer.provideMerge(pg(parts.databaseUrl)),
    Layer.mapError(unavailable)
  )
  // Released first on shutdown (built last): /health says "draining" while the runs in flight finish.
  const drainMark = Layer.scopedDiscard(Effect.addFinalizer(() => Effect.sync(() => (draining.value = true))))
  // The client endpoint hands runs to the cluster; on shutdown it takes no new ones and lets those in flight finish
  // within the grace.
  const endpoint = parts.clientListen === undefined
    ? Layer.empty
    : Layer.scopedDiscard(serveClients(parts.clientListen, material, parts.grace))
  // Ready once everything else is built (the local runner's sandbox checked, the endpoints listening).
  const work = Layer.effectDiscard(Effect.sync(() => (ready.value = true))).pipe(
    Layer.provide(Layer.mergeAll(parts.handlers, drainMark, endpoint).pipe(Layer.provide(shared)))
  )
  if (health === undefined) return work
  // Built first, released last: health and metrics stay up for the whole drain.
  const server = Layer.scopedDiscard(serveHealth(health, {
    workerId,
    draining: () => draining.value,
    ready: () => ready.value,
    metricsTokenHash: material.metricsTokenHash
  })).pipe(
    Layer.mapError(unavailable)
  )
  return work.pipe(Layer.provide(server))
}
