/**
 * What crosses the wire between a fleet client and a worker: the exec input and result as JSON-safe Schemas (bytes as
 * base64, durations as milliseconds), the fleet's own errors, and the `NativeRunner` entity with its two RPCs.
 */
import * as Entity from "@effect/cluster/Entity"
import * as Rpc from "@effect/rpc/Rpc"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { AuditRecord } from "../Audit.js"
import { FleetError, InvalidInput, SandboxUnavailable, SpawnError } from "../Errors.js"
import type { ExecEvent, ExecInput, ExecResult } from "../Exec.js"
import { LimitExceeded } from "../Sandbox.js"

const Millis = Schema.Number

// A character class, not groups: a repeated group recurses in V8's regexp engine and overflows its stack on megabytes.
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/
const isBase64 = (text: string) => text.length % 4 === 0 && BASE64.test(text)

/**
 * Bytes as base64, through Node's Buffer: `Base64Bytes` encodes in JavaScript, 1.3 s for a 10 MB
 * stdin (measured), which made a fleet run with a large stdin slower than the command. Decoding accepts only
 * base64 (Buffer alone would skip what is not).
 */
const Base64Bytes = Schema.transformOrFail(Schema.String, Schema.Uint8ArrayFromSelf, {
  strict: true,
  decode: (text, _options, ast) =>
    isBase64(text)
      ? ParseResult.succeed(new Uint8Array(Buffer.from(text, "base64")))
      : ParseResult.fail(new ParseResult.Type(ast, text, "expected base64")),
  encode: (bytes) => ParseResult.succeed(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64"))
}).annotations({ identifier: "Base64Bytes" })

/** The exec input on the wire: already decoded by the client, so only JSON-safe shapes, no Schema filters repeated. */
export const WireInput = Schema.Struct({
  argv: Schema.Array(Schema.String),
  cwd: Schema.optionalWith(Schema.String, { exact: true }),
  env: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { exact: true }),
  stdin: Schema.optionalWith(Base64Bytes, { exact: true }),
  limits: Schema.optionalWith(
    Schema.Struct({
      maxStdoutBytes: Schema.optional(Schema.Number),
      maxStderrBytes: Schema.optional(Schema.Number),
      maxAllBytes: Schema.optional(Schema.Number),
      timeoutMs: Schema.optional(Schema.Number)
    }),
    { exact: true }
  ),
  timeoutMs: Schema.optionalWith(Millis, { exact: true }),
  killGraceMs: Schema.optionalWith(Millis, { exact: true }),
  idleTimeoutMs: Schema.optionalWith(Millis, { exact: true }),
  keep: Schema.optionalWith(Schema.Literal("head", "tail", "both"), { exact: true }),
  spill: Schema.optionalWith(
    Schema.Struct({ dir: Schema.String, maxBytes: Schema.optional(Schema.Number) }),
    { exact: true }
  ),
  all: Schema.optionalWith(Schema.Boolean, { exact: true })
})
export type WireInput = typeof WireInput.Type

const Omitted = Schema.Struct({ offset: Schema.Number, bytes: Schema.Number })

/** The exec result on the wire. `workerId` says which worker ran it (spill files stay on that worker). */
export const WireResult = Schema.Struct({
  exitCode: Schema.Number,
  stdout: Base64Bytes,
  stderr: Base64Bytes,
  truncatedStdout: Schema.Boolean,
  truncatedStderr: Schema.Boolean,
  signal: Schema.optionalWith(Schema.String, { exact: true }),
  timedOut: Schema.Boolean,
  timeoutKind: Schema.optionalWith(Schema.Literal("wall", "idle"), { exact: true }),
  durationMs: Schema.Number,
  stdoutBytes: Schema.Number,
  stderrBytes: Schema.Number,
  stdoutOmitted: Schema.optionalWith(Omitted, { exact: true }),
  stderrOmitted: Schema.optionalWith(Omitted, { exact: true }),
  all: Schema.optionalWith(Base64Bytes, { exact: true }),
  allOmitted: Schema.optionalWith(Omitted, { exact: true }),
  stdoutFile: Schema.optionalWith(Schema.String, { exact: true }),
  stderrFile: Schema.optionalWith(Schema.String, { exact: true }),
  spillError: Schema.optionalWith(Schema.String, { exact: true }),
  limitExceeded: Schema.optionalWith(LimitExceeded, { exact: true }),
  readError: Schema.optionalWith(Schema.String, { exact: true }),
  audits: Schema.Array(AuditRecord),
  worker: Schema.optionalWith(Schema.String, { exact: true })
})
export type WireResult = typeof WireResult.Type

/** One `execStream` event on the wire. */
export const WireEvent = Schema.Union(
  Schema.TaggedStruct("Started", { runId: Schema.String, pid: Schema.Number }),
  Schema.TaggedStruct("Stdout", { bytes: Base64Bytes }),
  Schema.TaggedStruct("Stderr", { bytes: Base64Bytes }),
  Schema.TaggedStruct("Exit", {
    result: WireResult,
    dropped: Schema.Struct({ chunks: Schema.Number, bytes: Schema.Number })
  })
)
export type WireEvent = typeof WireEvent.Type

/** Errors a fleet exec can end with: the local runner's, plus the fleet's own. */
export const WireError = Schema.Union(InvalidInput, SpawnError, SandboxUnavailable, FleetError)

const payload = {
  /** Unique per logical run: the claim key (at-most-once) and the idempotency key (a repeat returns the stored outcome). */
  requestId: Schema.String,
  tenant: Schema.String,
  delivery: Schema.Literal("at-most-once", "at-least-once"),
  input: WireInput,
  /** The tenant's registered caps (from the endpoint that authenticated it), below the worker's own. */
  caps: Schema.optionalWith(
    Schema.Struct({ concurrency: Schema.optional(Schema.Number), queue: Schema.optional(Schema.Number) }),
    { exact: true }
  )
}

export const ExecRpc = Rpc.make("Exec", { payload, success: WireResult, error: WireError })
export const ExecStreamRpc = Rpc.make("ExecStream", { payload, success: WireEvent, error: WireError, stream: true })

const decodeWireResult = Schema.decodeUnknown(WireResult)
const decodeWireError = Schema.decodeUnknown(WireError)

/** A stored outcome (the claim's) as the reply it was: the result, or the typed error it failed with. */
export const answerOf = (
  outcome: { readonly _tag: "Done"; readonly result: unknown } | { readonly _tag: "Failed"; readonly error: unknown }
): Effect.Effect<WireResult, typeof WireError.Type> =>
  outcome._tag === "Done"
    ? Effect.orDie(decodeWireResult(outcome.result))
    : Effect.flatMap(Effect.orDie(decodeWireError(outcome.error)), Effect.fail)

/** The entity every worker hosts; its id is the routing key (the tenant, or the tenant and a spread slot). */
export const RunnerEntity = Entity.make("NativeRunner", [ExecRpc, ExecStreamRpc])

const millis = (d: Duration.DurationInput | undefined): number | undefined =>
  d === undefined ? undefined : Duration.toMillis(Duration.decode(d))

/** The decoded exec input as it travels: durations in milliseconds. */
export const toWire = (input: ExecInput): Effect.Effect<WireInput, InvalidInput> => {
  const timeoutMs = millis(input.timeout)
  const killGraceMs = millis(input.killGrace)
  const idleTimeoutMs = millis(input.idleTimeout)
  const stdin = input.stdin
  if (stdin !== undefined && !(stdin instanceof Uint8Array)) {
    const message = "a Stream cannot be sent to a fleet worker: give the bytes"
    return Effect.fail(new InvalidInput({ message: `invalid exec input: stdin ${message}`, issues: [{ path: "stdin", message }] }))
  }
  return Effect.succeed({
    argv: input.argv,
    ...(input.cwd !== undefined ? { cwd: input.cwd } : {}),
    ...(input.env !== undefined ? { env: input.env } : {}),
    ...(stdin !== undefined ? { stdin } : {}),
    ...(input.limits !== undefined ? { limits: input.limits } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    ...(killGraceMs !== undefined ? { killGraceMs } : {}),
    ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
    ...(input.keep !== undefined ? { keep: input.keep } : {}),
    ...(input.spill !== undefined ? { spill: input.spill } : {}),
    ...(input.all !== undefined ? { all: input.all } : {})
  })
}

/** The wire input back as the local runner's input (the worker's runner decodes it again, at its own edge). */
export const fromWire = (wire: WireInput): ExecInput => ({
  argv: wire.argv,
  ...(wire.cwd !== undefined ? { cwd: wire.cwd } : {}),
  ...(wire.env !== undefined ? { env: wire.env } : {}),
  ...(wire.stdin !== undefined ? { stdin: wire.stdin } : {}),
  ...(wire.limits !== undefined ? { limits: wire.limits } : {}),
  ...(wire.timeoutMs !== undefined ? { timeout: Duration.millis(wire.timeoutMs) } : {}),
  ...(wire.killGraceMs !== undefined ? { killGrace: Duration.millis(wire.killGraceMs) } : {}),
  ...(wire.idleTimeoutMs !== undefined ? { idleTimeout: Duration.millis(wire.idleTimeoutMs) } : {}),
  ...(wire.keep !== undefined ? { keep: wire.keep } : {}),
  ...(wire.spill !== undefined ? { spill: wire.spill } : {}),
  ...(wire.all !== undefined ? { all: wire.all } : {})
})

/** The result as the caller sees it (mutable arrays, as `ExecResult` declares them). */
export const resultFromWire = (wire: WireResult): ExecResult => ({ ...wire, audits: wire.audits.map((a) => ({ ...a, argv: [...a.argv] })) })

export const eventFromWire = (wire: WireEvent): ExecEvent => {
  switch (wire._tag) {
    case "Started":
      return { _tag: "Started", runId: wire.runId, pid: wire.pid }
    case "Stdout":
      return { _tag: "Stdout", bytes: wire.bytes }
    case "Stderr":
      return { _tag: "Stderr", bytes: wire.bytes }
    case "Exit":
      return { _tag: "Exit", result: resultFromWire(wire.result), dropped: wire.dropped }
  }
}
