/**
 * The client side: a `NativeRunner` whose execs run on the fleet. Input is decoded here (bad input fails before
 * anything is sent); the request goes to the entity of its routing key; the cluster's own failures become `FleetError`.
 */
import type { AlreadyProcessingMessage, MailboxFull, PersistenceError } from "@effect/cluster/ClusterError"
import { Sharding } from "@effect/cluster/Sharding"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import { FleetError } from "../Errors.js"
import { decodeInput, type ExecInput } from "../Exec.js"
import { NativeRunner } from "../NativeRunner.js"
import { awaitSettled, ClaimReader, claimKey } from "./claims.js"
import { eventFromWire, resultFromWire, RunnerEntity, toWire } from "./protocol.js"

/** Where a client's runs go and how they are delivered. */
export interface ClientSettings {
  /** The tenant of every run of this client. */
  readonly tenant: string
  /**
   * How many entities a tenant's runs are spread over: 1 pins them all to one worker (at a time); more spreads them
   * (round robin over `tenant/0` .. `tenant/spread-1`, each hashed to a shard and so to a worker).
   */
  readonly spread: number
  readonly delivery: "at-most-once" | "at-least-once"
  /** The tenant's own caps on each worker, from its registration (set by a worker's client endpoint only). */
  readonly caps?: { readonly concurrency?: number | undefined; readonly queue?: number | undefined } | undefined
}

/** How long an interrupted exec waits for its worker to settle the run before it returns anyway. */
const SETTLE_BOUND = Duration.seconds(15)

/**
 * The rescue of an exec whose reply the cluster lost. @effect/cluster 0.60 force-interrupts every entity of a worker
 * whose shard-lock refresh ran late (a loaded host), and a request interrupted that way is never answered: its caller
 * waited until its socket hung up. So an exec that has not been answered after RESCUE_WATCH_MS looks at its claim
 * every RESCUE_POLL_MS; once the claim has an outcome (finished, or lost) and RESCUE_GRACE_MS more have passed with
 * no reply, it asks again with the same request id, and the worker that gets it answers from the stored outcome.
 */
export const RESCUE_WATCH_MS = 2_000
export const RESCUE_POLL_MS = 1_000
export const RESCUE_GRACE_MS = 5_000
/** How long each ask-again waits for its answer, and how many times it is tried before the exec gives up. */
const RESCUE_ASK_MS = 15_000
const RESCUE_TRIES = 4

/** The request id of the next fleet exec in this fiber (see `NativeRunnerCluster.withRequestId`). */
export const currentRequestId: FiberRef.FiberRef<Option.Option<string>> = FiberRef.unsafeMake(Option.none())

type ClusterFailure = MailboxFull | AlreadyProcessingMessage | PersistenceError

const fleetError = (requestId: string) => (error: ClusterFailure): FleetError => {
  switch (error._tag) {
    case "MailboxFull":
      return new FleetError({ reason: "Busy", requestId, message: `the worker's mailbox is full; nothing ran` })
    case "AlreadyProcessingMessage":
      return new FleetError({ reason: "Busy", requestId, message: `request ${requestId} is already being processed` })
    case "PersistenceError":
      return new FleetError({ reason: "Storage", requestId, message: `the fleet's storage failed: ${error.message}` })
  }
}

/**
 * Makes fleet runners over the cluster in context (`Sharding`): one `NativeRunner` per settings, all sharing the
 * entity client. A worker's client endpoint makes one per authenticated tenant; `layerClientWith` makes one.
 */
export const makeFleetRunners: Effect.Effect<(settings: ClientSettings) => NativeRunner["Type"], never, Sharding> = Effect.gen(function*() {
  const clientFor = yield* RunnerEntity.client
  const reader = yield* Effect.serviceOption(ClaimReader)
  // An interrupted exec returns once its worker has settled the run (killed the tree), as a local exec does.
  const awaitWorker = (requestId: string) =>
    Option.match(reader, { onNone: () => Effect.void, onSome: (r) => awaitSettled(r, requestId, SETTLE_BOUND) })
  // Never completes unless the claim of `key` has an outcome and the exec's own reply has not come (see RESCUE_*).
  const rescue = <A, E, R>(key: string, requestId: string, askAgain: Effect.Effect<A, E, R>) =>
    Option.match(reader, {
      onNone: () => Effect.never,
      onSome: (r) =>
        Effect.gen(function*() {
          yield* Effect.sleep(Duration.millis(RESCUE_WATCH_MS))
          yield* r.finished(key).pipe(
            Effect.orElseSucceed(() => false),
            Effect.repeat({ until: (finished) => finished, schedule: Schedule.spaced(Duration.millis(RESCUE_POLL_MS)) })
          )
          yield* Effect.sleep(Duration.millis(RESCUE_GRACE_MS))
          yield* Effect.logWarning(
            `native-runner fleet: request ${requestId} has an outcome but its reply did not come; asking again for it`
          )
          return yield* askAgain.pipe(
            Effect.timeoutFail({
              duration: Duration.millis(RESCUE_ASK_MS),
              onTimeout: () =>
                new FleetError({
                  reason: "Unavailable",
                  requestId,
                  message: `request ${requestId} finished on the fleet, but no worker answered with its outcome; ` +
                    `repeat it with the same request id later`
                })
            }),
            Effect.retry({
              times: RESCUE_TRIES - 1,
              while: (error) => error instanceof FleetError && error.reason === "Unavailable" && error.requestId === requestId
            })
          )
        })
    })
  return (settings) => {
    let next = 0
    const route = (): string => {
      const slot = next++ % settings.spread
      return settings.spread === 1 ? settings.tenant : `${settings.tenant}/${slot}`
    }
    const request = (input: ExecInput) =>
      Effect.gen(function*() {
        const decoded = yield* decodeInput(input)
        const requestId = Option.getOrElse(yield* FiberRef.get(currentRequestId), () => randomUUID())
        const payload = {
          requestId,
          tenant: settings.tenant,
          delivery: settings.delivery,
          input: toWire(decoded),
          ...(settings.caps === undefined ? {} : { caps: settings.caps })
        }
        return { client: clientFor(route()), payload, requestId }
      })
    return NativeRunner.of({
      exec: (input) =>
        Effect.flatMap(request(input), ({ client, payload, requestId }) =>
          Effect.raceFirst(
            client.Exec(payload),
            rescue(claimKey(settings.tenant, requestId), requestId, client.Exec(payload))
          ).pipe(
            Effect.onInterrupt(() => awaitWorker(claimKey(settings.tenant, requestId))),
            Effect.map(resultFromWire),
            Effect.catchTags({
              MailboxFull: (e) => Effect.fail(fleetError(requestId)(e)),
              AlreadyProcessingMessage: (e) => Effect.fail(fleetError(requestId)(e)),
              PersistenceError: (e) => Effect.fail(fleetError(requestId)(e))
            })
          )
        ).pipe(Effect.withSpan("NativeRunnerCluster.exec", { attributes: { tenant: settings.tenant } })),
      execStream: (input) =>
        Stream.unwrap(
          Effect.map(request(input), ({ client, payload, requestId }) =>
            client.ExecStream(payload).pipe(
              Stream.ensuring(awaitWorker(claimKey(settings.tenant, requestId))),
              Stream.map(eventFromWire),
              Stream.catchTags({
                MailboxFull: (e) => Stream.fail(fleetError(requestId)(e)),
                AlreadyProcessingMessage: (e) => Stream.fail(fleetError(requestId)(e)),
                PersistenceError: (e) => Stream.fail(fleetError(requestId)(e))
              })
            )
          )
        )
    })
  }
})

/** The client service over the cluster in context (`Sharding`). */
export const layerClientWith = (settings: ClientSettings): Layer.Layer<NativeRunner, never, Sharding> =>
  Layer.effect(NativeRunner, Effect.map(makeFleetRunners, (make) => make(settings)))
