/**
 * Builds the runner service over any `Spawner`: decode -> policy (cwd, env, wrapping) -> run (engine) -> result +
 * audit. The live layer and the test layer both come through here, so they share every observable behaviour.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import type { InvalidInput, NativeRunnerError, SandboxUnavailable, SpawnError } from "../Errors.js"
import type { AuditRecord, ExecEvent, ExecInput, ExecResult, LimitExceeded } from "../Exec.js"
import type * as NativeRunnerModule from "../NativeRunner.js"
import { Audit } from "./audit.js"
import { currentStdinInherit, type OurStdin, type Outcome, type RunHooks, runProcess, type RunningProcess, type RunSettings, type SpawnStdin, type Spawner } from "./engine.js"
import { buildEnv, type InheritEnv } from "./env.js"
import { execStreamOf } from "./exec/events.js"
import { decodeInput } from "./exec/input.js"
import { auditOf, recordMetrics, resultOf, type RunExtras, type RunMeta, spawnFailureAuditOf } from "./exec/record.js"
import { resolveCwd, settingsOf } from "./exec/settings.js"
import { openSpillFiles, type SpillFiles } from "./exec/spillFiles.js"
import * as metrics from "./metrics.js"
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
  adapt === undefined ? spawner : { spawn: (command, stdin, within) => Effect.map(spawner.spawn(command, stdin, within), adapt) }

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
  /** How to stop the process tree while the run goes on to its end (see `RunHooks.onStoppable`). */
  readonly onStoppable?: RunHooks["onStoppable"]
}

/** What every exec of one runner shares. */
interface RunnerShared {
  readonly context: RunnerContext
  readonly options: RunnerOptions
  /** One permit per exec running (`maxConcurrent`). */
  readonly slots: Effect.Semaphore
  /** The cwd a relative (or missing) input cwd is resolved against; `undefined` once the host's own is gone. */
  readonly baseCwd: string | undefined
  readonly redact: (argv: ReadonlyArray<string>) => ReadonlyArray<string>
  /** Publishes to the `Audit` service, when one was in the context. */
  readonly publish: (record: AuditRecord) => Effect.Effect<void>
}

/**
 * What a `Command` run asks of an exec beyond its input (`NativeRunner.layerCommandExecutor`): `exactEnv`, the env is
 * the input's alone on top of the policy's base (the platform's `extendEnv: false`: nothing inherited, no layer
 * `env`); `stdin`, our own stdin when the input gives none (the platform's `stdin: "inherit"`).
 */
export interface RunControls {
  readonly exactEnv?: boolean | undefined
  readonly stdin?: OurStdin | undefined
  /** The caller already holds this run's `maxConcurrent` slot (a pipeline takes one per stage, all at once). */
  readonly slotHeld?: boolean | undefined
}

/** The service, and the exec behind it for code in this package that listens to runs (the `CommandExecutor`). */
export interface RunnerCore {
  readonly service: RunnerService
  readonly options: RunnerOptions
  /** Whether runs are sandboxed (our own stdin then reaches them as a stream, never as our descriptor). */
  readonly sandboxed: boolean
  /** The `maxConcurrent` slots the runs share, for callers that take several at once (`RunControls.slotHeld`). */
  readonly slots: Effect.Semaphore
  readonly run: (input: ExecInput, listener: RunListener | undefined, controls: RunControls) => Effect.Effect<ExecResult, NativeRunnerError>
}

/**
 * Builds the runner service; publishes audits to the `Audit` service if one is in the context. An exec is a short
 * pipeline: decode -> settings -> prepare (env, cwd, policy) -> run (engine) -> record -> result.
 */
export const makeRunner = (
  context: RunnerContext,
  options: RunnerOptions
): Effect.Effect<RunnerService> => Effect.map(makeRunnerCore(context, options), (core) => core.service)

/** `makeRunner`, with the exec behind the service. */
export const makeRunnerCore = (
  context: RunnerContext,
  options: RunnerOptions
): Effect.Effect<RunnerCore> =>
  Effect.gen(function*() {
    const audit = yield* Effect.serviceOption(Audit)
    const shared: RunnerShared = {
      context,
      options,
      slots: yield* Effect.makeSemaphore(options.maxConcurrent),
      baseCwd: options.cwd ?? context.policy.defaultCwd ?? context.hostCwd,
      redact: options.redactArgv ?? ((argv: ReadonlyArray<string>) => argv),
      publish: (record) => Option.isSome(audit) ? Effect.uninterruptible(audit.value.publish(record)) : Effect.void
    }
    const exec = Effect.fn("NativeRunner.exec")(function*(raw: ExecInput) {
      return yield* runExec(shared, raw, undefined, {})
    })
    const service: RunnerService = {
      exec,
      execStream: (raw) => execStreamOf((listener) => runExec(shared, raw, listener, {}))
    }
    return {
      service,
      options,
      sandboxed: context.policy.sandbox !== "none",
      slots: shared.slots,
      run: Effect.fn("NativeRunner.exec")(function*(raw: ExecInput, listener: RunListener | undefined, controls: RunControls) {
        return yield* runExec(shared, raw, listener, controls)
      })
    }
  })

/** One exec: decode -> settings -> prepare -> run -> record -> result. */
const runExec = (shared: RunnerShared, raw: ExecInput, listener: RunListener | undefined, controls: RunControls) =>
  Effect.gen(function*() {
    const input = yield* decodeInput(raw).pipe(Effect.tapError(() => metrics.recordOutcome("invalid_input")))
    const settings = settingsOf(input, shared.options)
    const { command, meta } = yield* prepare(shared, input, controls)
    const [outcome, extras] = yield* runScoped(shared, meta, command, input, settings, listener, controls).pipe(
      Effect.tapError((error) => error._tag === "SpawnError" ? auditSpawnFailure(shared, meta, error) : Effect.void)
    )
    return yield* recordRun(shared, meta, outcome, extras)
  })

/** The command after the env policy and the cwd, and what every record of the exec shares. */
const prepare = (shared: RunnerShared, input: ExecInput, controls: RunControls) =>
  Effect.gen(function*() {
    const { context, options } = shared
    const { policy } = context
    const [program = "", ...args] = input.argv
    const cwd = yield* resolveCwd(shared.baseCwd, input.cwd, program)
    const env = controls.exactEnv === true
      ? buildEnv("none", context.hostEnv, policy.baseEnv, input.env)
      : buildEnv(options.inheritEnv ?? policy.defaultInheritEnv ?? "core", context.hostEnv, policy.baseEnv, options.env, input.env)
    const startedMillis = yield* Clock.currentTimeMillis
    const meta: RunMeta = {
      runId: randomUUID(),
      startedAt: new Date(startedMillis).toISOString(),
      startedMillis,
      cmd: program,
      argv: shared.redact(input.argv),
      cwd,
      sandbox: policy.sandbox,
      network: policy.network
    }
    const command: PreparedCommand = { argv: [program, ...args], cwd, env, input }
    return { command, meta }
  })

/** Spill files, the policy's adaptation and the run, in one scope: per-run resources go when the run is over. */
const runScoped = (
  shared: RunnerShared,
  meta: RunMeta,
  command: PreparedCommand,
  input: ExecInput,
  settings: RunSettings,
  listener: RunListener | undefined,
  controls: RunControls
) =>
  Effect.scoped(Effect.gen(function*() {
    const spill = input.spill ?? shared.options.spill
    const files = spill === undefined ? undefined : yield* openSpillFiles(spill, meta.runId, meta.cmd, meta.cwd)
    const prepared = yield* shared.context.policy.prepare(command)
    const outcome = yield* runInSlot(shared, meta, prepared, input, settings, hooksOf(meta.runId, listener, files), controls)
    const extras: RunExtras = {
      limitExceeded: yield* prepared.finish(outcome),
      stdoutFile: files?.stdoutFile,
      stderrFile: files?.stderrFile,
      spillError: files?.error()
    }
    return [outcome, extras] as const
  }))

/** Runs the prepared command in a concurrency slot, counted in flight; interrupted runs are audited too. */
const runInSlot = (
  shared: RunnerShared,
  meta: RunMeta,
  prepared: PreparedRun,
  input: ExecInput,
  settings: RunSettings,
  hooks: RunHooks,
  controls: RunControls
) =>
  (controls.slotHeld === true ? <A, E, R>(self: Effect.Effect<A, E, R>) => self : shared.slots.withPermits(1))(Effect.acquireUseRelease(
    Metric.increment(metrics.inFlight),
    () =>
      Effect.flatMap(FiberRef.get(currentStdinInherit), (inherit) =>
        runProcess(adapted(shared.context.spawner, prepared.adapt), prepared.command, stdinOf(input, controls.stdin ?? inherit), settings, {
          ...hooks,
          onInterrupt: (partial) => {
            const record = auditOf(meta, partial)
            return Effect.zipRight(shared.publish(record), recordMetrics(record, partial))
          }
        })),
    () => Metric.incrementBy(metrics.inFlight, -1)
  ))

/** What the child reads: the input's bytes or stream, else our own stdin where the caller set that up, else nothing. */
const stdinOf = (input: ExecInput, inherit: "none" | OurStdin): SpawnStdin =>
  input.stdin instanceof Uint8Array
    ? input.stdin
    : input.stdin !== undefined
    ? { _tag: "StreamStdin", stream: input.stdin }
    : inherit === "none"
    ? undefined
    : inherit

/** Nothing ran, but the attempt is audited all the same. */
const auditSpawnFailure = (shared: RunnerShared, meta: RunMeta, error: SpawnError) =>
  Effect.zipRight(
    metrics.recordOutcome("spawn_error"),
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      shared.publish(spawnFailureAuditOf(meta, error, now - meta.startedMillis)))
  )

/** The audit record published, the metrics counted, the span annotated; the result built from the same record. */
const recordRun = (shared: RunnerShared, meta: RunMeta, outcome: Outcome, extras: RunExtras) =>
  Effect.gen(function*() {
    const record = auditOf(meta, outcome, extras)
    yield* shared.publish(record)
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

/** The engine's hooks for one run: the listener's and the spill files', only where someone listens. */
const hooksOf = (runId: string, listener: RunListener | undefined, files: SpillFiles | undefined): RunHooks => {
  const sinks = [listener?.onChunk, files?.onChunk].filter((sink) => sink !== undefined)
  const [only] = sinks
  return {
    ...(listener === undefined ? {} : { onStarted: (pid: number) => listener.onStarted(runId, pid) }),
    ...(listener?.onStoppable === undefined ? {} : { onStoppable: listener.onStoppable }),
    ...(sinks.length === 0
      ? {}
      : { onChunk: sinks.length === 1 && only !== undefined ? only : (stream, bytes) => sinks.forEach((sink) => sink(stream, bytes)) })
  }
}
