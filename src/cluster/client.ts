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
          client.Exec(payload).pipe(
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
