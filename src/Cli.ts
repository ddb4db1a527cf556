/**
 * The `native-runner` command line: `run` (one command through the live runner) and `doctor` (what this host
 * supports). Parsing is `@effect/cli`'s; this module adds the value parsers (sizes, durations), the strict `--` rule,
 * the exit-code policy and the output rendering. Every step is a small function; `main` only wires them together.
 */
import * as Args from "@effect/cli/Args"
import type * as CliApp from "@effect/cli/CliApp"
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import type { Span } from "@effect/cli/HelpDoc/Span"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import { open, readFile } from "node:fs/promises"
import * as path from "node:path"
import * as Audit from "./Audit.js"
import { SandboxUnavailable, type NativeRunnerError } from "./Errors.js"
import { type ExecInput, type ExecResult, MAX_BYTES_CAP, MAX_TIMEOUT_MS } from "./Exec.js"
import * as NativeRunner from "./NativeRunner.js"

/** Shown by `--version`. */
export const VERSION = "0.1.0"

// ---------------------------------------------------------------------------------------------------------------
// Value parsers: pure, each returns the value or a one-line reason.
// ---------------------------------------------------------------------------------------------------------------

// GNU coreutils' convention: K = KiB = 1024, KB = 1000 (units are case-insensitive here).
const SIZE_UNITS: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3
}

/**
 * Parses a byte size: `1000`, `64KiB`, `1MiB`, `1.5K`, `2MB`. The result is a whole number of bytes.
 *
 * @example
 * parseSize("64KiB") // Either.right(65536)
 */
export const parseSize = (text: string): Either.Either<number, string> => {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim())
  const factor = match?.[2] === undefined ? undefined : SIZE_UNITS[match[2].toLowerCase()]
  if (match?.[1] === undefined || factor === undefined) {
    return Either.left(`bad size '${text}' (use e.g. 1000, 64KiB, 1MiB, 2GB)`)
  }
  const bytes = Number(match[1]) * factor
  return Number.isSafeInteger(bytes)
    ? Either.right(bytes)
    : Either.left(`size '${text}' is not a whole number of bytes`)
}

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/**
 * Parses a duration with a unit: `500ms`, `10s`, `1.5s`, `2m`, `1h`. Bare numbers are refused: is `10` seconds or
 * milliseconds? The result is a whole number of milliseconds.
 *
 * @example
 * parseDuration("2m") // Either.right(120000)
 */
export const parseDuration = (text: string): Either.Either<number, string> => {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/.exec(text.trim())
  const factor = match?.[2] === undefined ? undefined : DURATION_UNITS[match[2]]
  if (match?.[1] === undefined || factor === undefined) {
    return Either.left(
      /^\d+(\.\d+)?$/.test(text.trim())
        ? `duration '${text}' needs a unit (ms, s, m or h), e.g. ${text.trim()}s`
        : `bad duration '${text}' (use e.g. 500ms, 10s, 2m)`
    )
  }
  const millis = Number(match[1]) * factor
  return Number.isSafeInteger(millis)
    ? Either.right(millis)
    : Either.left(`duration '${text}' is not a whole number of milliseconds`)
}

/** Formats milliseconds in the largest unit that divides them: 500 -> "500ms", 10000 -> "10s", 120000 -> "2m". */
export const formatMillis = (millis: number): string =>
  millis > 0 && millis % 3_600_000 === 0
    ? `${millis / 3_600_000}h`
    : millis > 0 && millis % 60_000 === 0
    ? `${millis / 60_000}m`
    : millis > 0 && millis % 1000 === 0
    ? `${millis / 1000}s`
    : `${millis}ms`

/** Parses one `KEY=VALUE` (the value may be empty or contain `=`). */
export const parseEnvPair = (text: string): Either.Either<readonly [string, string], string> => {
  const eq = text.indexOf("=")
  return eq <= 0
    ? Either.left(`bad value '${text}' (use KEY=VALUE)`)
    : Either.right([text.slice(0, eq), text.slice(eq + 1)] as const)
}

// ---------------------------------------------------------------------------------------------------------------
// The parsed request and how it becomes runner options.
// ---------------------------------------------------------------------------------------------------------------

/** Resource limits of a sandboxed run; field names as in `Sandbox.ResourceLimits`. */
export interface SandboxLimits {
  readonly maxProcesses?: number | undefined
  readonly maxMemoryBytes?: number | undefined
  readonly maxFileSizeBytes?: number | undefined
  readonly maxCpuSeconds?: number | undefined
  readonly maxOpenFiles?: number | undefined
}

/** The sandbox the user asked for; `policy` has the shape of `Sandbox.Policy` (absolute workspace). */
export type SandboxRequest =
  | { readonly backend: "none" }
  | {
    readonly backend: "bwrap"
    readonly policy: {
      readonly workspace: string
      readonly network: "none" | "host"
      readonly limits: SandboxLimits
    }
  }

/** Everything `native-runner run` was asked to do, validated, paths absolute. */
export interface RunRequest {
  readonly argv: readonly [string, ...Array<string>]
  readonly json: boolean
  readonly timeoutMs?: number | undefined
  readonly killGraceMs?: number | undefined
  readonly maxStdoutBytes?: number | undefined
  readonly maxStderrBytes?: number | undefined
  readonly cwd?: string | undefined
  readonly env: Readonly<Record<string, string>>
  readonly inheritEnv: "none" | "core" | "all"
  /** An absolute path, or "-" for our own stdin. */
  readonly stdinFile?: string | undefined
  readonly auditLog?: string | undefined
  readonly sandbox: SandboxRequest
}

/**
 * Whether this build can spawn inside bubblewrap. Flip it (and map `request.sandbox` in `toRunnerOptions`) once the
 * runner has its `sandbox` option; `doctor` reads it too, so its verdict cannot contradict `run`.
 */
export const SANDBOX_BACKEND_BUILT = false

/**
 * The one place CLI flags become `NativeRunner` options. A sandbox that cannot be honoured fails here, before any
 * layer is built: a run never falls back to running unsandboxed.
 */
export const toRunnerOptions = (request: RunRequest): Either.Either<NativeRunner.Options, SandboxUnavailable> => {
  if (request.sandbox.backend === "bwrap" && !SANDBOX_BACKEND_BUILT) {
    return Either.left(
      new SandboxUnavailable({
        backend: "bwrap",
        message: "sandbox not available in this build (--sandbox bwrap); nothing was run",
        fix: "run without --sandbox, or use a build with the bubblewrap backend (see 'native-runner doctor')"
      })
    )
  }
  return Either.right({
    inheritEnv: request.inheritEnv,
    timeout: request.timeoutMs === undefined ? undefined : Duration.millis(request.timeoutMs),
    killGrace: request.killGraceMs === undefined ? undefined : Duration.millis(request.killGraceMs),
    maxStdoutBytes: request.maxStdoutBytes,
    maxStderrBytes: request.maxStderrBytes,
    cwd: request.cwd
  })
}

/** The exec input of a request; `stdin` is read by the caller (it may be our own stdin). */
export const toExecInput = (request: RunRequest, stdin: Uint8Array | undefined): ExecInput => ({
  argv: request.argv,
  ...(Object.keys(request.env).length === 0 ? {} : { env: request.env }),
  ...(stdin === undefined ? {} : { stdin })
})

// ---------------------------------------------------------------------------------------------------------------
// Output rendering.
// ---------------------------------------------------------------------------------------------------------------

/** How captured bytes appear in JSON. */
export const OutputEncoding = Schema.Literal("utf8", "base64")
export type OutputEncoding = typeof OutputEncoding.Type

const Count = Schema.Int.pipe(Schema.nonNegative())

/** One audit record as it appears in `--json` output (and, plus `timestamp`, in `--audit-log` lines). */
export const CliJsonAudit = Schema.Struct({
  kind: Schema.Literal("native.exec"),
  runId: Schema.String,
  startedAt: Schema.String,
  cmd: Schema.String,
  argv: Schema.Array(Schema.String),
  cwd: Schema.String,
  durationMs: Schema.NonNegative,
  timedOut: Schema.Boolean,
  signal: Schema.optional(Schema.String),
  exitCode: Schema.Int,
  stdoutBytes: Count,
  stderrBytes: Count,
  truncatedStdout: Schema.Boolean,
  truncatedStderr: Schema.Boolean,
  interrupted: Schema.Boolean,
  sandbox: Schema.String,
  network: Schema.optional(Schema.String),
  limitExceeded: Schema.optional(Schema.Literal("cpu", "fileSize", "memory", "processes", "openFiles"))
})

/** The single JSON object `native-runner run --json` prints. Keys are always present; `signal` may be null. */
export const CliJsonResult = Schema.Struct({
  exitCode: Schema.Int,
  signal: Schema.NullOr(Schema.String),
  timedOut: Schema.Boolean,
  durationMs: Schema.NonNegative,
  truncatedStdout: Schema.Boolean,
  truncatedStderr: Schema.Boolean,
  stdoutBytes: Count,
  stderrBytes: Count,
  stdout: Schema.String,
  stdoutEncoding: OutputEncoding,
  stderr: Schema.String,
  stderrEncoding: OutputEncoding,
  limitExceeded: Schema.NullOr(Schema.String),
  audits: Schema.Array(CliJsonAudit)
})
export type CliJsonResult = typeof CliJsonResult.Type

// `ignoreBOM` keeps a leading BOM as a character, so the text still round-trips to the same bytes.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** Captured bytes as a JSON string: UTF-8 text when the bytes are valid UTF-8, else base64. */
export const encodeOutput = (bytes: Uint8Array): { readonly text: string; readonly encoding: OutputEncoding } => {
  try {
    return { text: utf8.decode(bytes), encoding: "utf8" }
  } catch {
    // Not valid UTF-8 (binary output, or a character cut by truncation): base64 is byte-exact.
    return { text: Buffer.from(bytes).toString("base64"), encoding: "base64" }
  }
}

/** The `--json` object of a result. */
export const toJsonResult = (result: ExecResult): CliJsonResult => {
  const stdout = encodeOutput(result.stdout)
  const stderr = encodeOutput(result.stderr)
  return {
    exitCode: result.exitCode,
    signal: result.signal ?? null,
    timedOut: result.timedOut,
    durationMs: result.durationMs,
    truncatedStdout: result.truncatedStdout,
    truncatedStderr: result.truncatedStderr,
    stdoutBytes: result.stdoutBytes,
    stderrBytes: result.stderrBytes,
    stdout: stdout.text,
    stdoutEncoding: stdout.encoding,
    stderr: stderr.text,
    stderrEncoding: stderr.encoding,
    limitExceeded: result.limitExceeded ?? null,
    audits: result.audits
  }
}

/** The short lines plain mode adds on stderr when something happened besides a normal exit. */
export const notices = (result: ExecResult, timeoutMs: number): Array<string> => {
  const lines: Array<string> = []
  if (result.timedOut) lines.push(`timed out after ${formatMillis(timeoutMs)} (exit ${result.exitCode})`)
  else if (result.signal !== undefined) lines.push(`killed by ${result.signal} (exit ${result.exitCode})`)
  if (result.limitExceeded !== undefined) lines.push(`${result.limitExceeded} limit exceeded`)
  if (result.truncatedStdout) {
    lines.push(`stdout truncated at ${result.stdout.length} of ${result.stdoutBytes} bytes`)
  }
  if (result.truncatedStderr) {
    lines.push(`stderr truncated at ${result.stderr.length} of ${result.stderrBytes} bytes`)
  }
  return lines.map((line) => `native-runner: ${line}`)
}

// ---------------------------------------------------------------------------------------------------------------
// Failures and exit codes.
// ---------------------------------------------------------------------------------------------------------------

/** The command a usage hint is about. */
export type CommandName = "run" | "doctor" | "native-runner"

/** Bad usage: nothing was spawned. Exit code 2. */
export class UsageError extends Data.TaggedError("UsageError")<{
  readonly message: string
  readonly command: CommandName
}> {}

/** Exit code when the runner itself could not run the command (as `timeout` and `env` use it). */
export const RUNNER_FAILED = 125

/** The exit code of each failure, as shells and `env` use them. */
export const exitCodeOf = (error: UsageError | NativeRunnerError): number => {
  switch (error._tag) {
    case "UsageError":
    case "InvalidInput":
      return 2
    case "SandboxUnavailable":
      return RUNNER_FAILED
    case "SpawnError":
      return error.reason === "NotFound"
        ? 127
        : error.reason === "PermissionDenied"
        ? 126
        : error.reason === "CwdNotFound" || error.reason === "CwdNotDirectory"
        ? 2
        : RUNNER_FAILED
  }
}

/** The one-line usage of a command, printed after a usage error. */
export const usageHint = (command: CommandName): string => {
  switch (command) {
    case "run":
      return "usage: native-runner run [options] -- <command> [args...]   (see 'native-runner run --help')"
    case "doctor":
      return "usage: native-runner doctor [--sandbox none|bwrap]   (see 'native-runner doctor --help')"
    case "native-runner":
      return "usage: native-runner run [options] -- <command> [args...] | native-runner doctor   (see --help)"
  }
}

/** The stderr lines of a failure: one line, plus a usage hint for bad usage. */
export const errorLines = (error: UsageError | NativeRunnerError): Array<string> =>
  error._tag === "UsageError"
    ? [`native-runner: ${error.message}`, usageHint(error.command)]
    : error._tag === "InvalidInput"
    ? [`native-runner: ${error.message}`, usageHint("run")]
    : [`native-runner: ${error.message}`]

const spanText = (span: Span): string => {
  switch (span._tag) {
    case "Text":
    case "URI":
      return span.value
    case "Sequence":
      return spanText(span.left) + spanText(span.right)
    case "Highlight":
    case "Strong":
    case "Weak":
      return spanText(span.value)
  }
}

/** A `HelpDoc` (the text of a `ValidationError`) as one plain line. */
export const helpDocLine = (doc: HelpDoc.HelpDoc): string => {
  const parts = (d: HelpDoc.HelpDoc): Array<string> => {
    switch (d._tag) {
      case "Empty":
        return []
      case "Header":
      case "Paragraph":
        return [spanText(d.value)]
      case "DescriptionList":
        return d.definitions.flatMap(([term, body]) => [spanText(term), ...parts(body)])
      case "Enumeration":
        return d.elements.flatMap(parts)
      case "Sequence":
        return [...parts(d.left), ...parts(d.right)]
    }
  }
  return parts(doc).join(" ").replace(/\s+/g, " ").trim()
}

/** Which subcommand a bad command line was aimed at, for the usage hint. */
const commandOf = (args: ReadonlyArray<string>): CommandName =>
  args.find((arg): arg is "run" | "doctor" => arg === "run" || arg === "doctor") ?? "native-runner"

// ---------------------------------------------------------------------------------------------------------------
// The `--` rule. @effect/cli treats unknown options and tokens before `--` as positional arguments, so `argv` is
// checked against what follows the first `--` of the raw command line.
// ---------------------------------------------------------------------------------------------------------------

/** Quotes an argument for a POSIX shell when it needs it. */
export const shellQuote = (arg: string): string =>
  /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`

/** Our own `run` options, to tell a misspelt or repeated one from a stray argument. */
export const RUN_OPTION_NAMES: ReadonlyArray<string> = [
  "--timeout", "--kill-grace", "--max-stdout", "--max-stderr", "--cwd", "--env", "--inherit-env", "--stdin-file",
  "--sandbox", "--workspace", "--network", "--max-procs", "--max-memory", "--max-file-size", "--max-cpu",
  "--max-open-files", "--audit-log", "--json"
]

/**
 * Checks that the parsed argv is exactly what follows `--` in the raw arguments, and says what is wrong if not.
 *
 * @example
 * checkForcedArgv(["run", "--bogus", "--", "ls"], ["--bogus", "ls"]) // Either.left("unknown option '--bogus'")
 */
export const checkForcedArgv = (
  raw: ReadonlyArray<string>,
  parsed: ReadonlyArray<string>
): Either.Either<void, string> => {
  const dashes = raw.indexOf("--")
  if (dashes < 0) {
    const example = parsed.map(shellQuote).join(" ")
    return Either.left(`missing '--' before the command (e.g. native-runner run -- ${example})`)
  }
  const forced = raw.length - dashes - 1
  const stray = parsed.slice(0, Math.max(0, parsed.length - forced))
  const first = stray[0]
  if (first === undefined) return Either.right(undefined)
  const name = first.split("=")[0] ?? first
  return Either.left(
    !first.startsWith("-")
      ? `unexpected argument '${first}' before '--' (the command goes after '--')`
      : name === "--json"
      ? "'--json' given more than once"
      : RUN_OPTION_NAMES.includes(name) && first.includes("=")
      ? `write '${name} ${first.slice(name.length + 1)}' (with a space) instead of '${first}'`
      : RUN_OPTION_NAMES.includes(name)
      ? `'${name}' is missing its value or given more than once`
      : `unknown option '${first}'`
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Command definitions.
// ---------------------------------------------------------------------------------------------------------------

/** What the handlers need from this invocation: the raw arguments and where to put the exit code. */
export class Invocation extends Context.Tag("effect-native-runner/Cli/Invocation")<Invocation, {
  readonly args: ReadonlyArray<string>
  readonly exitCode: Ref.Ref<number>
}>() {}

const checked = <A>(name: string, parse: (text: string) => Either.Either<A, string>) => (text: string) =>
  Either.match(parse(text), {
    onLeft: (reason) => Effect.fail(ValidationError.invalidValue(HelpDoc.p(`${name}: ${reason}`))),
    onRight: Effect.succeed
  })

const atMost = (max: number, what: string) => (n: number): Either.Either<number, string> =>
  n <= max ? Either.right(n) : Either.left(`${what} must be at most ${max}`)
const atLeastOne = (n: number): Either.Either<number, string> =>
  n >= 1 ? Either.right(n) : Either.left("must be at least 1")

const sizeOption = (name: string, max: number, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("size"),
    Options.mapEffect(checked(`--${name}`, (s) => Either.flatMap(parseSize(s), atMost(max, "size")))),
    Options.withDescription(description),
    Options.optional
  )

const durationOption = (name: string, min: number, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("duration"),
    Options.mapEffect(checked(`--${name}`, (s) =>
      Either.flatMap(parseDuration(s), (ms) =>
        ms < min
          ? Either.left(`must be at least ${formatMillis(min)}`)
          : ms > MAX_TIMEOUT_MS
          ? Either.left(`must be at most ${MAX_TIMEOUT_MS}ms`)
          : Either.right(ms)))),
    Options.withDescription(description),
    Options.optional
  )

const countOption = (name: string, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("n"),
    Options.mapEffect(checked(`--${name}`, (s) =>
      /^\d+$/.test(s) ? atLeastOne(Number(s)) : Either.left(`'${s}' is not a whole number`))),
    Options.withDescription(description),
    Options.optional
  )

// `Options.choice` reports "Expected one of ..." without naming the option; this names it.
const choiceOption = <const C extends ReadonlyArray<string>>(name: string, choices: C, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName(choices.join("|")),
    Options.mapEffect(checked(`--${name}`, (s): Either.Either<C[number], string> => {
      const found = choices.find((choice) => choice === s)
      return found === undefined
        ? Either.left(`unknown value '${s}' (use ${choices.join(" or ")})`)
        : Either.right(found)
    })),
    Options.withDescription(description)
  )

const runConfig = {
  timeout: durationOption(
    "timeout",
    1,
    "Wall-clock limit (default 60s). On expiry the process tree gets SIGTERM, then SIGKILL after --kill-grace; " +
      "exit code 124."
  ),
  killGrace: durationOption("kill-grace", 0, "Time between SIGTERM and SIGKILL when a run is stopped (default 2s)."),
  maxStdout: sizeOption(
    "max-stdout",
    MAX_BYTES_CAP,
    "Bytes of stdout kept (default 1MiB). The rest is read and counted, not kept; a notice says so."
  ),
  maxStderr: sizeOption("max-stderr", MAX_BYTES_CAP, "Bytes of stderr kept (default 1MiB)."),
  cwd: Options.text("cwd").pipe(
    Options.withPseudoName("dir"),
    Options.withDescription("Working directory (default: ours). A missing directory is bad usage (exit 2)."),
    Options.optional
  ),
  env: Options.text("env").pipe(
    Options.withPseudoName("KEY=VALUE"),
    Options.withDescription("Sets a variable for the command; repeatable. Always wins over inherited ones."),
    Options.repeated,
    Options.mapEffect(Effect.forEach(checked("--env", parseEnvPair)))
  ),
  inheritEnv: choiceOption(
    "inherit-env",
    ["none", "core", "all"],
    "What the command inherits from our environment: none, core (PATH, HOME, LANG, ...; default) or all. " +
      "Secret-looking names (KEY, TOKEN, ...) never pass."
  ).pipe(Options.withDefault("core")),
  stdinFile: Options.text("stdin-file").pipe(
    Options.withPseudoName("path"),
    Options.withDescription(
      "Feeds this file to the command's stdin; '-' feeds our own stdin (read to the end first). Default: empty stdin."
    ),
    Options.optional
  ),
  sandbox: choiceOption(
    "sandbox",
    ["none", "bwrap"],
    "Run inside bubblewrap, or not (default none). Never falls back: if bwrap cannot be used, nothing runs " +
      "(exit 125)."
  ).pipe(Options.withDefault("none")),
  workspace: Options.text("workspace").pipe(
    Options.withPseudoName("dir"),
    Options.withDescription("[bwrap] Host directory bound read-write at /workspace (default: current directory)."),
    Options.optional
  ),
  network: choiceOption(
    "network",
    ["none", "host"],
    "[bwrap] Network inside the sandbox: none (loopback only; default) or host."
  ).pipe(Options.optional),
  maxProcs: countOption("max-procs", "[bwrap] Processes and threads of the run, bwrap's own included."),
  maxMemory: sizeOption("max-memory", Number.MAX_SAFE_INTEGER, "[bwrap] Address space per process (RLIMIT_AS)."),
  maxFileSize: sizeOption(
    "max-file-size",
    Number.MAX_SAFE_INTEGER,
    "[bwrap] Largest file a process may write (RLIMIT_FSIZE)."
  ),
  maxCpu: durationOption("max-cpu", 1000, "[bwrap] CPU time per process, whole seconds (RLIMIT_CPU), e.g. 30s."),
  maxOpenFiles: countOption("max-open-files", "[bwrap] Open file descriptors per process (RLIMIT_NOFILE)."),
  auditLog: Options.text("audit-log").pipe(
    Options.withPseudoName("file.jsonl"),
    Options.withDescription("Appends one JSON line per run (argv, cwd, exit, timing; never env values or output)."),
    Options.optional
  ),
  json: Options.boolean("json").pipe(
    Options.withDescription(
      "Print one JSON object (exit, signal, timing, output as UTF-8 or base64, audits) instead of the output."
    )
  ),
  argv: Args.text({ name: "command" }).pipe(
    Args.withDescription("The command and its arguments, after '--'. Nothing after '--' is read as our option."),
    Args.atLeast(1)
  )
} as const

type RunConfig = Command.Command.ParseConfig<typeof runConfig>

/** Validates what @effect/cli parsed into a `RunRequest`; `raw` is the command line, for the `--` rule. */
export const toRunRequest = (
  config: RunConfig,
  raw: ReadonlyArray<string>,
  hostCwd: string
): Either.Either<RunRequest, UsageError> => {
  const usage = (message: string) => Either.left(new UsageError({ message, command: "run" }))
  const forced = checkForcedArgv(raw, config.argv)
  if (Either.isLeft(forced)) return usage(forced.left)
  const sandboxOnly = [
    ["--workspace", Option.isSome(config.workspace)],
    ["--network", Option.isSome(config.network)],
    ["--max-procs", Option.isSome(config.maxProcs)],
    ["--max-memory", Option.isSome(config.maxMemory)],
    ["--max-file-size", Option.isSome(config.maxFileSize)],
    ["--max-cpu", Option.isSome(config.maxCpu)],
    ["--max-open-files", Option.isSome(config.maxOpenFiles)]
  ] as const
  const given = sandboxOnly.find(([, isSet]) => isSet)
  // Limits that are silently not enforced are worse than an error.
  if (config.sandbox === "none" && given !== undefined) return usage(`${given[0]} only applies with --sandbox bwrap`)
  const maxCpu = Option.getOrUndefined(config.maxCpu)
  if (maxCpu !== undefined && maxCpu % 1000 !== 0) {
    return usage(`--max-cpu must be whole seconds (got ${formatMillis(maxCpu)})`)
  }
  const absolute = (p: Option.Option<string>) =>
    Option.getOrUndefined(Option.map(p, (s) => (s === "-" ? s : path.resolve(hostCwd, s))))
  const limits: SandboxLimits = {
    maxProcesses: Option.getOrUndefined(config.maxProcs),
    maxMemoryBytes: Option.getOrUndefined(config.maxMemory),
    maxFileSizeBytes: Option.getOrUndefined(config.maxFileSize),
    maxCpuSeconds: maxCpu === undefined ? undefined : maxCpu / 1000,
    maxOpenFiles: Option.getOrUndefined(config.maxOpenFiles)
  }
  return Either.right({
    argv: config.argv,
    json: config.json,
    env: Object.fromEntries(config.env),
    inheritEnv: config.inheritEnv,
    timeoutMs: Option.getOrUndefined(config.timeout),
    killGraceMs: Option.getOrUndefined(config.killGrace),
    maxStdoutBytes: Option.getOrUndefined(config.maxStdout),
    maxStderrBytes: Option.getOrUndefined(config.maxStderr),
    cwd: absolute(config.cwd),
    stdinFile: absolute(config.stdinFile),
    auditLog: absolute(config.auditLog),
    sandbox: config.sandbox === "none" ? { backend: "none" } : {
      backend: "bwrap",
      policy: {
        workspace: path.resolve(hostCwd, Option.getOrElse(config.workspace, () => ".")),
        network: Option.getOrElse(config.network, () => "none" as const),
        limits
      }
    }
  })
}

/** Our standard streams as the CLI uses them: everything it prints goes through here, so tests can record it. */
export class Stdio extends Context.Tag("effect-native-runner/Cli/Stdio")<Stdio, {
  /** Writes and waits until the bytes are handed to the OS, so exiting right after loses nothing. */
  readonly stdout: (data: Uint8Array | string) => Effect.Effect<void>
  readonly stderr: (data: Uint8Array | string) => Effect.Effect<void>
  /** Our stdin, read to the end (for `--stdin-file -`). */
  readonly stdin: Effect.Effect<Uint8Array, UsageError>
  /** Whether stdout is a terminal (help keeps its ANSI styles only then). */
  readonly stdoutIsTerminal: boolean
}>() {}

const writeTo = (stream: NodeJS.WriteStream) => (data: Uint8Array | string) =>
  Effect.async<void>((resume) => {
    // A write error (EPIPE: the reader went away) leaves nobody to tell; the exit code still says how it ended.
    stream.write(data, () => resume(Effect.void))
  })

/** `Stdio` over the process's own streams. */
export const layerStdio: Layer.Layer<Stdio> = Layer.sync(Stdio, () => ({
  stdout: writeTo(process.stdout),
  stderr: writeTo(process.stderr),
  stdin: Effect.tryPromise({
    try: async () => {
      const chunks: Array<Uint8Array> = []
      for await (const chunk of process.stdin) {
        chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)))
      }
      return new Uint8Array(Buffer.concat(chunks))
    },
    catch: (error) => new UsageError({ message: `cannot read our stdin: ${errorText(error)}`, command: "run" })
  }),
  stdoutIsTerminal: process.stdout.isTTY === true && process.env["NO_COLOR"] === undefined
}))

const readStdinFile = (file: string | undefined): Effect.Effect<Uint8Array | undefined, UsageError, Stdio> =>
  file === undefined
    ? Effect.succeed(undefined)
    : file === "-"
    ? Effect.flatMap(Stdio, (io) => io.stdin)
    : Effect.tryPromise({
      try: async () => new Uint8Array(await readFile(file)),
      catch: (error) => new UsageError({ message: `cannot read --stdin-file: ${errorText(error)}`, command: "run" })
    })

// Opening the log up front turns an unwritable path into bad usage before anything runs.
const checkAuditLog = (file: string | undefined): Effect.Effect<void, UsageError> =>
  file === undefined ? Effect.void : Effect.tryPromise({
    try: () => open(file, "a").then((handle) => handle.close()),
    catch: (error) => new UsageError({ message: `cannot write --audit-log: ${errorText(error)}`, command: "run" })
  })

const errorText = (error: unknown): string => error instanceof Error ? error.message : String(error)

/** The runner layer of a request, with the JSONL audit sink when `--audit-log` is given. */
export const runnerLayer = (request: RunRequest, options: NativeRunner.Options) => {
  const live = NativeRunner.layerNode(options)
  return request.auditLog === undefined ? live : live.pipe(Layer.provide(Audit.layerJsonl(request.auditLog)))
}

const runHandler = (config: RunConfig) =>
  Effect.gen(function*() {
    const { args, exitCode } = yield* Invocation
    const io = yield* Stdio
    const request = yield* toRunRequest(config, args, process.cwd())
    const options = yield* toRunnerOptions(request)
    yield* checkAuditLog(request.auditLog)
    const stdin = yield* readStdinFile(request.stdinFile)
    const result = yield* NativeRunner.exec(toExecInput(request, stdin)).pipe(
      Effect.provide(runnerLayer(request, options))
    )
    if (request.json) {
      yield* io.stdout(JSON.stringify(toJsonResult(result)) + "\n")
    } else {
      if (result.stdout.length > 0) yield* io.stdout(result.stdout)
      if (result.stderr.length > 0) yield* io.stderr(result.stderr)
      const timeoutMs = request.timeoutMs ?? Duration.toMillis(NativeRunner.DEFAULTS.timeout)
      for (const line of notices(result, timeoutMs)) yield* io.stderr(line + "\n")
    }
    yield* Ref.set(exitCode, result.exitCode)
  })

const examples = (lines: ReadonlyArray<readonly [string, string]>) =>
  HelpDoc.blocks([
    HelpDoc.h2("EXAMPLES"),
    ...lines.flatMap(([command, what]) => [HelpDoc.p(`$ ${command}`), HelpDoc.p(`    ${what}`)])
  ])

/** `native-runner run [options] -- <command> [args...]` */
export const runCommand = Command.make("run", runConfig, runHandler).pipe(
  Command.withDescription(HelpDoc.blocks([
    HelpDoc.p(
      "Runs one command with hard limits: bounded output, a timeout that kills the whole process tree, " +
        "a filtered environment. Prints the command's stdout and stderr, then one line on stderr if it timed out, " +
        "was killed or was truncated."
    ),
    HelpDoc.p(
      "Exit code: the command's own; 124 on timeout; 128+n when killed by signal n; 127 command not found; " +
        "126 permission denied; 2 bad usage (nothing was run); 125 the runner could not run it " +
        "(e.g. sandbox unavailable)."
    ),
    examples([
      ["native-runner run -- sh -c 'echo hi'", "options of the command (-c) are never read as ours"],
      ["native-runner run --timeout 500ms -- sleep 10", "killed after 500ms, exit 124"],
      ["native-runner run --max-stdout 64KiB --json -- cat big.bin", "one JSON object; binary output as base64"],
      ["native-runner run --env MODE=ci --inherit-env none --cwd /tmp -- env", "only MODE=ci in the environment"],
      ["git diff | native-runner run --stdin-file - -- wc -l", "feed our stdin to the command"],
      ["native-runner run --audit-log runs.jsonl -- make test", "append an audit line per run"]
    ])
  ]))
)

// ---------------------------------------------------------------------------------------------------------------
// doctor: facts are gathered by running probes through the runner itself; the verdict is a pure function of them.
// ---------------------------------------------------------------------------------------------------------------

/** The probe `doctor` runs: the smallest bwrap sandbox that exercises every namespace. */
export const BWRAP_PROBE = ["bwrap", "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "/bin/true"] as const

/** What `doctor` found on this host. Probe fields: `Right` with a detail line, or `Left` with why it failed. */
export interface DoctorFacts {
  readonly nodeVersion: string
  readonly isRoot: boolean
  readonly bwrapVersion: Either.Either<string, string>
  /** Absent when there is no bwrap to try. */
  readonly bwrapProbe: Either.Either<string, string> | undefined
  readonly prlimitVersion: Either.Either<string, string>
  /** Contents of the /proc/sys files, trimmed; absent when the file does not exist. */
  readonly unprivilegedUsernsClone: string | undefined
  readonly maxUserNamespaces: string | undefined
  readonly apparmorRestrictUserns: string | undefined
}

/** One line of the doctor table. */
export interface DoctorRow {
  readonly check: string
  readonly status: "ok" | "warn" | "FAIL" | "info" | "skip"
  readonly detail: string
}

/** The table, and whether `run --sandbox bwrap` would work. */
export interface DoctorReport {
  readonly rows: ReadonlyArray<DoctorRow>
  readonly bwrapUsable: boolean
  readonly bwrapVerdict: string
}

/** Judges the facts. `backendBuilt`: whether this build can sandbox at all (`SANDBOX_BACKEND_BUILT`). */
export const doctorReport = (facts: DoctorFacts, backendBuilt: boolean): DoctorReport => {
  const row = (check: string, status: DoctorRow["status"], detail: string): DoctorRow => ({ check, status, detail })
  const major = Number(/^v(\d+)/.exec(facts.nodeVersion)?.[1] ?? 0)
  const rows: Array<DoctorRow> = [
    row("node", major >= 20 ? "ok" : "warn", major >= 20 ? facts.nodeVersion : `${facts.nodeVersion} (needs >= 20)`),
    Either.match(facts.bwrapVersion, {
      onRight: (version) => row("bwrap present", "ok", version),
      onLeft: (why) => row("bwrap present", "FAIL", `${why} (install bubblewrap)`)
    }),
    facts.bwrapProbe === undefined
      ? row("bwrap works", "skip", "no bwrap to try")
      : Either.match(facts.bwrapProbe, {
        onRight: (detail) => row("bwrap works", "ok", detail),
        onLeft: (why) => row("bwrap works", "FAIL", why)
      }),
    facts.unprivilegedUsernsClone === undefined
      ? row("userns clone", "info", "kernel.unprivileged_userns_clone absent (no such switch on this kernel)")
      : row(
        "userns clone",
        facts.unprivilegedUsernsClone !== "0" ? "ok" : facts.isRoot ? "info" : "FAIL",
        `kernel.unprivileged_userns_clone = ${facts.unprivilegedUsernsClone}${
          facts.unprivilegedUsernsClone === "0" && facts.isRoot ? " (root does not need it)" : ""
        }`
      ),
    facts.maxUserNamespaces === undefined
      ? row("max userns", "warn", "user.max_user_namespaces unreadable")
      : row(
        "max userns",
        facts.maxUserNamespaces === "0" ? "FAIL" : "ok",
        `user.max_user_namespaces = ${facts.maxUserNamespaces}${facts.maxUserNamespaces === "0" ? " (disabled)" : ""}`
      ),
    ...(facts.apparmorRestrictUserns === undefined ? [] : [
      row(
        "apparmor userns",
        facts.apparmorRestrictUserns === "0" || facts.isRoot ? "ok" : "warn",
        `kernel.apparmor_restrict_unprivileged_userns = ${facts.apparmorRestrictUserns}`
      )
    ]),
    Either.match(facts.prlimitVersion, {
      onRight: (version) => row("prlimit present", "ok", version),
      onLeft: (why) => row("prlimit present", "warn", `${why} (--max-* limits need it)`)
    })
  ]
  const probe = facts.bwrapProbe
  const hostReady = probe !== undefined && Either.isRight(probe)
  const bwrapUsable = hostReady && backendBuilt
  const bwrapVerdict = !hostReady
    ? `unavailable: ${
      probe === undefined ? "bwrap is not installed" : Either.isLeft(probe) ? `bwrap fails here (${probe.left})` : ""
    }`
    : !backendBuilt
    ? "unavailable: sandbox not available in this build (this host could run bwrap)"
    : Either.isLeft(facts.prlimitVersion)
    ? "available, but without --max-* limits (prlimit missing)"
    : "available"
  return { rows, bwrapUsable, bwrapVerdict }
}

const firstLine = (bytes: Uint8Array): string => new TextDecoder().decode(bytes).trim().split("\n")[0] ?? ""

// A probe is any command: `Right` with its first output line when it exits 0, else `Left` with why not.
const probe = (
  argv: readonly [string, ...Array<string>]
): Effect.Effect<Either.Either<string, string>, NativeRunnerError, NativeRunner.NativeRunner> =>
  NativeRunner.exec({ argv, timeout: "5 seconds" }).pipe(
    Effect.map((result): Either.Either<string, string> =>
      result.exitCode === 0
        ? Either.right(firstLine(result.stdout) || `${argv.join(" ")}: exit 0`)
        : Either.left(
          `${result.timedOut ? "timed out" : `exit ${result.exitCode}`}${
            firstLine(result.stderr) === "" ? "" : `: ${firstLine(result.stderr)}`
          }`
        )
    ),
    Effect.catchTag("SpawnError", (error) =>
      Effect.succeed(Either.left(error.reason === "NotFound" ? "not found on PATH" : error.message)))
  )

const readSysctl = (file: string): Effect.Effect<string | undefined> =>
  Effect.promise(() => readFile(file, "utf8").then((text) => text.trim(), () => undefined))

/** Gathers the facts on this host. */
export const doctorFacts: Effect.Effect<DoctorFacts, NativeRunnerError> = Effect.gen(function*() {
  const bwrapVersion = yield* probe(["bwrap", "--version"])
  const bwrapProbe = Either.isRight(bwrapVersion)
    ? yield* Effect.map(probe(BWRAP_PROBE), Either.map(() => `'${BWRAP_PROBE.join(" ")}' exits 0`))
    : undefined
  return {
    nodeVersion: process.version,
    isRoot: process.getuid?.() === 0,
    bwrapVersion,
    bwrapProbe,
    prlimitVersion: yield* probe(["prlimit", "--version"]),
    unprivilegedUsernsClone: yield* readSysctl("/proc/sys/kernel/unprivileged_userns_clone"),
    maxUserNamespaces: yield* readSysctl("/proc/sys/user/max_user_namespaces"),
    apparmorRestrictUserns: yield* readSysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
  }
}).pipe(Effect.provide(NativeRunner.layerNode({ maxStdoutBytes: 4096, maxStderrBytes: 4096 })))

/** What `doctor` was asked to check. */
const doctorConfig = {
  sandbox: choiceOption(
    "sandbox",
    ["none", "bwrap"],
    "Exit non-zero unless this sandbox can be used by 'run' (default: just report)."
  ).pipe(Options.optional)
} as const

/** The doctor table, padded columns, then the verdict line. */
export const renderDoctor = (report: DoctorReport): string => {
  const width = Math.max(...report.rows.map((row) => row.check.length))
  const lines = report.rows.map((row) => `${row.check.padEnd(width)}  ${row.status.padEnd(4)}  ${row.detail}`)
  return [...lines, "", `--sandbox bwrap: ${report.bwrapVerdict}`].join("\n") + "\n"
}

/** `native-runner doctor [--sandbox bwrap]` */
export const doctorCommand = Command.make("doctor", doctorConfig, (config) =>
  Effect.gen(function*() {
    const { exitCode } = yield* Invocation
    const report = doctorReport(yield* doctorFacts, SANDBOX_BACKEND_BUILT)
    yield* Effect.flatMap(Stdio, (io) => io.stdout(renderDoctor(report)))
    const wanted = Option.getOrElse(config.sandbox, () => "none")
    yield* Ref.set(exitCode, wanted === "bwrap" && !report.bwrapUsable ? 1 : 0)
  })).pipe(
    Command.withDescription(HelpDoc.blocks([
      HelpDoc.p(
        "Reports what this host supports: Node version, bubblewrap (present, and working: " +
          "'bwrap --ro-bind / / --unshare-all --die-with-parent /bin/true'), user namespaces, prlimit, " +
          "and what that means for --sandbox bwrap."
      ),
      examples([
        ["native-runner doctor", "print the table; exit 0"],
        ["native-runner doctor --sandbox bwrap", "exit 1 unless 'run --sandbox bwrap' would work"]
      ])
    ]))
  )

/** The root command: `native-runner run|doctor`. */
export const rootCommand = Command.make("native-runner").pipe(
  Command.withDescription(
    "Runs host commands with hard limits. Every command has --help (also -h); --version prints the version."
  ),
  Command.withSubcommands([runCommand, doctorCommand])
)

const cli = Command.run(rootCommand, { name: "native-runner", version: VERSION, executable: "native-runner" })

const ANSI_SGR = /\u001b\[[0-9;]*m/g

// @effect/cli prints help and version with `Console.log` (sent to `Stdio`, ANSI styles only for a terminal) and a
// multi-line rendering of a parse error with `Console.error` (dropped: `main` prints one line instead).
const cliConsole = <A, E, R>(self: Effect.Effect<A, E, R | Stdio>) =>
  Effect.flatMap(Stdio, (io) =>
    Console.consoleWith((console) =>
      Console.withConsole(self, {
        ...console,
        error: () => Effect.void,
        log: (...args: ReadonlyArray<unknown>) => {
          const text = args.map(String).join(" ")
          return io.stdout((io.stdoutIsTerminal ? text : text.replace(ANSI_SGR, "")) + "\n")
        }
      })
    ))

/**
 * Runs the CLI on `args` (without `node` and the script) and returns the exit code; everything printed goes to
 * `Stdio`. Bad usage is exit 2 with one line and a usage hint; nothing is spawned.
 *
 * @example
 * NodeRuntime.runMain(main(process.argv.slice(2)).pipe(Effect.provide([NodeContext.layer, Cli.layerStdio])))
 */
export const main = (args: ReadonlyArray<string>): Effect.Effect<number, never, CliApp.CliApp.Environment | Stdio> =>
  Effect.gen(function*() {
    const io = yield* Stdio
    if (args.length === 0) {
      yield* io.stderr(`${usageHint("native-runner")}\n`)
      return 2
    }
    const exitCode = yield* Ref.make(0)
    const outcome = yield* cli(["node", "native-runner", ...args]).pipe(
      cliConsole,
      Effect.provideService(Invocation, { args, exitCode }),
      // --wizard, --log-level and --completions still work; help lists only what a user of a runner needs.
      Effect.provide(CliConfig.layer({ showBuiltIns: false })),
      Effect.either
    )
    if (Either.isRight(outcome)) return yield* Ref.get(exitCode)
    const error = ValidationError.isValidationError(outcome.left)
      ? new UsageError({ message: helpDocLine(outcome.left.error), command: commandOf(args) })
      : outcome.left
    for (const line of errorLines(error)) yield* io.stderr(line + "\n")
    return exitCodeOf(error)
  })
