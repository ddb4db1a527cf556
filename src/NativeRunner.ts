/**
 * The runner as an Effect service. `layerNode` spawns real processes with the project's own Node spawner (and is the
 * only live layer that can sandbox); `layer` runs over any `@effect/platform` `CommandExecutor` you bring;
 * `toPromiseRunner` bridges to the seed's Promise `NativeRunner`.
 */
import type * as PlatformCommand from "@effect/platform/Command"
import * as CommandExecutor from "@effect/platform/CommandExecutor"
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Duration from "effect/Duration"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { InvalidInput as InvalidInputError, type NativeRunnerError, NonZeroExit } from "./Errors.js"
import type { InvalidInput } from "./Errors.js"
import * as Exec from "./Exec.js"
import { type ExecEvent, type ExecInput, type ExecResult, toInvalidInput } from "./Exec.js"
import * as Sandbox from "./Sandbox.js"
import type { Spawner } from "./internal/engine.js"
import { makeSpawner } from "./internal/live.js"
import { resolveExecutable } from "./internal/executables.js"
import { makeLiveSpawner } from "./internal/liveSpawner.js"
import { makeRunCgroups, type RunCgroups, watchHostDeath } from "./internal/runCgroup.js"
import * as layerConfigInternal from "./internal/layerConfig.js"
import type { ConfiguredOptions } from "./internal/layerConfig.js"
import { makePolicy } from "./internal/policy.js"
import { makeExecutor } from "./internal/commandExecutor.js"
import { standardInput } from "./internal/commandInput.js"
import { hostCwd, makeRunnerCore, type RunnerCore, type RunnerService } from "./internal/runner.js"
import { type PromiseRunner, type PromiseRunnerOptions, toPromiseRunner as promiseRunner } from "./internal/promiseRunner.js"

export type { RunnerService as Service } from "./internal/runner.js"

/** Defaults of the layer options, as in the seed's lineage. */
export const DEFAULTS = {
  maxStdoutBytes: 1024 * 1024,
  maxStderrBytes: 1024 * 1024,
  timeout: Duration.seconds(60),
  killGrace: Duration.seconds(2),
  drainTimeout: Duration.seconds(1),
  inheritEnv: "core",
  maxConcurrent: 32,
  keep: "head",
  all: false,
  maxAllBytes: 2 * 1024 * 1024
} as const

const RedactArgv = Schema.declare(
  (u: unknown): u is (argv: ReadonlyArray<string>) => ReadonlyArray<string> => typeof u === "function",
  { description: "a function from argv to argv" }
)

/**
 * The options every runner layer shares (live and test), each optional with a default in `DEFAULTS`:
 * `maxStdoutBytes`, `maxStderrBytes`, `timeout`, `killGrace`, `drainTimeout` (how long output is still read after the
 * exit, for pipes held by escaped grandchildren), `idleTimeout` (none), `keep`, `all` (false: no combined capture)
 * and `maxAllBytes` (its cap, 2 MiB), `spill` (none), `cwd` (default: the
 * host's, read when the layer is built), `inheritEnv`, `env` (the input's wins), `maxConcurrent`, `redactArgv`
 * (rewrites argv in audits, e.g. `Audit.redactAfter(["--password"])`).
 */
export const runnerFields = {
  maxStdoutBytes: Schema.optionalWith(Exec.ByteCap, { default: () => DEFAULTS.maxStdoutBytes }),
  maxStderrBytes: Schema.optionalWith(Exec.ByteCap, { default: () => DEFAULTS.maxStderrBytes }),
  timeout: Schema.optionalWith(Exec.PositiveDuration, { default: () => DEFAULTS.timeout }),
  killGrace: Schema.optionalWith(Exec.DurationInput, { default: () => DEFAULTS.killGrace }),
  drainTimeout: Schema.optionalWith(Exec.DurationInput, { default: () => DEFAULTS.drainTimeout }),
  idleTimeout: Schema.optional(Exec.PositiveDuration),
  keep: Schema.optionalWith(Exec.Keep, { default: () => DEFAULTS.keep }),
  all: Schema.optionalWith(Schema.Boolean, { default: () => DEFAULTS.all }),
  maxAllBytes: Schema.optionalWith(Exec.ByteCap, { default: () => DEFAULTS.maxAllBytes }),
  spill: Schema.optional(Exec.Spill),
  cwd: Schema.optional(Sandbox.AbsolutePath),
  inheritEnv: Schema.optional(Schema.Literal("none", "core", "all")),
  env: Schema.optional(Exec.Env),
  maxConcurrent: Schema.optionalWith(
    Schema.Int.pipe(Schema.greaterThanOrEqualTo(1, { message: () => "must be a whole number >= 1" })),
    { default: () => DEFAULTS.maxConcurrent }
  ),
  redactArgv: Schema.optional(RedactArgv)
} as const

/**
 * The sandbox of a live layer: the `policy`; `bwrapPath`, `setprivPath`, `flockPath`, `prlimitPath` (absolute; default: found on
 * the host's PATH when the layer is built); `fallback` when bubblewrap is unusable: `"fail"` (default: the layer fails
 * with `SandboxUnavailable`) or `"unsandboxed"` (a warning, then runs on the host; resource limits still apply).
 */
export const SandboxOptions = Schema.Struct({
  policy: Sandbox.Policy,
  bwrapPath: Schema.optional(Sandbox.AbsolutePath),
  setprivPath: Schema.optional(Sandbox.AbsolutePath),
  flockPath: Schema.optional(Sandbox.AbsolutePath),
  prlimitPath: Schema.optional(Sandbox.AbsolutePath),
  fallback: Schema.optional(Schema.Literal("fail", "unsandboxed"))
})
export type SandboxOptions = typeof SandboxOptions.Type

/**
 * Options of the live layers: the shared runner options, plus a `sandbox` or, without one, `resourceLimits`, and for
 * `layerNode` how it spawns: `spawnHelper` `"always"` (default: every child is forked by a small helper process
 * started with the layer, so spawn cost and event-loop stalls do not grow with the host's memory, and the helper kills
 * the children if the host dies, even by SIGKILL; one that dies or stops answering is killed, its runs fail with
 * `SpawnError` `HelperLost`, and the next spawn starts a new one), `"auto"` (directly while the host's RSS is below 128 MiB) or
 * `"off"` (directly; a short-lived host such as the CLI saves the helper's start). Decoded once when the layer is
 * built; a misspelt or unknown key fails with `InvalidInput` naming it.
 */
export const Options = Schema.Struct({
  ...runnerFields,
  spawnHelper: Schema.optionalWith(Schema.Literal("always", "auto", "off"), { default: () => "always" as const }),
  sandbox: Schema.optional(SandboxOptions),
  resourceLimits: Schema.optional(Sandbox.ResourceLimits)
})
/** Every field optional, `undefined` allowed: what callers write. */
type Given<A> = { readonly [K in keyof A]?: A[K] | undefined }

/** What a layer is given; every field optional. */
export type Options = Given<typeof Options.Type>
/** The options once decoded, defaults applied. */
export type DecodedOptions = typeof Options.Type

/** Decodes layer options (`Options`, or the test layer's) with excess keys refused. */
export const decodeOptions = <A, I>(schema: Schema.Schema<A, I>, options: unknown): Effect.Effect<A, InvalidInput> =>
  Schema.decodeUnknown(schema, { errors: "all", onExcessProperty: "error" })(options).pipe(
    Effect.mapError(toInvalidInput("invalid runner options"))
  )

/** The runner service. Its `exec` returns `Effect<ExecResult, NativeRunnerError>`. */
export class NativeRunner extends Context.Tag("effect-native-runner/NativeRunner")<NativeRunner, RunnerService>() {}

/**
 * Runs one command with the `NativeRunner` in context.
 *
 * @example
 * const result = yield* NativeRunner.exec({ argv: ["git", "status"], timeout: "10 seconds" })
 */
export const exec = (input: ExecInput): Effect.Effect<ExecResult, NativeRunnerError, NativeRunner> =>
  Effect.flatMap(NativeRunner, (runner) => runner.exec(input))

const commandRefused = (path: string, message: string) =>
  new InvalidInputError({ message: `Cannot run the Command: ${path} ${message}`, issues: [{ path, message }] })

/**
 * The exec input a platform `Command` describes: program and arguments (`runInShell`: `sh -c` with them joined, as
 * Node's `shell` option does), `env` (set on top of what the layer's `inheritEnv` lets through, whatever the
 * command's `extendEnv`), `workingDirectory`, and its stdin (`feed`, `stdin(stream)`) as a stream the child pulls
 * (see `ExecInput`). A piped command, and one with a `uid` or `gid`, fail with `InvalidInput` (`layerCommandExecutor`
 * runs pipelines).
 */
export const commandInput = (command: PlatformCommand.Command): Effect.Effect<ExecInput, InvalidInput> =>
  Effect.gen(function*() {
    if (command._tag === "PipedCommand") {
      return yield* commandRefused("command", "is piped (pipeTo): run each stage with execCommand, or the pipeline as `sh -c`")
    }
    if (Option.isSome(command.uid) || Option.isSome(command.gid)) {
      return yield* commandRefused("uid", "and gid are not taken: the runner's sandbox user decides who a command runs as")
    }
    // A stream is pulled as the child reads it, never collected first; "pipe" and "inherit" give no stdin.
    return standardInput(command, typeof command.stdin === "string" ? undefined : command.stdin)
  })

/**
 * Runs a platform `Command` (`Command.make("git", "log").pipe(Command.workingDirectory(dir), Command.feed(text))`)
 * through the runner in context and returns our `ExecResult`: the runner's caps, timeouts, tree kill, audit and
 * sandbox apply. `overrides` adds what a `Command` cannot say (`timeout`, `limits`, `keep`, `spill`, ...). See
 * `commandInput` for how the description is read.
 *
 * @example
 * const result = yield* NativeRunner.execCommand(Command.make("git", "status"), { timeout: "10 seconds" })
 */
export const execCommand = (
  command: PlatformCommand.Command,
  overrides: Omit<ExecInput, "argv" | "stdin"> = {}
): Effect.Effect<ExecResult, NativeRunnerError, NativeRunner> =>
  Effect.flatMap(commandInput(command), (input) =>
    exec({ ...input, ...overrides, ...(input.env === undefined && overrides.env === undefined ? {} : { env: { ...input.env, ...overrides.env } }) }))

const TAIL_BYTES = 4096

/**
 * Fails with `NonZeroExit` unless the run ended with exit code 0 (execa's default), for code that wants a failed
 * command to be a failure; the run is returned as it is otherwise. `program` names the command in the message.
 *
 * @example
 * const result = yield* NativeRunner.exec({ argv: ["make"] }).pipe(NativeRunner.checkExit("make"))
 */
export const checkExit = (program: string) =>
<E, R>(self: Effect.Effect<ExecResult, E, R>): Effect.Effect<ExecResult, E | NonZeroExit, R> =>
  Effect.flatMap(self, (result) => {
    if (result.exitCode === 0 && result.signal === undefined && !result.timedOut) return Effect.succeed(result)
    const how = result.timedOut
      ? `timed out (exit ${result.exitCode})`
      : result.signal !== undefined
      ? `was killed by ${result.signal} (exit ${result.exitCode})`
      : `exited with code ${result.exitCode}`
    return Effect.fail(new NonZeroExit({
      message: `${program} ${how}`,
      exitCode: result.exitCode,
      signal: result.signal,
      timedOut: result.timedOut,
      stdoutTail: result.stdout.slice(-TAIL_BYTES),
      stderrTail: result.stderr.slice(-TAIL_BYTES),
      result
    }))
  })

/**
 * `exec`, failing with `NonZeroExit` unless the run ended with exit code 0 (see `checkExit`).
 *
 * @example
 * const result = yield* NativeRunner.execChecked({ argv: ["git", "push"] }).pipe(
 *   Effect.catchTag("NonZeroExit", (e) => Effect.logError(`${e.message}: ${new TextDecoder().decode(e.stderrTail)}`))
 * )
 */
export const execChecked = (input: ExecInput): Effect.Effect<ExecResult, NativeRunnerError | NonZeroExit, NativeRunner> =>
  exec(input).pipe(checkExit(typeof input?.argv?.[0] === "string" ? input.argv[0] : "the command"))

/**
 * Runs one command as a stream of events: `Started`, then `Stdout` / `Stderr` chunks as they arrive, then `Exit` with
 * the same result `exec` returns (same caps, same audit). Ending the stream early kills the process tree. A slow
 * consumer neither slows the run nor changes its result: chunks it cannot keep up with are dropped from the stream
 * (never from the result) and counted in `Exit.dropped`.
 *
 * @example
 * yield* NativeRunner.execStream({ argv: ["make", "test"] }).pipe(
 *   Stream.runForEach((event) => event._tag === "Stdout" ? Effect.sync(() => process.stdout.write(event.bytes)) : Effect.void)
 * )
 */
export const execStream = (input: ExecInput): Stream.Stream<ExecEvent, NativeRunnerError, NativeRunner> =>
  Stream.unwrap(Effect.map(NativeRunner, (runner) => runner.execStream(input)))

const makeWith = (
  spawner: Spawner,
  capabilities: {
    readonly canSandbox: boolean
    readonly runCgroups?: RunCgroups | undefined
    readonly parentDeath?: string | undefined
  },
  options: DecodedOptions
) =>
  Effect.gen(function*() {
    return yield* makeRunnerCore({
      spawner,
      policy: yield* makePolicy(options, capabilities),
      hostEnv: process.env,
      // Read once: a host whose cwd is deleted later keeps working (a deleted default cwd is a SpawnError per exec).
      hostCwd: hostCwd()
    }, options)
  })

/**
 * Builds the live runner over the `CommandExecutor` in context. Bad options fail with `InvalidInput`. A sandbox needs
 * descriptors `Command` cannot pass, so here it fails with `SandboxUnavailable` (use `makeNode`), unless
 * `sandbox.fallback` is `"unsandboxed"`.
 *
 * @example
 * const runner = yield* NativeRunner.make({ timeout: "10 seconds" })
 */
export const make = (
  options: Options = {}
): Effect.Effect<RunnerService, NativeRunnerError, CommandExecutor.CommandExecutor> =>
  Effect.gen(function*() {
    const decoded = yield* decodeOptions(Options, options)
    return (yield* makeWith(makeSpawner(yield* CommandExecutor.CommandExecutor), { canSandbox: false }, decoded)).service
  })

/**
 * Builds the live runner on the project's own Node spawner, in the scope, which owns its spawn helper and its per-run
 * cgroups (where this host can make them). Bad options fail with `InvalidInput`; a sandbox that cannot run here fails
 * with `SandboxUnavailable` (unless `sandbox.fallback` is `"unsandboxed"`).
 *
 * @example
 * const runner = yield* NativeRunner.makeNode({ sandbox: { policy: { workspace: "/srv/job" } } })
 */
export const makeNode = (options: Options = {}): Effect.Effect<RunnerService, NativeRunnerError, Scope.Scope> =>
  Effect.flatMap(decodeOptions(Options, options), (decoded) => Effect.map(makeNodeCore(decoded), (core) => core.service))

/** `makeNode` with its options decoded, and the exec behind the service (for the `CommandExecutor`). */
const makeNodeCore = (decoded: DecodedOptions): Effect.Effect<RunnerCore, NativeRunnerError, Scope.Scope> =>
  Effect.gen(function*() {
    // The helper first, while the host is as small as it will ever be: it forks cheaply for ever after.
    const spawner = yield* makeLiveSpawner(decoded.spawnHelper)
    const made = yield* makeRunCgroups
    // Spawning directly (some or all execs), no helper outlives this process to kill what its runs left behind.
    const runCgroups = made === undefined || decoded.spawnHelper === "always"
      ? made
      : { ...made, afterSpawn: yield* watchHostDeath(made) }
    // Spawning directly, nothing kills the children if this process is SIGKILLed: `setpriv --pdeathsig KILL` does.
    const parentDeath = decoded.spawnHelper === "off" ? yield* resolveExecutable("setpriv") : undefined
    return yield* makeWith(spawner, { canSandbox: true, runCgroups, parentDeath }, decoded)
  })

/** The live layer over the `CommandExecutor` in context (bring your own); no sandbox. */
export const layer = (
  options: Options = {}
): Layer.Layer<NativeRunner, NativeRunnerError, CommandExecutor.CommandExecutor> => Layer.effect(NativeRunner, make(options))

/** The live layer on the project's own Node spawner: no requirements, sandbox and limits supported. */
export const layerNode = (options: Options = {}): Layer.Layer<NativeRunner, NativeRunnerError> =>
  Layer.scoped(NativeRunner, makeNode(options))

/**
 * Options of `layerCommandExecutor`: the live layer's (`Options`), plus `overflow`: what a `Process`'s stdout or
 * stderr stream does past its cap (`maxStdoutBytes`, `maxStderrBytes`): `"truncate"` (default: the stream carries the
 * first bytes up to the cap, then ends with the run, as `exec` keeps them) or `"fail"` (it fails at its end with a
 * `SystemError` `InvalidData`, so `Command.string` fails instead of returning a cut).
 */
export const CommandExecutorOptions = Schema.Struct({
  ...Options.fields,
  overflow: Schema.optionalWith(Schema.Literal("truncate", "fail"), { default: () => "truncate" as const })
})
export type CommandExecutorOptions = Given<typeof CommandExecutorOptions.Type>

/**
 * A platform `CommandExecutor` implemented by the runner, in the scope: code written with `Command` (`Command.string`,
 * `lines`, `exitCode`, `stream`, `start`, `pipeTo`, `feed`, `stdin(stream)`, `env`, `workingDirectory`,
 * `runInShell`) runs under the runner's caps, timeouts, tree kill, audit, metrics and sandbox. Failures are the
 * platform's `SystemError` / `BadArgument` with the same reasons as its own executor (`NotFound`, `PermissionDenied`),
 * the runner's typed error in `cause`; a run that timed out fails `exitCode` and its streams with `TimedOut`. The
 * README lists where it differs from `NodeCommandExecutor` and why.
 *
 * @example
 * const executor = yield* NativeRunner.makeCommandExecutor({ timeout: "30 seconds" })
 */
export const makeCommandExecutor = (
  options: CommandExecutorOptions = {}
): Effect.Effect<CommandExecutor.CommandExecutor, NativeRunnerError, Scope.Scope> =>
  Effect.gen(function*() {
    const { overflow, ...rest } = yield* decodeOptions(CommandExecutorOptions, options)
    return makeExecutor(yield* makeNodeCore(rest), { overflow })
  })

/**
 * The `CommandExecutor` layer backed by the runner (see `makeCommandExecutor`): swap it for `NodeContext.layer`'s
 * executor and every `Command` is capped, killed as a tree, audited and (given a `sandbox`) sandboxed.
 *
 * @example
 * const program = Command.string(Command.make("git", "log", "-1"))
 * program.pipe(Effect.provide(NativeRunner.layerCommandExecutor({ maxStdoutBytes: 1 << 20, timeout: "30 seconds" })))
 */
export const layerCommandExecutor = (
  options: CommandExecutorOptions = {}
): Layer.Layer<CommandExecutor.CommandExecutor, NativeRunnerError> =>
  Layer.scoped(CommandExecutor.CommandExecutor, makeCommandExecutor(options))

/**
 * The live layer's options from the environment (`NATIVE_RUNNER_MAX_STDOUT`, `NATIVE_RUNNER_TIMEOUT`,
 * `NATIVE_RUNNER_SANDBOX_WORKSPACE`, ...: `configVariables` lists them), each checked as it is read: a bad value is a
 * `ConfigError` naming its variable. Unset variables keep the defaults.
 */
export const optionsConfig: Config.Config<ConfiguredOptions> = layerConfigInternal.optionsConfig
/** Each variable `optionsConfig` reads, and the option it sets. */
export const configVariables = layerConfigInternal.VARIABLES
export type { ConfiguredOptions } from "./internal/layerConfig.js"

/**
 * `layerNode` with its options from `Config`: by default `optionsConfig` (the `NATIVE_RUNNER_*` environment variables,
 * or whatever `ConfigProvider` is in place), or a `Config` of options of your own.
 *
 * @example
 * // NATIVE_RUNNER_TIMEOUT="30 seconds" NATIVE_RUNNER_MAX_STDOUT=64KiB node app.js
 * Effect.runPromise(program.pipe(Effect.provide(NativeRunner.layerConfig())))
 */
export const layerConfig = (
  config: Config.Config<Options> = optionsConfig
): Layer.Layer<NativeRunner, NativeRunnerError | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(config, (options) => layerNode(options)))

export type { PromiseExecInput, PromiseExecOptions, PromiseRunner, PromiseRunnerOptions } from "./internal/promiseRunner.js"

/**
 * Bridges a runner layer to the seed's Promise `NativeRunner`. By default it also kills running commands when the
 * host gets SIGTERM, SIGINT or SIGHUP or is about to exit (`cleanup: false` opts out); `dispose` interrupts execs in
 * flight and resolves once their trees are gone.
 *
 * @example
 * const runner = NativeRunner.toPromiseRunner(NativeRunner.layerNode())
 * const { exitCode, stdout } = await runner.exec({ argv: ["ls"], limits: { timeoutMs: 5000 } })
 * await runner.dispose()
 */
export const toPromiseRunner = <E>(
  runnerLayer: Layer.Layer<NativeRunner, E>,
  options?: PromiseRunnerOptions
): PromiseRunner => promiseRunner(runnerLayer, exec, options)
