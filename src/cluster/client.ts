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
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import { FleetError } from "../Errors.js"
import { decodeInput, type ExecInput } from "../Exec.js"
import { NativeRunner } from "../NativeRunner.js"
import { awaitSettled, ClaimReader, claimKey, type Ended } from "./claims.js"
import { answerOf, eventFromWire, resultFromWire, RunnerEntity, toWire, type WireError, type WireResult } from "./protocol.js"

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
 * every RESCUE_POLL_MS; once the claim has ended (done, or lost) and RESCUE_GRACE_MS more have passed with no reply,
 * it answers from the claim itself: the stored outcome, or `WorkerLost`. Nothing is sent again, so nothing can run
 * twice (a re-send of a lost claim would run it again under at-least-once, and one of a swept claim under either).
 */
export const RESCUE_WATCH_MS = 2_000
export const RESCUE_POLL_MS = 1_000
export const RESCUE_GRACE_MS = 5_000

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
  // Never completes unless the claim of `key` has ended and the exec's own reply has not come (see RESCUE_*).
  const rescue = (key: string, requestId: string): Effect.Effect<WireResult, typeof WireError.Type> =>
    Option.match(reader, {
      onNone: () => Effect.never,
      onSome: (r) =>
        Effect.gen(function*() {
          yield* Effect.sleep(Duration.millis(RESCUE_WATCH_MS))
          const untilEnded = Effect.gen(function*() {
            for (;;) {
              const ended = yield* r.ended(key).pipe(Effect.orElseSucceed(() => Option.none<Ended>()))
              if (Option.isSome(ended)) return ended.value
              yield* Effect.sleep(Duration.millis(RESCUE_POLL_MS))
            }
          })
          yield* untilEnded
          yield* Effect.sleep(Duration.millis(RESCUE_GRACE_MS))
          // Read again: what the claim says now is the answer (swept meanwhile: wait, never run it again).
          const ended = { value: yield* untilEnded }
          yield* Effect.logWarning(
            `native-runner fleet: request ${requestId} ended (${ended.value._tag.toLowerCase()}) but its reply did not come; answering from its claim`
          )
          return ended.value._tag === "Done"
            ? yield* answerOf(ended.value.outcome)
            : yield* new FleetError({
              reason: "WorkerLost",
              requestId,
              message: `run ${requestId} did not finish on worker ${ended.value.workerId} (the worker stopped or the run ` +
                `was interrupted); it was not run again (under at-least-once, repeating its request id runs it again)`
            })
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
          input: yield* toWire(decoded),
          ...(settings.caps === undefined ? {} : { caps: settings.caps })
        }
        return { client: clientFor(route()), payload, requestId }
      })
    return NativeRunner.of({
      exec: (input) =>
        Effect.flatMap(request(input), ({ client, payload, requestId }) =>
          Effect.raceFirst(client.Exec(payload), rescue(claimKey(settings.tenant, requestId), requestId)).pipe(
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
