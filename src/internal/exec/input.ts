/**
 * Before the steps of an exec: the input's Schemas and its one decode, every problem reported by its path. `Exec.ts`
 * re-exports each Schema with its documentation.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type { InvalidInput } from "../errors.js"
import { toInvalidInput } from "../invalidInput.js"

export const MAX_BYTES_CAP = 4 * 1024 * 1024 * 1024
export const MAX_TIMEOUT_MS = 2_147_483_647

// The message names no field: the path does ("argv.2: must not contain a NUL byte").
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

export const ByteCap = Schema.Number.pipe(
  Schema.filter((n) =>
    Number.isSafeInteger(n) && n >= 0 && n <= MAX_BYTES_CAP || `must be a whole number of bytes from 0 to ${MAX_BYTES_CAP}`
  )
)

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

export const DurationInput = Schema.declare(isDurationInput, {
  identifier: "DurationInput",
  description: "a Duration.DurationInput such as \"500 millis\" or Duration.seconds(2)"
}).pipe(
  Schema.filter((d) => {
    const decoded = Duration.decode(d)
    return Duration.isFinite(decoded) && Duration.toMillis(decoded) >= 0 || "must be a finite, non-negative duration"
  })
)

export const Limits = Schema.Struct({
  maxStdoutBytes: Schema.optional(ByteCap),
  maxStderrBytes: Schema.optional(ByteCap),
  /** The cap of the combined capture (`all`). */
  maxAllBytes: Schema.optional(ByteCap),
  timeoutMs: Schema.optional(TimeoutMs)
})

export const PositiveDuration = DurationInput.pipe(
  Schema.filter((d) => Duration.toMillis(Duration.decode(d)) > 0 || "must be above 0")
)

export const Keep = Schema.Literal("head", "tail", "both")

export const Spill = Schema.Struct({
  dir: Schema.String.pipe(Schema.filter((dir) => dir.startsWith("/") && !dir.includes("\u0000") || "must be an absolute path")),
  maxBytes: Schema.optional(Schema.Number.pipe(
    Schema.filter((n) => Number.isSafeInteger(n) && n >= 0 || "must be a whole number of bytes from 0")
  ))
})

/** A `Stream` of stdin bytes: pulled as the child reads it (see `ExecInput`). */
export const StdinStream = Schema.declare(
  (u: unknown): u is Stream.Stream<Uint8Array, unknown> => typeof u === "object" && u !== null && Stream.StreamTypeId in u,
  { description: "a Stream of Uint8Array" }
)

export const ExecInput = Schema.Struct({
  argv: Schema.Array(ArgString).pipe(
    Schema.filter((argv) =>
      argv.length === 0 ? "must not be empty" : argv[0] === "" ? "the program (argv[0]) must not be empty" : true
    )
  ),
  cwd: Schema.optional(ArgString.pipe(Schema.nonEmptyString({ message: () => "must not be empty" }))),
  env: Schema.optional(Env),
  stdin: Schema.optional(Schema.Union(Schema.Uint8ArrayFromSelf.annotations({ description: "a Uint8Array" }), StdinStream)),
  limits: Schema.optional(Limits),
  timeout: Schema.optional(PositiveDuration),
  killGrace: Schema.optional(DurationInput),
  idleTimeout: Schema.optional(PositiveDuration),
  keep: Schema.optional(Keep),
  spill: Schema.optional(Spill),
  all: Schema.optional(Schema.Boolean)
})

const decodeExecInput = Schema.decodeUnknown(ExecInput, { errors: "all", onExcessProperty: "error" })

export const decodeInput = (input: unknown): Effect.Effect<typeof ExecInput.Type, InvalidInput> =>
  decodeExecInput(input).pipe(Effect.mapError(toInvalidInput("invalid exec input")))
