/**
 * The `native-runner` command line: `run` (one command through the live runner, optionally inside bubblewrap) and
 * `doctor` (what this host supports). Parsing is `@effect/cli`'s; the value parsers, the strict `--` rule, the
 * request, the rendering and the doctor live beside it in `src/cli/`. This module defines the commands and `main`, and
 * re-exports what callers and tests use.
 */
import type * as CliApp from "@effect/cli/CliApp"
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import * as Audit from "../Audit.js"
import type { NativeRunnerError } from "../Errors.js"
import type { ExecEvent, ExecInput } from "../Exec.js"
import { doctorFacts, doctorReport, renderDoctor } from "./doctor.js"
import { commandOf, errorLines, exitCodeOf, helpDocLine, UsageError, usageHint } from "./failures.js"
import { checkAuditLog, checkSpillDir, readStdinFile, Stdio } from "./io.js"
import { doctorConfig, examples, type RunConfig, runConfig } from "./options.js"
import { fleetCommand } from "./fleetCommand.js"
import { commandAt, renderHelp } from "./help.js"
import { workerCommand } from "./workerCommand.js"
import { workspaceCommand } from "./workspaceCommand.js"
import { afterLive, droppedNotice, liveEvents, notices, toJsonError, toJsonlEvent, toJsonResult } from "./render.js"
import { type RunRequest, toExecInput, toRunnerOptions, toRunRequest } from "./request.js"
import * as NativeRunner from "../NativeRunner.js"
import { currentStdinInherit, currentStopSignal } from "../internal/engine.js"
import { ourStdin } from "../internal/stdinWriter.js"
import { stopSignal } from "./signals.js"

export {
  type DoctorFacts,
  doctorFacts,
  type DoctorReport,
  doctorReport,
  type DoctorRow,
  type ProcessLimitFact,
  renderDoctor
} from "./doctor.js"
export {
  type CommandName,
  errorLines,
  exitCodeOf,
  helpDocLine,
  RUNNER_FAILED,
  UsageError,
  usageHint
} from "./failures.js"
export { layerStdio, Stdio } from "./io.js"
export type { RunConfig } from "./options.js"
export {
  checkForcedArgv,
  formatMillis,
  parseDuration,
  parseEnvPair,
  parseSandboxIdentity,
  parseSandboxUser,
  parseSize,
  RUN_OPTION_NAMES,
  shellQuote
} from "./parse.js"
export {
  afterLive,
  CliJsonAudit,
  CliJsonError,
  toJsonError,
  CliJsonlEvent,
  CliJsonResult,
  droppedNotice,
  encodeOutput,
  limitNotice,
  liveEvents,
  liveLimit,
  notices,
  OutputEncoding,
  toJsonlEvent,
  toJsonResult
} from "./render.js"
export {
  type RunRequest,
  type SandboxRequest,
  toExecInput,
  toRunnerOptions,
  toRunRequest
} from "./request.js"

/** Shown by `--version`. */
export const VERSION = "0.1.0"

/** What the handlers need from this invocation: the raw arguments and where to put the exit code. */
export class Invocation extends Context.Tag("effect-native-runner/Cli/Invocation")<Invocation, {
  readonly args: ReadonlyArray<string>
  readonly exitCode: Ref.Ref<number>
}>() {}

/**
 * The runner layer of a request, with the JSONL audit sink when `--audit-log` is given. With `--sandbox bwrap`,
 * building it runs bubblewrap's preflight and fails with `SandboxUnavailable` (exit 125) before anything runs.
 */
export const runnerLayer = (request: RunRequest, options: NativeRunner.Options) => {
  // One exec per process, from a small host: the spawn helper's start (a Node process) would cost more than it saves.
  const live = NativeRunner.layerNode({ spawnHelper: "off", ...options })
  return request.auditLog === undefined ? live : live.pipe(Layer.provide(Audit.layerJsonl(request.auditLog)))
}

/** Which bytes of each stream the caps keep, and the caps, defaults filled in. */
const capsOf = (request: RunRequest) => ({
  keep: request.keep ?? NativeRunner.DEFAULTS.keep,
  stdout: request.maxStdoutBytes ?? NativeRunner.DEFAULTS.maxStdoutBytes,
  stderr: request.maxStderrBytes ?? NativeRunner.DEFAULTS.maxStderrBytes
})

/**
 * Runs the command as a stream of events cut to what is printed as it arrives (`liveEvents`), hands each to `print`
 * in order, and returns the last one, `Exit`.
 */
const runLive = (request: RunRequest, input: ExecInput, print: (event: ExecEvent) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const caps = capsOf(request)
    const live = liveEvents(caps.keep, caps)
    const last = yield* NativeRunner.execStream(input).pipe(
      Stream.filterMap((event) => Option.fromNullable(live(event))),
      Stream.tap(print),
      Stream.runLast
    )
    return Option.isSome(last) && last.value._tag === "Exit"
      ? last.value
      : yield* Effect.dieMessage("execStream ended without its Exit event")
  })

/** `--json`: one object once the run is over. */
const printJson = (input: ExecInput) =>
  Effect.gen(function*() {
    const io = yield* Stdio
    const result = yield* NativeRunner.exec(input)
    yield* io.stdout(JSON.stringify(toJsonResult(result)) + "\n")
    return result
  })

/** `--jsonl`: one object per event as it happens, the last one the `--json` object and `dropped`. */
const printJsonl = (request: RunRequest, input: ExecInput) =>
  Effect.gen(function*() {
    const io = yield* Stdio
    const exit = yield* runLive(request, input, (event) => io.stdout(JSON.stringify(toJsonlEvent(event)) + "\n"))
    return exit.result
  })

/**
 * Plain mode: each stream's bytes as they arrive, up to what its cap keeps at the head; when the run is over, the
 * kept bytes not printed yet (the tail, with `--keep tail` or `both`), then the notices.
 */
const printPlain = (request: RunRequest, input: ExecInput) =>
  Effect.gen(function*() {
    const io = yield* Stdio
    // Whether what the notices follow ended inside a line: the command's stderr, or its stdout when ours share one
    // file (a terminal, 2>&1). A notice after a partial line starts on a line of its own.
    let partial = false
    const out = (bytes: Uint8Array) =>
      bytes.length === 0 ? Effect.void : Effect.zipRight(Effect.sync(() => (partial = io.sharedSink && bytes[bytes.length - 1] !== 10)), io.stdout(bytes))
    const err = (bytes: Uint8Array) =>
      bytes.length === 0 ? Effect.void : Effect.zipRight(Effect.sync(() => (partial = bytes[bytes.length - 1] !== 10)), io.stderr(bytes))
    const { dropped, result } = yield* runLive(request, input, (event) =>
      event._tag === "Stdout" ? out(event.bytes) : event._tag === "Stderr" ? err(event.bytes) : Effect.void)
    const caps = capsOf(request)
    yield* out(afterLive(result.stdout, caps.keep, caps.stdout))
    yield* err(afterLive(result.stderr, caps.keep, caps.stderr))
    const timeoutMs = request.timeoutMs ?? Duration.toMillis(NativeRunner.DEFAULTS.timeout)
    const lines = [...notices(result, timeoutMs, request.idleTimeoutMs), ...droppedNotice(dropped)]
    if (lines.length > 0 && partial) yield* io.stderr("\n")
    for (const line of lines) yield* io.stderr(line + "\n")
    return result
  })

/**
 * With `--json` or `--jsonl`, a failure after the command line was understood (nothing ran, or the run could not go
 * on) is printed as one JSON object too, then reported on stderr as always.
 */
const failingAsJson = (request: RunRequest) => <A, R>(self: Effect.Effect<A, UsageError | NativeRunnerError, R>) =>
  !request.json && !request.jsonl ? self : Effect.tapError(self, (error) =>
    Effect.flatMap(Stdio, (io) => {
      const object = toJsonError(error, exitCodeOf(error))
      return io.stdout(JSON.stringify(request.jsonl ? { event: "error", ...object } : object) + "\n")
    }))

const runHandler = (config: RunConfig) =>
  Effect.gen(function*() {
    const request = yield* toRunRequest(config, (yield* Invocation).args, process.cwd())
    return yield* runRequest(config, request).pipe(failingAsJson(request))
  })

const runRequest = (config: RunConfig, request: RunRequest) =>
  Effect.gen(function*() {
    const { exitCode } = yield* Invocation
    yield* checkAuditLog(request.auditLog)
    yield* checkSpillDir(request.spill?.dir)
    const io = yield* Stdio
    // A local command reads our stdin as it arrives with `--stdin pass` (the default unless it is a terminal) or
    // `--stdin-file -`; a remote one gets only what --stdin-file names, read whole (as a recorded stdin is).
    const wanted = request.stdinFile === "-" ||
      (request.stdinFile === undefined && (request.stdin ?? (io.stdinKind === "stream" ? "pass" : "none")) === "pass")
    const passLocal = wanted && Option.isNone(config.cluster) && io.stdinKind !== "recorded"
    const stdinFile = wanted && !passLocal ? "-" : request.stdinFile
    const stdin = passLocal ? undefined : yield* readStdinFile(Option.isSome(config.cluster) ? request.stdinFile : stdinFile)
    const local = toExecInput(request, stdin)
    const print = (input: ExecInput) =>
      request.json ? printJson(input) : request.jsonl ? printJsonl(request, input) : printPlain(request, input)
    if (Option.isNone(config.cluster)) {
      const fleetOnly = Option.isSome(config.credentials)
        ? "--credentials"
        : Option.isSome(config.requestId)
        ? "--request-id"
        : undefined
      if (fleetOnly !== undefined) {
        return yield* new UsageError({ message: `${fleetOnly} only applies with --cluster`, command: "run" })
      }
      // Interrupted by a signal: the command's tree gets that signal first (SIGINT for Ctrl-C), as with timeout(1).
      // Our stdin goes to a sandboxed command as a stream, through a pipe of its own, never as our descriptor (a
      // file's could be reopened for writing through /proc/self/fd/0); to any other as the descriptor itself.
      const sandboxedPass = passLocal && request.sandbox.backend === "bwrap"
      const result = yield* Effect.provide(print(sandboxedPass ? { ...local, stdin: ourStdin } : local), runnerLayer(request, toRunnerOptions(request))).pipe(
        Effect.locally(currentStopSignal, stopSignal),
        Effect.locally(currentStdinInherit, passLocal && !sandboxedPass ? "inherit" : "none")
      )
      return yield* Ref.set(exitCode, result.exitCode)
    }
    // The cluster's modules load only here: a local run never pays for them.
    const fleet = yield* Effect.promise(() => import("./fleet.js"))
    const layer = yield* fleet.clusterRunnerLayer(config, config.cluster.value)
    const input = fleet.clusterInput(request, config, local)
    const result = yield* Effect.provide(fleet.withRequestId(config, print(input)), layer)
    yield* Ref.set(exitCode, result.exitCode)
  })

/** `native-runner run [options] -- <command> [args...]` */
export const runCommand = Command.make("run", runConfig, runHandler).pipe(
  Command.withDescription(HelpDoc.blocks([
    HelpDoc.p(
      "Runs one command with hard limits: bounded output, a timeout that kills the whole process tree, " +
        "a filtered environment, optional resource limits and an optional bubblewrap sandbox. Prints the command's " +
        "stdout and stderr as they arrive (up to the caps), then one line on stderr if it timed out, was killed, " +
        "hit a limit or was truncated, and where --spill-dir wrote the whole output."
    ),
    HelpDoc.p(
      "Exit code: the command's own; 124 on timeout (--timeout or --idle-timeout); 128+n when killed by signal n; 127 command not found; " +
        "126 permission denied; 2 bad usage (nothing was run); 125 the runner could not run it " +
        "(e.g. sandbox unavailable: nothing was run, never unsandboxed)."
    ),
    examples([
      ["native-runner run -- sh -c 'echo hi'", "options of the command (-c) are never read as ours"],
      ["native-runner run --timeout 500ms -- sleep 10", "killed after 500ms, exit 124"],
      ["native-runner run --idle-timeout 5m -- make test", "stopped (exit 124) after 5 minutes without output"],
      ["native-runner run --keep tail --max-stdout 64KiB -- make", "print the last 64 KiB of stdout, at the end"],
      ["native-runner run --spill-dir /var/tmp -- make", "also write every byte to two 0600 files; print their paths"],
      ["native-runner run --jsonl -- make", "one JSON object per event: started, stdout, stderr, exit"],
      ["native-runner run --max-stdout 64KiB --json -- cat big.bin", "one JSON object; binary output as base64"],
      ["native-runner run --env MODE=ci --inherit-env none --cwd /tmp -- env", "only MODE=ci in the environment"],
      ["git diff | native-runner run -- wc -l", "our stdin reaches the command as it arrives (--stdin none: EOF)"],
      ["native-runner run --audit-log runs.jsonl -- make test", "append an audit line per run"],
      ["native-runner run --sandbox bwrap --workspace . -- make test", "no network; writes only to /workspace, /tmp"],
      ["native-runner run --max-file-size 100MiB --max-procs 256 -- ./build.sh", "resource limits, no sandbox"]
    ])
  ]))
)

/** `native-runner doctor [--sandbox bwrap] [--workspace DIR] [--sandbox-user UID:GID|workspace-owner]` */
export const doctorCommand = Command.make("doctor", doctorConfig, (config) =>
  Effect.gen(function*() {
    const { exitCode } = yield* Invocation
    const report = doctorReport(yield* doctorFacts({
      ...Option.match(config.workspace, { onNone: () => ({}), onSome: (workspace) => ({ workspace }) }),
      ...Option.match(config.sandboxUser, { onNone: () => ({}), onSome: (user) => ({ user }) })
    }))
    yield* Effect.flatMap(Stdio, (io) => io.stdout(renderDoctor(report)))
    const wanted = Option.getOrElse(config.sandbox, () => "none")
    yield* Ref.set(exitCode, wanted === "bwrap" && !report.bwrapUsable ? 1 : 0)
  })).pipe(
    Command.withDescription(HelpDoc.blocks([
      HelpDoc.p(
        "Reports what this host supports: Node version, bubblewrap (present, and working: the same preflight " +
          "'run --sandbox bwrap' makes before running anything), user namespaces, prlimit, how --max-procs is " +
          "enforced here, and what that means for --sandbox bwrap."
      ),
      examples([
        ["native-runner doctor", "print the table; exit 0"],
        ["native-runner doctor --sandbox bwrap", "exit 1 unless 'run --sandbox bwrap' would work"],
        ["native-runner doctor --sandbox bwrap --workspace /srv/jobs/42", "also exit 1 unless that workspace is accepted"]
      ])
    ]))
  )

/** The root command: `native-runner run|worker|fleet|workspace|doctor`. */
export const rootCommand = Command.make("native-runner").pipe(
  Command.withDescription(
    "Runs host commands with hard limits. Every command has --help (also -h); --version prints the version."
  ),
  Command.withSubcommands([runCommand, workerCommand, fleetCommand, workspaceCommand, doctorCommand])
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
          // Its documents end with a newline of their own (`--version` printed a blank line after the version).
          const text = args.map(String).join(" ").replace(/\n$/, "")
          return io.stdout((io.stdoutIsTerminal ? text : text.replace(ANSI_SGR, "")) + "\n")
        }
      })
    ))

/**
 * Our own `--help` (`-h`) for the command the arguments before it name (`fleet init --help`); undefined when help
 * was not asked for (after `--`, `--help` is the command's).
 */
const helpFor = (args: ReadonlyArray<string>): string | undefined => {
  const ours = args.includes("--") ? args.slice(0, args.indexOf("--")) : args
  const asked = ours.findIndex((arg) => arg === "--help" || arg === "-h")
  if (asked < 0) return undefined
  const path: Array<string> = []
  for (const arg of ours.slice(0, asked)) {
    if (arg.startsWith("-")) break
    if (commandAt(rootCommand, [...path, arg]) === undefined) break
    path.push(arg)
  }
  const at = commandAt(rootCommand, path)
  return at === undefined ? undefined : renderHelp(at, ["native-runner", ...path], VERSION, SUMMARIES)
}

/** Each command's line in its parent's list of commands. */
const SUMMARIES: Readonly<Record<string, string>> = {
  run: "Runs one command with hard limits, optionally sandboxed or on a fleet.",
  worker: "Serves a fleet: runs the commands its clients send, over mutual TLS.",
  fleet: "Sets up a fleet's trust: its CA, certificates and tenants.",
  "fleet init": "Makes a fleet directory: a CA, a member certificate and key.",
  "fleet tenant": "Registers a tenant and writes its credentials file.",
  "fleet revoke": "Revokes a tenant's credential.",
  workspace: "Prepares sandbox workspaces (the runner never chowns for a run).",
  "workspace adopt": "Gives an existing tree to the sandbox user, once.",
  "workspace new": "Creates a fresh workspace owned by the sandbox user.",
  doctor: "Reports what this host supports, and whether the sandbox works."
}

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
    const help = helpFor(args)
    if (help !== undefined) {
      yield* io.stdout(help)
      return 0
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
