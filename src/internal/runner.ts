/**
 * Builds the runner service over any `Spawner`: decode -> policy (cwd, env, wrapping) -> run (engine) -> result +
 * audit. The live layer and the test layer both come through here, so they share every observable behaviour.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { randomUUID } from "node:crypto"
import * as path from "node:path"
import { Audit } from "../Audit.js"
import type * as Scope from "effect/Scope"
import { type InvalidInput, type NativeRunnerError, type SandboxUnavailable, SpawnError } from "../Errors.js"
import * as Metrics from "../Metrics.js"
import {
  type AuditRecord,
  ByteCap,
  decodeInput,
  DurationInput,
  Env,
  type ExecInput,
  type ExecResult,
  type LimitExceeded,
  toInvalidInput
} from "../Exec.js"
import { type Outcome, runProcess, type RunningProcess, type RunSettings, type Spawner } from "./engine.js"
import { buildEnv, type InheritEnv } from "./env.js"
import type { PreparedCommand } from "./prepared.js"

/** The service every layer provides. */
export interface RunnerService {
  /** Runs one command; see `NativeRunner.exec`. */
  readonly exec: (input: ExecInput) => Effect.Effect<ExecResult, NativeRunnerError>
}

/** Plain options of a runner layer; every one has a default. */
export interface RunnerOptions {
  /** Bytes of stdout kept per exec (default 1 MiB). */
  readonly maxStdoutBytes?: number | undefined
  /** Bytes of stderr kept per exec (default 1 MiB). */
  readonly maxStderrBytes?: number | undefined
  /** Wall-clock limit per exec (default 60 seconds). */
  readonly timeout?: Duration.DurationInput | undefined
  /** Time between SIGTERM and SIGKILL when a run is stopped (default 2 seconds). */
  readonly killGrace?: Duration.DurationInput | undefined
  /** How long output is still read after the process exited, for pipes held by escaped grandchildren (default 1 s). */
  readonly drainTimeout?: Duration.DurationInput | undefined
  /** Default working directory (default: the host process's cwd). Relative input cwds resolve against it. */
  readonly cwd?: string | undefined
  /** What the child inherits from the host environment (default "core"). Secret-looking names never pass. */
  readonly inheritEnv?: InheritEnv | undefined
  /** Variables set for every exec; the input's `env` wins over these. */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** Processes running at once; further execs wait for a slot (default 32). */
  readonly maxConcurrent?: number | undefined
  /** Rewrites argv before it is written to audits (e.g. `Audit.redactAfter(["--password"])`). */
  readonly redactArgv?: ((argv: ReadonlyArray<string>) => ReadonlyArray<string>) | undefined
}

/** Defaults, as in the seed's lineage. */
export const DEFAULTS = {
  maxStdoutBytes: 1024 * 1024,
  maxStderrBytes: 1024 * 1024,
  timeout: Duration.seconds(60),
  killGrace: Duration.seconds(2),
  drainTimeout: Duration.seconds(1),
  inheritEnv: "core" as InheritEnv,
  maxConcurrent: 32
} as const

const OptionsData = Schema.Struct({
  maxStdoutBytes: Schema.optional(ByteCap),
  maxStderrBytes: Schema.optional(ByteCap),
  timeout: Schema.optional(DurationInput.pipe(
    Schema.filter((d) => Duration.toMillis(Duration.decode(d)) > 0 || "timeout must be above 0")
  )),
  killGrace: Schema.optional(DurationInput),
  drainTimeout: Schema.optional(DurationInput),
  cwd: Schema.optional(Schema.String.pipe(Schema.filter((s) => path.isAbsolute(s) || "cwd must be an absolute path"))),
  inheritEnv: Schema.optional(Schema.Literal("none", "core", "all")),
  env: Schema.optional(Env),
  maxConcurrent: Schema.optional(
    Schema.Number.pipe(Schema.filter((n) => Number.isSafeInteger(n) && n >= 1 || "must be a whole number >= 1"))
  ),
  redactArgv: Schema.optional(
    Schema.declare((u: unknown): u is (argv: ReadonlyArray<string>) => ReadonlyArray<string> => typeof u === "function", {
      description: "a function from argv to argv"
    })
  )
})

/** Checks the plain-data options; a bad option fails the layer with `InvalidInput`. */
export const validateOptions = (options: RunnerOptions): Effect.Effect<void, InvalidInput> =>
  Schema.decodeUnknown(OptionsData, { errors: "all" })(options).pipe(
    Effect.mapError(toInvalidInput("invalid runner options")),
    Effect.asVoid
  )

/** A command adapted for one run, and what to learn from the run before its per-run resources go. */
export interface PreparedRun {
  readonly command: PreparedCommand
  /** How the started process is signalled, when not as a plain process group (a sandbox signals inside). */
  readonly adapt?: (proc: RunningProcess) => RunningProcess
  /** Which limit ended the run, if known; fails when a wrapper reports that the real program could not start. */
  readonly finish: (outcome: Outcome) => Effect.Effect<LimitExceeded | undefined, SpawnError>
}

/** How a backend adapts a command after the env policy: sandbox wrapping, resource limits, audit labels. */
export interface Policy {
  /** "none" or the sandbox backend, for audits and spans. */
  readonly sandbox: string
  readonly network?: string
  /** Default cwd when neither the input nor the options give one (a sandbox's workspace). */
  readonly defaultCwd?: string
  /** Inherit mode when the options give none (a sandbox inherits nothing from the host). */
  readonly defaultInheritEnv?: InheritEnv
  /** Variables under the layer's and the input's (a sandbox's PATH, HOME, TMPDIR). */
  readonly baseEnv?: Readonly<Record<string, string>>
  /** Adapts one command; may acquire per-run resources (a pids cgroup) in the given scope. */
  readonly prepare: (
    command: PreparedCommand
  ) => Effect.Effect<PreparedRun, InvalidInput | SandboxUnavailable | SpawnError, Scope.Scope>
}

/** No sandbox, no resource limits. */
export const plainPolicy: Policy = {
  sandbox: "none",
  prepare: (command) => Effect.succeed({ command, finish: () => Effect.succeed(undefined) })
}

const recordMetrics = (record: AuditRecord, outcome: Outcome): Effect.Effect<void> => {
  const kept = outcome.stdout.kept() + outcome.stderr.kept()
  const seen = record.stdoutBytes + record.stderrBytes
  const label: Metrics.Outcome = record.interrupted
    ? "interrupted"
    : record.timedOut
    ? "timeout"
    : record.signal !== undefined
    ? "signal"
    : record.exitCode === 0
    ? "ok"
    : "non_zero"
  return Effect.all([
    Metrics.recordOutcome(label),
    Metric.update(Metrics.duration, record.durationMs),
    Metric.incrementBy(Metrics.bytesCaptured, kept),
    Metric.incrementBy(Metrics.bytesDropped, seen - kept)
  ], { discard: true })
}

const adapted = (spawner: Spawner, adapt: PreparedRun["adapt"]): Spawner =>
  adapt === undefined ? spawner : { spawn: (command, stdin) => Effect.map(spawner.spawn(command, stdin), adapt) }

/** Which stream could not be read to its end, and why. */
const readErrorOf = (outcome: Outcome): { readonly readError?: string } => {
  const stdout = outcome.stdout.readError()
  const stderr = outcome.stderr.readError()
  const text = [stdout === undefined ? [] : [`stdout: ${stdout}`], stderr === undefined ? [] : [`stderr: ${stderr}`]].flat()
  return text.length === 0 ? {} : { readError: text.join("; ") }
}

/**
 * The exec's cwd. `base` is undefined when the host's own cwd was already gone when the layer was built: then only an
 * absolute cwd works, anything else is the `SpawnError` a deleted cwd gives.
 */
const resolveCwd = (base: string | undefined, cwd: string | undefined, program: string): Effect.Effect<string, SpawnError> =>
  base !== undefined
    ? Effect.succeed(cwd === undefined ? base : path.resolve(base, cwd))
    : cwd !== undefined && path.isAbsolute(cwd)
    ? Effect.succeed(cwd)
    : Effect.fail(new SpawnError({
      reason: "CwdNotFound",
      command: program,
      cwd: cwd ?? "",
      message: "the host process's working directory no longer exists: give an absolute cwd"
    }))

/** This process's cwd, or `undefined` when it has been deleted (`process.cwd()` then throws ENOENT). */
export const hostCwd = (): string | undefined => {
  try {
    return process.cwd()
  } catch {
    return undefined
  }
}

/** Everything `makeRunner` needs from its environment. */
export interface RunnerContext {
  readonly spawner: Spawner
  readonly policy: Policy
  /** The host environment the inherit policy reads from. */
  readonly hostEnv: Readonly<Record<string, string | undefined>>
  /** The host cwd, read once when the layer is built, used when neither the options nor a policy give one. */
  readonly hostCwd: string | undefined
}

/** Builds the runner service; publishes audits to the `Audit` service if one is in the context. */
export const makeRunner = (
  context: RunnerContext,
  options: RunnerOptions = {}
): Effect.Effect<RunnerService, InvalidInput> =>
  Effect.gen(function*() {
    yield* validateOptions(options)
    const audit = yield* Effect.serviceOption(Audit)
    const slots = yield* Effect.makeSemaphore(options.maxConcurrent ?? DEFAULTS.maxConcurrent)
    const { policy, spawner } = context
    const baseCwd = options.cwd ?? policy.defaultCwd ?? context.hostCwd
    const redact = options.redactArgv ?? ((argv: ReadonlyArray<string>) => argv)

    const publish = (record: AuditRecord) =>
      Option.isSome(audit) ? Effect.uninterruptible(audit.value.publish(record)) : Effect.void

    const exec = Effect.fn("NativeRunner.exec")(function*(raw: ExecInput) {
      const input = yield* decodeInput(raw).pipe(Effect.tapError(() => Metrics.recordOutcome("invalid_input")))
      const settings: RunSettings = {
        maxStdoutBytes: input.limits?.maxStdoutBytes ?? options.maxStdoutBytes ?? DEFAULTS.maxStdoutBytes,
        maxStderrBytes: input.limits?.maxStderrBytes ?? options.maxStderrBytes ?? DEFAULTS.maxStderrBytes,
        timeout: input.timeout !== undefined
          ? Duration.decode(input.timeout)
          : input.limits?.timeoutMs !== undefined
          ? Duration.millis(input.limits.timeoutMs)
          : Duration.decode(options.timeout ?? DEFAULTS.timeout),
        killGrace: Duration.decode(input.killGrace ?? options.killGrace ?? DEFAULTS.killGrace),
        drainTimeout: Duration.decode(options.drainTimeout ?? DEFAULTS.drainTimeout)
      }
      const [program, ...args] = input.argv
      const cwd = yield* resolveCwd(baseCwd, input.cwd, program ?? "")
      const env = buildEnv(
        options.inheritEnv ?? policy.defaultInheritEnv ?? DEFAULTS.inheritEnv,
        context.hostEnv,
        policy.baseEnv,
        options.env,
        input.env
      )

      const runId = randomUUID()
      const startedMillis = yield* Clock.currentTimeMillis
      const startedAt = new Date(startedMillis).toISOString()
      // Argv as audits show it, redacted once per exec.
      const auditArgv = redact(input.argv)
      const recordOf = (
        run: Omit<AuditRecord, "kind" | "runId" | "startedAt" | "cmd" | "argv" | "cwd" | "sandbox" | "network">
      ): AuditRecord => ({
        kind: "native.exec",
        runId,
        startedAt,
        cmd: program ?? "",
        argv: [...auditArgv],
        cwd,
        ...run,
        sandbox: policy.sandbox,
        ...(policy.network === undefined ? {} : { network: policy.network })
      })
      const auditOf = (outcome: Outcome, limitExceeded?: LimitExceeded): AuditRecord =>
        recordOf({
          durationMs: outcome.durationMs,
          timedOut: outcome.timedOut,
          ...(outcome.signal === undefined ? {} : { signal: outcome.signal }),
          exitCode: outcome.exitCode,
          stdoutBytes: outcome.stdout.total(),
          stderrBytes: outcome.stderr.total(),
          truncatedStdout: outcome.stdout.truncated(),
          truncatedStderr: outcome.stderr.truncated(),
          interrupted: outcome.interrupted,
          ...(limitExceeded === undefined ? {} : { limitExceeded }),
          ...readErrorOf(outcome)
        })
      // Nothing ran: no output, no timeout; the exit code a shell would report for the failed start.
      const spawnFailureAudit = (error: SpawnError, durationMs: number): AuditRecord =>
        recordOf({
          durationMs,
          timedOut: false,
          exitCode: error.reason === "NotFound" ? 127 : 126,
          stdoutBytes: 0,
          stderrBytes: 0,
          truncatedStdout: false,
          truncatedStderr: false,
          interrupted: false,
          spawnError: error.reason
        })

      const [outcome, limitExceeded] = yield* Effect.scoped(Effect.gen(function*() {
        const run = yield* policy.prepare({ argv: [program ?? "", ...args], cwd, env })
        const outcome = yield* slots.withPermits(1)(
          Effect.acquireUseRelease(
            Metric.increment(Metrics.inFlight),
            () =>
              runProcess(adapted(spawner, run.adapt), run.command, input.stdin, settings, (partial) => {
                const record = auditOf(partial)
                return Effect.zipRight(publish(record), recordMetrics(record, partial))
              }),
            () => Metric.incrementBy(Metrics.inFlight, -1)
          )
        )
        return [outcome, yield* run.finish(outcome)] as const
      })).pipe(Effect.tapError((error) =>
        error._tag === "SpawnError"
          ? Effect.zipRight(
            Metrics.recordOutcome("spawn_error"),
            // Nothing ran, but the attempt is audited all the same.
            Effect.flatMap(Clock.currentTimeMillis, (now) => publish(spawnFailureAudit(error, now - startedMillis)))
          )
          : Effect.void
      ))
      const record = auditOf(outcome, limitExceeded)
      yield* publish(record)
      yield* recordMetrics(record, outcome)
      yield* Effect.annotateCurrentSpan({
        "exec.cmd": record.cmd,
        "exec.exit_code": record.exitCode,
        "exec.timed_out": record.timedOut,
        "exec.truncated": record.truncatedStdout || record.truncatedStderr,
        "exec.sandbox": record.sandbox
      })
      const result: ExecResult = {
        exitCode: outcome.exitCode,
        stdout: outcome.stdout.bytes(),
        stderr: outcome.stderr.bytes(),
        truncatedStdout: record.truncatedStdout,
        truncatedStderr: record.truncatedStderr,
        ...(outcome.signal === undefined ? {} : { signal: outcome.signal }),
        timedOut: outcome.timedOut,
        durationMs: outcome.durationMs,
        stdoutBytes: record.stdoutBytes,
        stderrBytes: record.stderrBytes,
        ...(record.limitExceeded === undefined ? {} : { limitExceeded: record.limitExceeded }),
        ...(record.readError === undefined ? {} : { readError: record.readError }),
        audits: [record]
      }
      return result
    })

    return { exec }
  })
