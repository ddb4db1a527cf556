/**
 * Builds the runner service over any `Spawner`: decode -> policy (cwd, env, wrapping) -> run (engine) -> result +
 * audit. The live layer and the test layer both come through here, so they share every observable behaviour.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import { Audit } from "../Audit.js"
import type { InvalidInput, NativeRunnerError, SandboxUnavailable, SpawnError } from "../Errors.js"
import { type AuditRecord, decodeInput, type ExecEvent, type ExecInput, type ExecResult, type LimitExceeded } from "../Exec.js"
import * as Metrics from "../Metrics.js"
import type * as NativeRunnerModule from "../NativeRunner.js"
import { type Outcome, type RunHooks, runProcess, type RunningProcess, type RunSettings, type Spawner } from "./engine.js"
import { buildEnv, type InheritEnv } from "./env.js"
import { execStreamOf } from "./exec/events.js"
import { auditOf, recordMetrics, resultOf, type RunExtras, type RunMeta, spawnFailureAuditOf } from "./exec/record.js"
import { resolveCwd, settingsOf } from "./exec/settings.js"
import { openSpillFiles, type SpillFiles } from "./exec/spillFiles.js"
import type { PreparedCommand } from "./prepared.js"

/** The service every layer provides. */
export interface RunnerService {
  /** Runs one command; see `NativeRunner.exec`. */
  readonly exec: (input: ExecInput) => Effect.Effect<ExecResult, NativeRunnerError>
  /** Runs one command as a stream of events; see `NativeRunner.execStream`. */
  readonly execStream: (input: ExecInput) => Stream.Stream<ExecEvent, NativeRunnerError>
}

/** The decoded runner options (`NativeRunner.runnerFields`, defaults applied): what every layer's options share. */
export type RunnerOptions = Schema.Schema.Type<Schema.Struct<typeof NativeRunnerModule.runnerFields>>

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

const adapted = (spawner: Spawner, adapt: PreparedRun["adapt"]): Spawner =>
  adapt === undefined ? spawner : { spawn: (command, stdin) => Effect.map(spawner.spawn(command, stdin), adapt) }

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

/** Who hears about a run while it runs: `execStream` listens, `exec` does not. */
export interface RunListener {
  readonly onStarted: (runId: string, pid: number) => void
  readonly onChunk: NonNullable<RunHooks["onChunk"]>
}

/**
 * Builds the runner service; publishes audits to the `Audit` service if one is in the context. An exec is a short
 * pipeline: decode -> settings -> prepare (env, cwd, policy) -> run (engine) -> record -> result.
 */
export const makeRunner = (
  context: RunnerContext,
  options: RunnerOptions
): Effect.Effect<RunnerService> =>
  Effect.gen(function*() {
    const audit = yield* Effect.serviceOption(Audit)
    const slots = yield* Effect.makeSemaphore(options.maxConcurrent)
    const { policy, spawner } = context
    const baseCwd = options.cwd ?? policy.defaultCwd ?? context.hostCwd
    const redact = options.redactArgv ?? ((argv: ReadonlyArray<string>) => argv)
    const publish = (record: AuditRecord) =>
      Option.isSome(audit) ? Effect.uninterruptible(audit.value.publish(record)) : Effect.void

    /** Runs the prepared command in a concurrency slot, counted in flight; interrupted runs are audited too. */
    const run = (meta: RunMeta, prepared: PreparedRun, input: ExecInput, settings: RunSettings, hooks: RunHooks) =>
      slots.withPermits(1)(Effect.acquireUseRelease(
        Metric.increment(Metrics.inFlight),
        () =>
          runProcess(adapted(spawner, prepared.adapt), prepared.command, input.stdin, settings, {
            ...hooks,
            onInterrupt: (partial) => {
              const record = auditOf(meta, partial)
              return Effect.zipRight(publish(record), recordMetrics(record, partial))
            }
          }),
        () => Metric.incrementBy(Metrics.inFlight, -1)
      ))

    const runExec = (raw: ExecInput, listener: RunListener | undefined) =>
      Effect.gen(function*() {
        const input = yield* decodeInput(raw).pipe(Effect.tapError(() => Metrics.recordOutcome("invalid_input")))
        const settings = settingsOf(input, options)
        const [program = "", ...args] = input.argv
        const cwd = yield* resolveCwd(baseCwd, input.cwd, program)
        const env = buildEnv(
          options.inheritEnv ?? policy.defaultInheritEnv ?? "core",
          context.hostEnv,
          policy.baseEnv,
          options.env,
          input.env
        )
        const startedMillis = yield* Clock.currentTimeMillis
        const meta: RunMeta = {
          runId: randomUUID(),
          startedAt: new Date(startedMillis).toISOString(),
          startedMillis,
          cmd: program,
          argv: redact(input.argv),
          cwd,
          sandbox: policy.sandbox,
          network: policy.network
        }
        const spill = input.spill ?? options.spill
        const [outcome, extras] = yield* Effect.scoped(Effect.gen(function*() {
          const files = spill === undefined ? undefined : yield* openSpillFiles(spill, meta.runId, program, cwd)
          const prepared = yield* policy.prepare({ argv: [program, ...args], cwd, env, input })
          const outcome = yield* run(meta, prepared, input, settings, hooksOf(meta.runId, listener, files))
          const extras: RunExtras = {
            limitExceeded: yield* prepared.finish(outcome),
            stdoutFile: files?.stdoutFile,
            stderrFile: files?.stderrFile,
            spillError: files?.error()
          }
          return [outcome, extras] as const
        })).pipe(Effect.tapError((error) =>
          error._tag === "SpawnError"
            ? Effect.zipRight(
              Metrics.recordOutcome("spawn_error"),
              // Nothing ran, but the attempt is audited all the same.
              Effect.flatMap(Clock.currentTimeMillis, (now) =>
                publish(spawnFailureAuditOf(meta, error, now - startedMillis)))
            )
            : Effect.void
        ))
        const record = auditOf(meta, outcome, extras)
        yield* publish(record)
        yield* recordMetrics(record, outcome)
        yield* Effect.annotateCurrentSpan({
          "exec.cmd": record.cmd,
          "exec.exit_code": record.exitCode,
          "exec.timed_out": record.timedOut,
          "exec.truncated": record.truncatedStdout || record.truncatedStderr,
          "exec.sandbox": record.sandbox
        })
        return resultOf(outcome, record, extras)
      })

    const exec = Effect.fn("NativeRunner.exec")(function*(raw: ExecInput) {
      return yield* runExec(raw, undefined)
    })
    return { exec, execStream: (raw) => execStreamOf((listener) => runExec(raw, listener)) }
  })

/** The engine's hooks for one run: the listener's and the spill files', only where someone listens. */
const hooksOf = (runId: string, listener: RunListener | undefined, files: SpillFiles | undefined): RunHooks => {
  const sinks = [listener?.onChunk, files?.onChunk].filter((sink) => sink !== undefined)
  const [only] = sinks
  return {
    ...(listener === undefined ? {} : { onStarted: (pid: number) => listener.onStarted(runId, pid) }),
    ...(sinks.length === 0
      ? {}
      : { onChunk: sinks.length === 1 && only !== undefined ? only : (stream, bytes) => sinks.forEach((sink) => sink(stream, bytes)) })
  }
}
