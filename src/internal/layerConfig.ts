/**
 * The live layer's options from `Config` (by default the environment): one variable per option, each checked as it is
 * read with the same Schema the layer decodes with, so a bad value fails with a `ConfigError` naming the variable.
 */
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Exec from "../Exec.js"
import { parseSize } from "./sizes.js"

/** A variable read as text, absent allowed, turned into the option's value by `parse`. */
const variable = <A>(name: string, parse: (text: string) => Either.Either<A, string>): Config.Config<Option.Option<A>> =>
  Config.option(Config.string(name)).pipe(
    Config.mapOrFail((text) =>
      Option.match(text, {
        onNone: () => Either.right(Option.none()),
        onSome: (value) =>
          Either.match(parse(value.trim()), {
            onLeft: (message) => Either.left(ConfigError.InvalidData([name], message)),
            onRight: (parsed) => Either.right(Option.some(parsed))
          })
      })
    )
  )

/** Checks a value with one of the layer's Schemas; the message is the Schema's. */
const checked = <A, I>(schema: Schema.Schema<A, I>) => (value: unknown): Either.Either<A, string> =>
  Either.mapLeft(Schema.decodeUnknownEither(schema)(value), (error) => ParseResult.TreeFormatter.formatErrorSync(error))

const bytes = (text: string) => Either.flatMap(parseSize(text), checked(Exec.ByteCap))

/** A duration as Effect writes one (`"30 seconds"`, `"500 millis"`), or bare milliseconds. */
const duration = (positive: boolean) => (text: string): Either.Either<Duration.DurationInput, string> => {
  const input: Duration.DurationInput = /^\d+$/.test(text) ? Number(text) : (text as Duration.DurationInput)
  if (Option.isNone(Duration.decodeUnknown(input))) {
    return Either.left(`bad duration '${text}' (use e.g. "30 seconds", "500 millis", or milliseconds)`)
  }
  return Either.map(checked(positive ? Exec.PositiveDuration : Exec.DurationInput)(input), () => input)
}

const oneOf = <const C extends ReadonlyArray<string>>(choices: C) => (text: string): Either.Either<C[number], string> => {
  const found = choices.find((choice) => choice === text)
  return found === undefined ? Either.left(`'${text}' is not one of ${choices.join(", ")}`) : Either.right(found)
}

const wholeAtLeastOne = (text: string): Either.Either<number, string> =>
  /^\d+$/.test(text) && Number(text) >= 1 && Number.isSafeInteger(Number(text))
    ? Either.right(Number(text))
    : Either.left(`'${text}' is not a whole number >= 1`)

const absolute = (text: string): Either.Either<string, string> =>
  text.startsWith("/") ? Either.right(text) : Either.left(`'${text}' is not an absolute path`)

/** The variables and the option each sets; the README's table lists the same. */
export const VARIABLES = {
  NATIVE_RUNNER_MAX_STDOUT: "maxStdoutBytes",
  NATIVE_RUNNER_MAX_STDERR: "maxStderrBytes",
  NATIVE_RUNNER_TIMEOUT: "timeout",
  NATIVE_RUNNER_KILL_GRACE: "killGrace",
  NATIVE_RUNNER_IDLE_TIMEOUT: "idleTimeout",
  NATIVE_RUNNER_KEEP: "keep",
  NATIVE_RUNNER_ALL: "all",
  NATIVE_RUNNER_MAX_ALL: "maxAllBytes",
  NATIVE_RUNNER_INHERIT_ENV: "inheritEnv",
  NATIVE_RUNNER_MAX_CONCURRENT: "maxConcurrent",
  NATIVE_RUNNER_SPAWN_HELPER: "spawnHelper",
  NATIVE_RUNNER_SPILL_DIR: "spill.dir",
  NATIVE_RUNNER_SANDBOX_WORKSPACE: "sandbox.policy.workspace",
  NATIVE_RUNNER_SANDBOX_NETWORK: "sandbox.policy.network",
  NATIVE_RUNNER_SANDBOX_FALLBACK: "sandbox.fallback"
} as const

/** What the variables give, as layer options (`NativeRunner.Options`); an unset variable leaves its default. */
export interface ConfiguredOptions {
  readonly maxStdoutBytes?: number
  readonly maxStderrBytes?: number
  readonly timeout?: Duration.DurationInput
  readonly killGrace?: Duration.DurationInput
  readonly idleTimeout?: Duration.DurationInput
  readonly keep?: "head" | "tail" | "both"
  readonly all?: boolean
  readonly maxAllBytes?: number
  readonly inheritEnv?: "none" | "core" | "all"
  readonly maxConcurrent?: number
  readonly spawnHelper?: "always" | "auto" | "off"
  readonly spill?: { readonly dir: string }
  readonly sandbox?: {
    readonly policy: { readonly workspace: string; readonly network?: "none" | "host" }
    readonly fallback?: "fail" | "unsandboxed"
  }
}

const some = <K extends string, A>(key: K, value: Option.Option<A>): { readonly [P in K]?: A } =>
  (Option.isSome(value) ? { [key]: value.value } : {}) as { readonly [P in K]?: A }

/** The layer options from the `NATIVE_RUNNER_*` variables (see `VARIABLES`). */
export const optionsConfig: Config.Config<ConfiguredOptions> = Config.all({
  maxStdoutBytes: variable("NATIVE_RUNNER_MAX_STDOUT", bytes),
  maxStderrBytes: variable("NATIVE_RUNNER_MAX_STDERR", bytes),
  timeout: variable("NATIVE_RUNNER_TIMEOUT", duration(true)),
  killGrace: variable("NATIVE_RUNNER_KILL_GRACE", duration(false)),
  idleTimeout: variable("NATIVE_RUNNER_IDLE_TIMEOUT", duration(true)),
  keep: variable("NATIVE_RUNNER_KEEP", oneOf(["head", "tail", "both"])),
  all: variable("NATIVE_RUNNER_ALL", (text) => Either.map(oneOf(["true", "false"])(text), (value) => value === "true")),
  maxAllBytes: variable("NATIVE_RUNNER_MAX_ALL", bytes),
  inheritEnv: variable("NATIVE_RUNNER_INHERIT_ENV", oneOf(["none", "core", "all"])),
  maxConcurrent: variable("NATIVE_RUNNER_MAX_CONCURRENT", wholeAtLeastOne),
  spawnHelper: variable("NATIVE_RUNNER_SPAWN_HELPER", oneOf(["always", "auto", "off"])),
  spillDir: variable("NATIVE_RUNNER_SPILL_DIR", absolute),
  workspace: variable("NATIVE_RUNNER_SANDBOX_WORKSPACE", absolute),
  network: variable("NATIVE_RUNNER_SANDBOX_NETWORK", oneOf(["none", "host"])),
  fallback: variable("NATIVE_RUNNER_SANDBOX_FALLBACK", oneOf(["fail", "unsandboxed"]))
}).pipe(
  Config.mapOrFail((read) => {
    if (Option.isNone(read.workspace) && (Option.isSome(read.network) || Option.isSome(read.fallback))) {
      const name = Option.isSome(read.network) ? "NATIVE_RUNNER_SANDBOX_NETWORK" : "NATIVE_RUNNER_SANDBOX_FALLBACK"
      return Either.left(ConfigError.InvalidData([name], "only applies with NATIVE_RUNNER_SANDBOX_WORKSPACE"))
    }
    return Either.right({
      ...some("maxStdoutBytes", read.maxStdoutBytes),
      ...some("maxStderrBytes", read.maxStderrBytes),
      ...some("timeout", read.timeout),
      ...some("killGrace", read.killGrace),
      ...some("idleTimeout", read.idleTimeout),
      ...some("keep", read.keep),
      ...some("all", read.all),
      ...some("maxAllBytes", read.maxAllBytes),
      ...some("inheritEnv", read.inheritEnv),
      ...some("maxConcurrent", read.maxConcurrent),
      ...some("spawnHelper", read.spawnHelper),
      ...some("spill", Option.map(read.spillDir, (dir) => ({ dir }))),
      ...some("sandbox", Option.map(read.workspace, (workspace) => ({
        policy: { workspace, ...some("network", read.network) },
        ...some("fallback", read.fallback)
      })))
    })
  })
)
