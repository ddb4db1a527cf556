/**
 * The runner as a fleet: the same `NativeRunner` Tag served by worker machines through `@effect/cluster`, with
 * PostgreSQL as the shared store. `layerClient` provides `NativeRunner` (code that uses the runner does not change);
 * `layerWorker` hosts runs on a machine with its own local live layer. Delivery is at-most-once by default: each run
 * is claimed durably before anything is spawned, and a run whose worker died fails with `FleetError` "WorkerLost"
 * instead of running twice. A repeated request id (`withRequestId`) returns the stored outcome.
 */
import type { Sharding } from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as TestRunner from "@effect/cluster/TestRunner"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type { NativeRunnerError } from "./Errors.js"
import * as Exec from "./Exec.js"
import * as NativeRunner from "./NativeRunner.js"
import * as Claims from "./cluster/claims.js"
import * as HttpClient from "./cluster/httpClient.js"
import * as Postgres from "./cluster/postgres.js"
import * as Tenants from "./cluster/tenants.js"
import { currentRequestId, layerClientWith as clientLayer } from "./cluster/client.js"
import { type Ceiling, layerHandlers } from "./cluster/worker.js"


import { FleetError } from "./Errors.js"

export { FleetError }

/** Shards per group: fixed, since client and workers must agree (a mismatch drops messages silently). */
export const SHARDS_PER_GROUP = Postgres.SHARDS_PER_GROUP

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
export const WORKER_DEFAULTS = { concurrency: 16, queue: 64, grace: Duration.seconds(10), retention: Duration.hours(24) } as const

/**
 * How a worker takes work. Defaults: concurrency 16, tenantConcurrency = concurrency, queue 64, grace 10 s, retention
 * 24 h.
 */
export const WorkerOptions = Schema.Struct({
  /** Runs in flight on this worker, all tenants together. */
  concurrency: Schema.optionalWith(Positive, { default: () => WORKER_DEFAULTS.concurrency }),
  /** Runs in flight on this worker for one tenant (default: `concurrency`). */
  tenantConcurrency: Schema.optional(Positive),
  /** Runs of one tenant waiting here for a slot; one more fails at once with `FleetError` "Busy". */
  queue: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => WORKER_DEFAULTS.queue }),
  /** On shutdown, how long runs in flight may finish before their trees are killed. */
  grace: Schema.optionalWith(Exec.DurationInput, { default: () => WORKER_DEFAULTS.grace }),
  /**
   * How long a finished or lost claim (its stored outcome: the kept stdout and stderr, within the caps) stays in
   * PostgreSQL, and so how long a repeat of its request id is answered from it; after that the id is new again.
   */
  retention: Schema.optionalWith(Exec.DurationInput, { default: () => WORKER_DEFAULTS.retention })
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
export const layerWorkerWith = (options: WorkerOptions = {}, ceiling?: Ceiling) =>
  Layer.unwrapEffect(
    Effect.map(decode(WorkerOptions, options), (o) =>
      layerHandlers({
        concurrency: o.concurrency,
        tenantConcurrency: o.tenantConcurrency ?? o.concurrency,
        queue: o.queue,
        ceiling
      })
    )
  )

/**
 * The ceiling a worker's runner options put on requests: their output caps, timeout, kill grace (defaults
 * included) and idle timeout, the variables they set (a request may not set those), and their spill directory if
 * any. `layerWorker` applies it to every request.
 */
export const ceilingOf = (runner: NativeRunner.Options = {}): Effect.Effect<Ceiling, NativeRunnerError> =>
  Effect.map(NativeRunner.decodeOptions(NativeRunner.Options, runner), (o) => ({
    maxStdoutBytes: o.maxStdoutBytes,
    maxStderrBytes: o.maxStderrBytes,
    // A worker that keeps no combined capture itself keeps no more for a request than its two streams' caps.
    maxAllBytes: o.all ? o.maxAllBytes : Math.min(o.maxAllBytes, o.maxStdoutBytes + o.maxStderrBytes),
    timeoutMs: Duration.toMillis(Duration.decode(o.timeout)),
    killGraceMs: Duration.toMillis(Duration.decode(o.killGrace)),
    ...(o.idleTimeout === undefined ? {} : { idleTimeoutMs: Duration.toMillis(Duration.decode(o.idleTimeout)) }),
    ...(o.env === undefined || Object.keys(o.env).length === 0 ? {} : { env: o.env }),
    ...(o.spill === undefined ? {} : { spill: o.spill })
  }))

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

/**
 * How a worker reaches the fleet: its PostgreSQL (the URL is kept `Redacted`: it never reaches an error message or a
 * log), and the fleet directory holding the member certificate and key and the fleet's CA (`native-runner fleet
 * init`): every connection between workers is mutually authenticated TLS 1.3, and nothing without a certificate from
 * the fleet's CA gets an answer from a worker.
 */
export interface DatabaseOptions {
  readonly databaseUrl: Postgres.DatabaseUrl
  readonly fleetDir: string
}

/** A client's options: which worker endpoint, whose credentials, and how its runs are spread and delivered. */
export const HttpClientOptions = Schema.Struct({
  /** A worker's client endpoint, `https://HOST:PORT` (its `--client-listen`); any worker reaches every worker. */
  url: Schema.String,
  /**
   * The tenant's credentials: the path of the file `native-runner fleet tenant` wrote (0600), or its contents. The
   * tenant of every run is the credential's.
   */
  credentials: Schema.Union(
    Schema.String,
    Schema.Struct({ tenant: Schema.String, token: Schema.Redacted(Schema.String), ca: Schema.String })
  ),
  spread: ClientOptions.fields.spread,
  delivery: ClientOptions.fields.delivery
})
export type HttpClientOptions = typeof HttpClientOptions.Encoded

/**
 * A client of the fleet: provides `NativeRunner`. It holds no database URL and no fleet certificate, only a tenant's
 * credentials: it sends each run over HTTPS (the fleet's CA pinned, the worker's name checked) to one worker's
 * client endpoint, which authenticates the tenant and hands the run to the cluster. A refused credential fails every
 * exec with `FleetError` "Unauthenticated"; an unreachable endpoint with "Unavailable".
 *
 * @example
 * const FleetRunner = NativeRunnerCluster.layerClient({
 *   url: "https://worker-1.internal:34440",
 *   credentials: "/etc/native-runner/acme.credentials"
 * })
 */
export const layerClient = (options: HttpClientOptions): Layer.Layer<NativeRunner.NativeRunner, NativeRunnerError> =>
  Layer.unwrapScoped(Effect.gen(function*() {
    const decoded = yield* NativeRunner.decodeOptions(HttpClientOptions, options)
    const url = HttpClient.parseEndpointUrl(decoded.url)
    if (typeof url === "string") {
      return yield* new FleetError({ reason: "Unavailable", message: `url ${JSON.stringify(decoded.url)}: ${url}` })
    }
    const credentials = typeof decoded.credentials === "string"
      ? yield* Tenants.readCredentials(decoded.credentials)
      : decoded.credentials
    return HttpClient.layer({ url, credentials, spread: decoded.spread, delivery: decoded.delivery })
  }))

/**
 * Registers tenant `name` in the fleet's database (the workers' `SqlClient`) with its caps, and returns its
 * credentials: a new random secret (only its SHA-256 is stored) and the fleet's CA, what `layerClient` needs. Again
 * for the same name: a new secret (the old one stops working), revocation lifted.
 */
export const registerTenant = (
  name: string,
  options: { readonly ca: string; readonly concurrency?: number; readonly queue?: number }
) =>
  Effect.map(Tenants.register(name, options), (token) => ({ tenant: name, token, ca: options.ca }))

/** Revokes tenant `name`: every worker refuses its credential from the next request on. */
export const revokeTenant = Tenants.revoke

/** Where a worker listens for other runners and clients, and (optionally) serves health and metrics. */
export interface WorkerAddress {
  readonly listen: { readonly host: string; readonly port: number }
  /** Where clients with tenant credentials reach this worker (HTTPS, the fleet certificate); absent: not here. */
  readonly clientListen?: { readonly host: string; readonly port: number } | undefined
  readonly health?: { readonly host: string; readonly port: number } | undefined
  /**
   * The options of the worker's local live layer (`NativeRunner.layerNode`): sandbox, limits, caps. Its output caps,
   * timeout, kill grace and spill directory are also the ceiling of what a request may ask for.
   */
  readonly runner?: NativeRunner.Options | undefined
  /**
   * The worker's local runner, instead of `NativeRunner.layerNode(runner)` (e.g. with an `Audit` sink provided);
   * give `runner` too, for the ceiling.
   */
  readonly local?: Layer.Layer<NativeRunner.NativeRunner, NativeRunnerError> | undefined
}

/**
 * Creates the fleet's tables in the `SqlClient`'s database (the cluster's and the claims table) while holding one
 * advisory lock, so workers started together do not race on schema creation. `layerWorker` runs it at start.
 */
export const migrate = Postgres.migrate

/**
 * A worker: registers with the fleet at `listen`, hosts the runs routed to its shards with its own local live layer
 * (`NativeRunner.layerNode(runner)`), and serves `GET /health` and `GET /metrics` on `health` when given. Closing the
 * layer (SIGTERM in the CLI) stops taking work, lets runs in flight finish within `grace`, then kills their trees.
 */
export const layerWorker = (
  options: WorkerOptions & DatabaseOptions & WorkerAddress
): Layer.Layer<never, NativeRunnerError> => {
  const { databaseUrl, fleetDir, listen, clientListen, health, runner, local, ...worker } = options
  return Layer.unwrapEffect(Effect.map(Effect.zip(decode(WorkerOptions, worker), ceilingOf(runner)), ([decoded, ceiling]) =>
    Postgres.workerLayer({
      databaseUrl,
      fleetDir,
      listen,
      clientListen,
      health,
      grace: decoded.grace,
      retention: decoded.retention,
      // A request asks within the worker's policy: its caps, timeouts and spill directory are ceilings.
      handlers: layerWorkerWith(worker, ceiling).pipe(Layer.provide(local ?? NativeRunner.layerNode(runner ?? {})))
    })))
}
