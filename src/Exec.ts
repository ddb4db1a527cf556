/**
 * The data of one exec: the input (decoded once, at the edge, with `effect/Schema`), the result and the audit record.
 * The input accepts everything the seed's `NativeExecInput` has; the result is a superset of `NativeExecResult`.
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type { InvalidInput } from "./Errors.js"
import { toInvalidInput as invalidInputOf } from "./internal/invalidInput.js"
import type * as Sandbox from "./Sandbox.js"
import type { AuditRecord } from "./Audit.js"

/** Largest byte cap accepted: Node's largest Buffer. */
export const MAX_BYTES_CAP = 4 * 1024 * 1024 * 1024
/** Largest timeout accepted, in milliseconds: the largest delay a Node timer honours (about 24.8 days). */
export const MAX_TIMEOUT_MS = 2_147_483_647

// The message names no field: the path does ("argv.2: must not contain a NUL byte").
/** A string that can be passed to `execve` or `chdir`: no NUL bytes. */
export const ArgString = Schema.String.pipe(
  Schema.filter((s) => !s.includes("\u0000") || "must not contain a NUL byte")
)

// Names may appear in messages (they are not secret); values never do.
const envProblems = (name: string, value: unknown): Array<string> => [
  ...(name.length === 0
    ? ["an environment variable name must not be empty"]
    : name.includes("=")
    ? [`environment variable name ${JSON.stringify(name)} must not contain '='`]
    : name.includes("\u0000")
    ? ["an environment variable name must not contain a NUL byte"]
    : name === "__proto__"
    ? ["the environment variable name __proto__ is not supported"]
    : []),
  ...(typeof value !== "string"
    ? [`environment variable ${JSON.stringify(name)} must be a string`]
    : value.includes("\u0000")
    ? [`environment variable ${JSON.stringify(name)} must not contain a NUL byte`]
    : [])
]

const isPlainObject = (u: unknown): u is Readonly<Record<string, unknown>> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

const hasStringValues = (env: Readonly<Record<string, unknown>>): env is Readonly<Record<string, string>> =>
  Object.values(env).every((v) => typeof v === "string")

/**
 * Environment variables: names non-empty without `=` or NUL, values strings without NUL. Checked on the object's own
 * keys (a `Schema.Record` would silently drop a `__proto__` key from parsed JSON instead of rejecting it).
 */
export const Env = Schema.declare(isPlainObject, {
  identifier: "Env",
  description: "an object of string environment variables"
}).pipe(
  Schema.filter((env) => {
    const problems = Object.entries(env).flatMap(([name, value]) => envProblems(name, value))
    return problems.length === 0 || problems.join("; ")
  }),
  // Never fails after the check above (which names the variable); it narrows the type to string values.
  Schema.filter(hasStringValues)
)

/** A byte cap: a whole number from 0 to 4 GiB. */
export const ByteCap = Schema.Number.pipe(
  Schema.filter((n) =>
    Number.isSafeInteger(n) && n >= 0 && n <= MAX_BYTES_CAP || `must be a whole number of bytes from 0 to ${MAX_BYTES_CAP}`
  )
)

/** A timeout in milliseconds: a whole number from 1 to `MAX_TIMEOUT_MS`. */
export const TimeoutMs = Schema.Number.pipe(
  Schema.filter((n) =>
    Number.isSafeInteger(n) && n >= 1 && n <= MAX_TIMEOUT_MS ||
    `must be a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS}`
  )
)

// Duration.decode turns negative numbers and NaN into zero (a NaN grace would silently mean "SIGKILL at once"), so
// both are checked on the raw value first.
const isNegativeOrNaN = (u: unknown): boolean =>
  typeof u === "number"
    ? u < 0 || Number.isNaN(u)
    : typeof u === "bigint"
    ? u < 0
    : typeof u === "string"
    ? u.trim().startsWith("-")
    : Array.isArray(u) && u.some((part) => typeof part === "number" && (part < 0 || Number.isNaN(part)))

const isDurationInput = (u: unknown): u is Duration.DurationInput =>
  !isNegativeOrNaN(u) &&
  (typeof u === "number" || typeof u === "bigint" || typeof u === "string" || Array.isArray(u) || Duration.isDuration(u)) &&
  Option.isSome(Duration.decodeUnknown(u))

/** Any `Duration.DurationInput` ("500 millis", 1000, `Duration.seconds(2)`, ...) that is finite and not negative. */
export const DurationInput = Schema.declare(isDurationInput, {
  identifier: "DurationInput",
  description: "a Duration.DurationInput such as \"500 millis\" or Duration.seconds(2)"
}).pipe(
  Schema.filter((d) => {
    const decoded = Duration.decode(d)
    return Duration.isFinite(decoded) && Duration.toMillis(decoded) >= 0 || "must be a finite, non-negative duration"
  })
)

/** Per-call limits, as in the seed: every field optional, a missing one takes the layer's default. */
export const Limits = Schema.Struct({
  maxStdoutBytes: Schema.optional(ByteCap),
  maxStderrBytes: Schema.optional(ByteCap),
  timeoutMs: Schema.optional(TimeoutMs)
})
export type Limits = typeof Limits.Type

/** A duration above 0. */
export const PositiveDuration = DurationInput.pipe(
  Schema.filter((d) => Duration.toMillis(Duration.decode(d)) > 0 || "must be above 0")
)

/**
 * Which bytes of each stream the cap keeps: `"head"` the first ones (default), `"tail"` the last ones, `"both"` the
 * first and the last half of the cap (the result's `stdoutOmitted` / `stderrOmitted` say where the cut is).
 */
export const Keep = Schema.Literal("head", "tail", "both")
export type Keep = typeof Keep.Type

/**
 * Each stream, whole (up to `maxBytes`), also written to a new file (mode 0600) in `dir`; the result gives
 * `stdoutFile` / `stderrFile`. The caller owns the files.
 */
export const Spill = Schema.Struct({
  dir: Schema.String.pipe(Schema.filter((dir) => dir.startsWith("/") && !dir.includes("\u0000") || "must be an absolute path")),
  maxBytes: Schema.optional(Schema.Number.pipe(
    Schema.filter((n) => Number.isSafeInteger(n) && n >= 0 || "must be a whole number of bytes from 0")
  ))
})
export type Spill = typeof Spill.Type

/**
 * The input of `NativeRunner.exec`. Everything the seed's `NativeExecInput` has, plus Effect-style durations
 * (`timeout` wins over `limits.timeoutMs`; `killGrace` overrides the layer's grace period).
 */
export const ExecInput = Schema.Struct({
  argv: Schema.Array(ArgString).pipe(
    Schema.filter((argv) =>
      argv.length === 0 ? "must not be empty" : argv[0] === "" ? "the program (argv[0]) must not be empty" : true
    )
  ),
  cwd: Schema.optional(ArgString.pipe(Schema.nonEmptyString({ message: () => "must not be empty" }))),
  env: Schema.optional(Env),
  stdin: Schema.optional(Schema.Uint8ArrayFromSelf.annotations({ description: "a Uint8Array" })),
  limits: Schema.optional(Limits),
  timeout: Schema.optional(PositiveDuration),
  killGrace: Schema.optional(DurationInput),
  idleTimeout: Schema.optional(PositiveDuration),
  keep: Schema.optional(Keep),
  spill: Schema.optional(Spill)
})
export type ExecInput = typeof ExecInput.Type

const decodeExecInput = Schema.decodeUnknown(ExecInput, { errors: "all", onExcessProperty: "error" })

/** Decodes untrusted input once; failures become `InvalidInput` listing every problem with its path. */
export const decodeInput = (input: unknown): Effect.Effect<ExecInput, InvalidInput> =>
  decodeExecInput(input).pipe(Effect.mapError(toInvalidInput("invalid exec input")))

/**
 * Turns a Schema `ParseError` into `InvalidInput` naming each offending field and what it expected, never the value.
 * Messages written by our schemas (filters, `message` annotations) are kept, so they must not quote values either.
 */
export const toInvalidInput = (what: string): (error: ParseResult.ParseError) => InvalidInput => invalidInputOf(what)

/** Which resource limit ended a run, when that can be known from how it ended. */
export type LimitExceeded = Sandbox.LimitExceeded

/** The audit record of one exec; its Schema is `Audit.AuditRecord`. */
export type { AuditRecord } from "./Audit.js"

/**
 * One event of `NativeRunner.execStream`: `Started` first, then `Stdout` / `Stderr` chunks in the order they arrived
 * on each pipe, and last `Exit` with the same `result` `exec` returns. Chunks are bounded (up to 64 KiB each) and read
 * only: they are the capture's own bytes. `Exit.dropped` counts chunks a slow consumer missed (see `execStream`).
 */
export type ExecEvent = Data.TaggedEnum<{
  Started: { readonly runId: string; readonly pid: number }
  Stdout: { readonly bytes: Uint8Array }
  Stderr: { readonly bytes: Uint8Array }
  Exit: { readonly result: ExecResult; readonly dropped: { readonly chunks: number; readonly bytes: number } }
}>
export const ExecEvent = Data.taggedEnum<ExecEvent>()

/** Which timeout stopped a run. */
export type TimeoutKind = "wall" | "idle"

/** Bytes cut out of a captured stream: `bytes` of them, at `offset` in the kept bytes. */
export interface Omitted {
  readonly offset: number
  readonly bytes: number
}

/** What one run produced. Assignable to the seed's `NativeExecResult`. */
export interface ExecResult {
  /** The child's exit code; 124 on timeout; 128+n when killed by signal n. */
  exitCode: number
  /** The first `maxStdoutBytes` bytes of stdout, byte-exact. */
  stdout: Uint8Array
  stderr: Uint8Array
  truncatedStdout: boolean
  truncatedStderr: boolean
  /** Name of the signal that ended the process (e.g. "SIGKILL"), if one did. */
  signal?: string
  timedOut: boolean
  /** Which timeout stopped the run, when one did: the wall-clock `timeout` or the `idleTimeout`. */
  timeoutKind?: TimeoutKind
  durationMs: number
  /** Total bytes the child wrote to stdout, kept or not. */
  stdoutBytes: number
  stderrBytes: number
  /** Where bytes were cut out of `stdout` (`keep` tail or both, or head past the cap): at `offset`, `bytes` of them. */
  stdoutOmitted?: Omitted
  stderrOmitted?: Omitted
  /** The spill files (`spill`), with every byte up to `spill.maxBytes`. */
  stdoutFile?: string
  stderrFile?: string
  /** Set when writing a spill file failed (ENOSPC, EFBIG): that file stops there; the result is unaffected. */
  spillError?: string
  limitExceeded?: LimitExceeded
  /**
   * Set when reading stdout or stderr failed ("stderr: EIO: ..."); that stream is then also marked truncated, since
   * what came after the failure was never read.
   */
  readError?: string
  audits: Array<AuditRecord>
}
