/**
 * The worker side: the `NativeRunner` entity's handlers over the worker's own local runner. Each request is admitted
 * (per-tenant cap and bounded queue), claimed durably, run, and its outcome stored before the reply.
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { FleetError, InvalidInput, type NativeRunnerError } from "../Errors.js"
import type { ExecEvent, ExecResult } from "../Exec.js"
import { DEFAULTS, NativeRunner } from "../NativeRunner.js"
import { createHash } from "node:crypto"
import { claimKey, ClaimStore, type ClaimStoreService, type Outcome, OWNER_CONFIRM_MS } from "./claims.js"
import { makeTenantGate, type TenantGate } from "./gate.js"
import * as FleetMetrics from "./metrics.js"
import { answerOf, ExecRpc, fromWire, RunnerEntity, WireError, type WireEvent, type WireInput, WireResult } from "./protocol.js"

/** How a worker takes work. */
export interface WorkerSettings {
  /** Past a run's own timeout and grace, how long a repeat waits for the worker that runs it (default 30 s). */
  readonly waitMarginMs?: number | undefined
  /** Runs in flight on this worker, all tenants together. */
  readonly concurrency: number
  /** Runs in flight on this worker for one tenant. */
  readonly tenantConcurrency: number
  /** Runs of one tenant waiting for a slot on this worker; one more fails with `FleetError` "Busy". */
  readonly queue: number
  /**
   * The worker's policy as a ceiling on what a request asks for (absent: requests are taken as they are, as in a
   * cluster inside one process). `layerWorker` derives it from the worker's runner options.
   */
  readonly ceiling?: Ceiling | undefined
}

/** What a request may ask for at most: the worker's own caps and timeouts, and its spill directory if it has one. */
export interface Ceiling {
  readonly maxStdoutBytes: number
  readonly maxStderrBytes: number
  /** The worker's cap of the combined capture (`all`): a request's is lowered to it. */
  readonly maxAllBytes?: number | undefined
  readonly timeoutMs: number
  readonly killGraceMs: number
  /** The worker's idle timeout, when it has one: a request's is lowered to it. */
  readonly idleTimeoutMs?: number | undefined
  /** Variables the worker sets for every run: a request may not set them (the worker's win). */
  readonly env?: Readonly<Record<string, string>> | undefined
  readonly spill?: { readonly dir: string; readonly maxBytes?: number | undefined } | undefined
}

/**
 * The request clamped to the worker's ceiling: caps and timeouts lowered to the worker's, never raised; a spill
 * request goes to the worker's own spill directory (within its size), and is refused when the worker has none (a
 * client must not choose where the worker writes files).
 */
export const clampToCeiling = (ceiling: Ceiling | undefined, input: WireInput): WireInput | InvalidInput => {
  if (ceiling === undefined) return input
  const atMost = (value: number | undefined, cap: number) => value === undefined ? undefined : Math.min(value, cap)
  const { limits, spill, timeoutMs, killGraceMs, idleTimeoutMs, ...rest } = input
  const taken = Object.keys(input.env ?? {}).filter((name) => ceiling.env !== undefined && Object.hasOwn(ceiling.env, name))
  if (taken.length > 0) {
    return new InvalidInput({
      message: `invalid exec input: env ${taken.join(", ")} ${taken.length === 1 ? "is" : "are"} set by the worker`,
      issues: taken.map((name) => ({ path: `env.${name}`, message: "refused: the worker sets this variable for every run" }))
    })
  }
  if (spill !== undefined && ceiling.spill === undefined) {
    return new InvalidInput({
      message: "invalid exec input: spill is the worker's setting; this worker has no spill directory",
      issues: [{ path: "spill", message: "refused: the worker names no spill directory" }]
    })
  }
  // With `all`, its cap is always set: without one the worker's runner would use its own default, which may be more.
  const allCap = ceiling.maxAllBytes ?? ceiling.maxStdoutBytes + ceiling.maxStderrBytes
  const allBytes = limits?.maxAllBytes !== undefined
    ? Math.min(limits.maxAllBytes, allCap)
    : input.all === true
    ? allCap
    : undefined
  const clampedLimits = limits === undefined && allBytes === undefined ? undefined : {
    ...(limits?.maxStdoutBytes === undefined ? {} : { maxStdoutBytes: Math.min(limits.maxStdoutBytes, ceiling.maxStdoutBytes) }),
    ...(limits?.maxStderrBytes === undefined ? {} : { maxStderrBytes: Math.min(limits.maxStderrBytes, ceiling.maxStderrBytes) }),
    ...(allBytes === undefined ? {} : { maxAllBytes: allBytes }),
    ...(limits?.timeoutMs === undefined ? {} : { timeoutMs: Math.min(limits.timeoutMs, ceiling.timeoutMs) })
  }
  const timeout = atMost(timeoutMs, ceiling.timeoutMs)
  const grace = atMost(killGraceMs, ceiling.killGraceMs)
  const idle = ceiling.idleTimeoutMs === undefined ? idleTimeoutMs : atMost(idleTimeoutMs, ceiling.idleTimeoutMs)
  const spillMax = spill?.maxBytes === undefined
    ? ceiling.spill?.maxBytes
    : ceiling.spill?.maxBytes === undefined ? spill.maxBytes : Math.min(spill.maxBytes, ceiling.spill.maxBytes)
  return {
    ...rest,
    ...(clampedLimits === undefined ? {} : { limits: clampedLimits }),
    ...(timeout === undefined ? {} : { timeoutMs: timeout }),
    ...(grace === undefined ? {} : { killGraceMs: grace }),
    ...(idle === undefined ? {} : { idleTimeoutMs: idle }),
    ...(spill === undefined || ceiling.spill === undefined
      ? {}
      : { spill: { dir: ceiling.spill.dir, ...(spillMax === undefined ? {} : { maxBytes: spillMax }) } })
  }
}

type Payload = typeof ExecRpc.payloadSchema.Type
type WireErrorType = typeof WireError.Type

const encodeResult = Schema.encodeSync(WireResult)
const encodeError = Schema.encodeSync(WireError)

const lost = (requestId: string, workerId: string): FleetError =>
  new FleetError({
    reason: "WorkerLost",
    requestId,
    message: `run ${requestId} did not finish on worker ${workerId} (the worker died or stopped, or the run was ` +
      `interrupted); under at-most-once it is not run again`
  })

/**
 * The entity's handlers as a layer: needs the cluster (`Sharding`), the local `NativeRunner` and the `ClaimStore`.
 * The gate and the in-flight table are the worker's, made once: the entity's build effect runs once per entity id
 * (a tenant's spread slots are several), and a gate per entity would let each slot take the tenant's whole cap.
 */
export const layerHandlers = (settings: WorkerSettings) =>
  Layer.unwrapEffect(
    Effect.gen(function*() {
      const gate = yield* makeTenantGate(settings)
      const local = new Map<string, Deferred.Deferred<Outcome>>()
      return RunnerEntity.toLayer(
        Effect.gen(function*() {
          const ctx: HandlerContext = {
            runner: yield* NativeRunner,
            claims: yield* ClaimStore,
            gate,
            local,
            ceiling: settings.ceiling,
            waitMarginMs: settings.waitMarginMs ?? WAIT_MARGIN_MS
          }
          return RunnerEntity.of({
            Exec: (envelope) => handleExec(ctx, envelope.payload),
            ExecStream: (envelope) => handleStream(ctx, envelope.payload)
          })
        }),
        // Admission is ours (the gate above); the mailbox only bounds what waits for it.
        { concurrency: "unbounded", mailboxCapacity: settings.concurrency + settings.queue * 4 + 64 }
      )
    })
  )

interface HandlerContext {
  readonly ceiling: Ceiling | undefined
  readonly runner: NativeRunner["Type"]
  readonly claims: ClaimStoreService
  readonly gate: TenantGate
  /** Runs in flight here by claim key, so a repeat delivered to this worker waits for the same outcome. */
  readonly local: Map<string, Deferred.Deferred<Outcome>>
  readonly waitMarginMs: number
}

/** Past a run's own timeout and grace, how much longer a repeat waits for the worker that runs it. */
const WAIT_MARGIN_MS = 30_000

/** How long the run of `payload` may take on this worker: its (clamped) timeout and kill grace. */
const runBoundMs = (ctx: HandlerContext, payload: Payload): number => {
  const input = payload.input
  const timeout = input.timeoutMs ?? input.limits?.timeoutMs ?? ctx.ceiling?.timeoutMs ?? Duration.toMillis(DEFAULTS.timeout)
  const grace = input.killGraceMs ?? ctx.ceiling?.killGraceMs ?? Duration.toMillis(DEFAULTS.killGrace)
  return timeout + grace
}

/**
 * The request's fingerprint: SHA-256 of everything that decides what runs (argv, cwd, env, stdin, limits, timeouts,
 * keep, spill) and its delivery, as the client sent it. The same request id with another fingerprint is a conflict.
 */
export const fingerprintOf = (payload: Payload): string => {
  const input = payload.input
  const canonical = (value: unknown): unknown =>
    value instanceof Uint8Array
      ? { bytes: Buffer.from(value).toString("base64") }
      : Array.isArray(value)
      ? value.map(canonical)
      : typeof value === "object" && value !== null
      ? Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical((value as Record<string, unknown>)[k])]))
      : value
  return createHash("sha256").update(JSON.stringify(canonical({ input, delivery: payload.delivery }))).digest("hex")
}

/** What to do with a request: run it here, or answer with a stored (or awaited) outcome. */
type Decision = { readonly _tag: "Run" } | { readonly _tag: "Answer"; readonly outcome: Outcome }

const decide = (ctx: HandlerContext, payload: Payload, mine: Mine): Effect.Effect<Decision, FleetError> =>
  Effect.gen(function*() {
    const { requestId, tenant } = payload
    // Claims are the tenant's: another tenant's request id of the same name is another claim.
    const key = claimKey(tenant, requestId)
    const fingerprint = fingerprintOf(payload)
    // A repeat waits for a live owner at most as long as the run itself may take, plus a margin.
    const waitUntil = Date.now() + runBoundMs(ctx, payload) + ctx.waitMarginMs
    // The owner last seen without its lock, once: seen so twice OWNER_CONFIRM_MS apart, it is taken for dead.
    let suspect: string | undefined
    for (;;) {
      // Uninterruptible from the INSERT to `mine.claimed`: a claim made is always one this run will settle (marked
      // lost by `begin`'s finalizer if the run is interrupted before it records an outcome).
      const state = yield* Effect.uninterruptible(Effect.tap(ctx.claims.claim(key, tenant, fingerprint), (found) =>
        found._tag === "Claimed" ? mine.claim() : Effect.void))
      if (state._tag !== "Claimed" && state.fingerprint !== null && state.fingerprint !== fingerprint) {
        return yield* new FleetError({
          reason: "IdempotencyConflict",
          requestId,
          message: `request id ${requestId} was used before for another request (argv, cwd, env, stdin, limits or ` +
            `delivery differ); nothing ran`
        })
      }
      switch (state._tag) {
        case "Claimed":
          return { _tag: "Run" } as const
        case "Finished":
          yield* FleetMetrics.countRequest("repeat")
          return { _tag: "Answer", outcome: state.outcome } as const
        case "Running": {
          const here = ctx.local.get(key)
          if (here !== undefined) return { _tag: "Answer", outcome: yield* Deferred.await(here) } as const
          if (!state.ownerAlive && suspect !== state.workerId) {
            // Its owner holds no lock right now: it may be taking it again after a dropped connection. Look again
            // after longer than that takes before taking the owner for dead.
            suspect = state.workerId
            yield* Effect.sleep(Duration.millis(OWNER_CONFIRM_MS))
            continue
          }
          if (state.ownerAlive) {
            suspect = undefined
            // Another live worker runs it (a repeat sent while it runs): wait for its stored outcome, not for ever.
            if (Date.now() > waitUntil) {
              return yield* new FleetError({
                reason: "Busy",
                requestId,
                message: `request ${requestId} is still running on worker ${state.workerId} past its own deadline; ` +
                  `not waiting longer (repeat it later for its outcome)`
              })
            }
            yield* Effect.sleep(Duration.millis(100))
            continue
          }
          break
        }
        case "Lost":
          break
      }
      // The claim will not finish where it was: its worker died, or the run was interrupted.
      if (payload.delivery === "at-least-once") {
        if (yield* Effect.uninterruptible(Effect.tap(ctx.claims.reclaim(key, state.workerId), (taken) => taken ? mine.claim() : Effect.void))) {
          yield* FleetMetrics.countRequest("rerun")
          return { _tag: "Run" } as const
        }
        continue // another worker took it over first: look again
      }
      if (state._tag === "Running") yield* ctx.claims.markLost(key, state.workerId)
      yield* FleetMetrics.countRequest("lost")
      return yield* lost(requestId, state.workerId)
    }
  })

const outcomeOf = (workerId: string, exit: Exit.Exit<ExecResult, NativeRunnerError>): Option.Option<Outcome> =>
  Exit.isSuccess(exit)
    ? Option.some({ _tag: "Done", result: encodeResult({ ...exit.value, worker: workerId }) })
    : Option.map(Cause.failureOption(exit.cause), (error) => ({ _tag: "Failed", error: encodeError(error) }))

const answer = (outcome: Outcome): Effect.Effect<WireResult, WireErrorType> => answerOf(outcome)

/** Records the run's outcome durably, then for repeats waiting on this worker; None when the run was interrupted. */
const record = (ctx: HandlerContext, key: string, exit: Exit.Exit<ExecResult, NativeRunnerError>) =>
  Effect.gen(function*() {
    const outcome = outcomeOf(ctx.claims.workerId, exit)
    // Interrupted (the worker stops past its grace): the claim stays "running"; once this worker's lock is gone a
    // repeat finds it lost.
    if (Option.isNone(outcome)) return outcome
    yield* ctx.claims.finish(key, outcome.value)
    const waiting = ctx.local.get(key)
    if (waiting !== undefined) yield* Deferred.succeed(waiting, outcome.value)
    return outcome
  }).pipe(Effect.ensuring(Effect.sync(() => ctx.local.delete(key))))

/** Records the outcome and returns it as the reply. */
const settle = (ctx: HandlerContext, key: string, exit: Exit.Exit<ExecResult, NativeRunnerError>) =>
  Effect.flatMap(record(ctx, key, exit), (outcome) => Option.isSome(outcome) ? answer(outcome.value) : exit)

/** A run's hold on its claim: `claim` is called the moment the claim is this run's (inside the claim's own step). */
interface Mine {
  readonly claim: () => Effect.Effect<void>
}

/**
 * Registers, before anything is claimed, what settles the claim if this run's scope closes before `record` (the caller
 * or the worker's shutdown interrupted the run): once `mine.claim()` has run, the claim is marked lost, so a repeat
 * fails with "WorkerLost" under at-most-once and runs it again under at-least-once, and repeats waiting here get
 * "WorkerLost". `mine.claim()` also makes this run the one repeats on this worker wait for.
 */
const begin = (ctx: HandlerContext, payload: Payload): Effect.Effect<Mine, never, Scope.Scope> =>
  Effect.gen(function*() {
    const done = yield* Deferred.make<Outcome>()
    const key = claimKey(payload.tenant, payload.requestId)
    let claimed = false
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        if (!claimed || (yield* Deferred.isDone(done))) return
        const outcome: Outcome = { _tag: "Failed", error: encodeError(lost(payload.requestId, ctx.claims.workerId)) }
        yield* Effect.ignore(ctx.claims.markLost(key, ctx.claims.workerId))
        yield* Deferred.succeed(done, outcome)
        if (ctx.local.get(key) === done) ctx.local.delete(key)
      })
    )
    return {
      claim: () =>
        Effect.sync(() => {
          claimed = true
          ctx.local.set(key, done)
        })
    }
  })

/** The payload with its input clamped to the worker's ceiling, or the refusal (before anything is claimed). */
const withinCeiling = (ctx: HandlerContext, payload: Payload): Effect.Effect<Payload, InvalidInput> => {
  const input = clampToCeiling(ctx.ceiling, payload.input)
  return input instanceof InvalidInput ? Effect.fail(input) : Effect.succeed({ ...payload, input })
}

const handleExec = (ctx: HandlerContext, given: Payload): Effect.Effect<WireResult, WireErrorType> =>
  Effect.scoped(
    Effect.gen(function*() {
      const payload = yield* withinCeiling(ctx, given)
      const admission = yield* ctx.gate.admit(payload.tenant, payload.requestId, payload.caps)
      const mine = yield* begin(ctx, payload)
      const decision = yield* decide(ctx, payload, mine)
      if (decision._tag === "Answer") return yield* answer(decision.outcome)
      yield* admission.slot
      yield* FleetMetrics.countRequest("ran")
      const exit = yield* Effect.exit(ctx.runner.exec(fromWire(payload.input)))
      return yield* settle(ctx, claimKey(payload.tenant, payload.requestId), exit)
    })
  ).pipe(Effect.withSpan("NativeRunnerCluster.worker.exec", { attributes: { tenant: given.tenant } }))

const toWireEvent = (workerId: string) => (event: ExecEvent): WireEvent =>
  event._tag === "Exit" ? { ...event, result: { ...event.result, worker: workerId } } : event

const CHUNK = 64 * 1024

const chunks = (tag: "Stdout" | "Stderr", bytes: Uint8Array): Array<WireEvent> =>
  Array.from({ length: Math.ceil(bytes.length / CHUNK) }, (_, i) => ({
    _tag: tag,
    bytes: bytes.subarray(i * CHUNK, (i + 1) * CHUNK)
  }))

/** A stored outcome as events: its kept output in chunks, then `Exit` (no `Started`: nothing starts). */
const replay = (result: WireResult): Stream.Stream<WireEvent> =>
  Stream.fromIterable([
    ...chunks("Stdout", result.stdout),
    ...chunks("Stderr", result.stderr),
    { _tag: "Exit", result, dropped: { chunks: 0, bytes: 0 } }
  ])

const handleStream = (ctx: HandlerContext, given: Payload): Stream.Stream<WireEvent, WireErrorType> =>
  Stream.unwrapScoped(
    Effect.gen(function*() {
      const payload = yield* withinCeiling(ctx, given)
      const admission = yield* ctx.gate.admit(payload.tenant, payload.requestId, payload.caps)
      const mine = yield* begin(ctx, payload)
      const decision = yield* decide(ctx, payload, mine)
      if (decision._tag === "Answer") return replay(yield* answer(decision.outcome))
      yield* admission.slot
      yield* FleetMetrics.countRequest("ran")
      return ctx.runner.execStream(fromWire(payload.input)).pipe(
        Stream.tapError((error) => record(ctx, claimKey(payload.tenant, payload.requestId), Exit.fail(error))),
        Stream.tap((event) =>
          event._tag === "Exit"
            ? Effect.asVoid(record(ctx, claimKey(payload.tenant, payload.requestId), Exit.succeed(event.result)))
            : Effect.void
        ),
        Stream.map(toWireEvent(ctx.claims.workerId))
      )
    })
  )
