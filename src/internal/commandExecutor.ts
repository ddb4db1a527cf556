/**
 * `NativeRunner.layerCommandExecutor`: `@effect/platform`'s `CommandExecutor` implemented by the runner. Each
 * `StandardCommand` is one run (caps, timeouts, tree kill, audit, metrics and sandbox, as `exec`); a pipeline is one
 * run per stage, stdout to stdin, the stages killed as a whole. What differs from the platform's executor is said at
 * each step and in the README.
 */
import * as Command from "@effect/platform/Command"
import * as CommandExecutor from "@effect/platform/CommandExecutor"
import { BadArgument, type PlatformError, SystemError } from "@effect/platform/Error"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Inspectable from "effect/Inspectable"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type { NativeRunnerError } from "../Errors.js"
import type { ExecResult } from "../Exec.js"
import { programOf, standardInput } from "./commandInput.js"
import type { KillSignal } from "./engine.js"
import type { RunControls, RunListener, RunnerCore } from "./runner.js"
import { ourStdin } from "./stdinWriter.js"

/** What the layer adds to the runner's options: whether a stream past its cap ends quietly or fails at its end. */
export interface ExecutorSettings {
  readonly overflow: "truncate" | "fail"
}

// ---------------------------------------------------------------------------------------------------------------
// Errors: ours, in the platform's shapes (the same reason, module, method, syscall and text as its own executor
// gives where callers match on them); ours is the `cause`.
// ---------------------------------------------------------------------------------------------------------------

const describe = (command: Command.StandardCommand) => `${command.command} ${command.args.join(" ")}`

/** Our typed failure as the platform's `PlatformError`, ours in its `cause`. */
export const toPlatformError = (command: Command.StandardCommand, error: NativeRunnerError): PlatformError => {
  const program = programOf(command)
  const spawn = (reason: SystemError["reason"], errno: string) =>
    new SystemError({
      reason,
      module: "Command",
      method: "spawn",
      pathOrDescriptor: describe(command),
      syscall: `spawn ${program}`,
      description: `spawn ${program} ${errno}`,
      cause: error
    })
  switch (error._tag) {
    case "InvalidInput":
      return new BadArgument({ module: "Command", method: "spawn", description: error.message, cause: error })
    case "SpawnError":
      switch (error.reason) {
        case "NotFound":
          return spawn("NotFound", "ENOENT")
        case "PermissionDenied":
          return spawn("PermissionDenied", "EACCES")
        case "CwdNotFound":
          // As the platform's executor reports it: its access() check on the directory, before the spawn.
          return new SystemError({
            reason: "NotFound",
            module: "FileSystem",
            method: "access",
            pathOrDescriptor: error.cwd,
            syscall: "access",
            description: `ENOENT: no such file or directory, access '${error.cwd}'`,
            cause: error
          })
        case "CwdNotDirectory":
          return spawn("BadResource", "ENOTDIR")
        default:
          return unknown(command, error)
      }
    default:
      return unknown(command, error)
  }
}

/** Any other failure of ours (sandbox setup, a lost helper, ...): `Unknown`, with our message and error. */
const unknown = (command: Command.StandardCommand, error: NativeRunnerError) =>
  new SystemError({
    reason: "Unknown",
    module: "Command",
    method: "spawn",
    pathOrDescriptor: describe(command),
    description: error.message,
    cause: error
  })

const endedBy = (command: Command.StandardCommand, method: string, reason: SystemError["reason"], description: string) =>
  new SystemError({ reason, module: "Command", method, pathOrDescriptor: describe(command), description })

/** A run stopped by its timeout (or by its pipeline's): `TimedOut`, where the platform's would have waited on. */
const timedOut = (command: Command.StandardCommand, method: string) =>
  endedBy(command, method, "TimedOut", `${describe(command)}: the run timed out and its process tree was killed`)

/** The platform's own text for a process that ended by a signal. */
const bySignal = (command: Command.StandardCommand, signal: string) =>
  endedBy(command, "exitCode", "Unknown", `Process interrupted due to receipt of signal: ${signal}`)

// ---------------------------------------------------------------------------------------------------------------
// Output: each stream carries the bytes the run's cap keeps from the head, as they arrive, and ends when the run does
// (after its exit and drain). The child is never slowed by a slow reader: the cap bounds what waits.
// ---------------------------------------------------------------------------------------------------------------

type Item = Uint8Array | { readonly end: PlatformError | undefined }

interface Output {
  /** Called from the pipe's own events: keep it cheap. */
  readonly push: (bytes: Uint8Array) => void
  readonly truncated: () => boolean
  readonly end: (failure: PlatformError | undefined) => void
  readonly stream: Stream.Stream<Uint8Array, PlatformError>
}

/**
 * One output stream of a run. `onEndDelivered` runs once, when a reader pulls the stream's end: for a pipeline stage,
 * the moment the next stage's stdin is closed after the last byte (a reader that stopped earlier never gets there).
 */
const makeOutput = (
  cap: number,
  forward: NodeJS.WritableStream | undefined,
  onEndDelivered?: () => void
): Effect.Effect<Output> =>
  Effect.map(Queue.unbounded<Item>(), (queue) => {
    let kept = 0
    let truncated = false
    let ended = false
    let done = false
    let failure: PlatformError | undefined
    let delivered = onEndDelivered
    const pull: Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<PlatformError>> = Effect.suspend(() => {
      if (done) {
        delivered?.()
        delivered = undefined
        return failure === undefined ? Effect.fail(Option.none()) : Effect.fail(Option.some(failure))
      }
      return Effect.map(Queue.takeBetween(queue, 1, Number.MAX_SAFE_INTEGER), (items) => {
        const bytes: Array<Uint8Array> = []
        for (const item of items) {
          if (item instanceof Uint8Array) bytes.push(item)
          else {
            done = true
            failure = item.end
          }
        }
        return Chunk.unsafeFromArray(bytes)
      })
    })
    return {
      push: (bytes) => {
        if (ended || bytes.length === 0) return
        if (kept >= cap) {
          truncated = true
          return
        }
        const piece = bytes.length <= cap - kept ? bytes : bytes.subarray(0, cap - kept)
        if (piece.length < bytes.length) truncated = true
        kept += piece.length
        if (forward !== undefined) forward.write(piece)
        else queue.unsafeOffer(piece)
      },
      truncated: () => truncated,
      end: (end) => {
        if (ended) return
        ended = true
        queue.unsafeOffer({ end })
      },
      stream: Stream.repeatEffectChunkOption(pull)
    }
  })

// ---------------------------------------------------------------------------------------------------------------
// Stdin: `Process.stdin` is a sink into a small queue the run's stdin stream pulls from, with backpressure; it ends
// the child's stdin when it completes (as the platform's does). Once the run has ended, writes are dropped.
// ---------------------------------------------------------------------------------------------------------------

interface StdinPipe {
  readonly sink: Sink.Sink<void, Uint8Array, never, PlatformError>
  readonly stream: Stream.Stream<Uint8Array>
  readonly close: Effect.Effect<void>
}

const makeStdinPipe: Effect.Effect<StdinPipe> = Effect.gen(function*() {
  const queue = yield* Queue.bounded<Uint8Array | null>(16)
  const closed = yield* Deferred.make<void>()
  const offer = (items: Iterable<Uint8Array | null>) => Effect.asVoid(Effect.raceFirst(Queue.offerAll(queue, items), Deferred.await(closed)))
  return {
    sink: Sink.forEachChunk((chunk: Chunk.Chunk<Uint8Array>) => offer(chunk)).pipe(Sink.mapEffect(() => offer([null]))),
    stream: Stream.fromQueue(queue).pipe(
      Stream.takeWhile((item) => item !== null),
      Stream.filter((item): item is Uint8Array => item !== null)
    ),
    close: Deferred.succeed(closed, undefined)
  }
})

// ---------------------------------------------------------------------------------------------------------------
// One stage: a run forked in the caller's scope (closing it kills the tree), its process handed out once started.
// ---------------------------------------------------------------------------------------------------------------

/** How a stage is started: whether anyone can write its stdin, and the previous stage's output when piped. */
interface StartHow {
  /** `Command.start`: a `"pipe"` stdin is a real pipe. The executor's own `string`, `lines`, ...: nobody could write it, so /dev/null. */
  readonly writable: boolean
  readonly stdin?: Stream.Stream<Uint8Array, unknown> | undefined
  /** A stage of a pipeline, which holds the slots of all its stages. */
  readonly slotHeld?: boolean | undefined
  /** The pipeline it is a stage of, and whether its stdout feeds another stage. */
  readonly pipeline?: Pipeline | undefined
  readonly feedsNext?: boolean | undefined
}

const KILL_SIGNALS: ReadonlySet<string> = new Set<KillSignal>(["SIGTERM", "SIGINT", "SIGHUP", "SIGPIPE", "SIGKILL"])

const isKillSignal = (signal: string): signal is KillSignal => KILL_SIGNALS.has(signal)

/**
 * What the stages of one pipeline share: `cut` is set (to the stage's description) when the next stage read a stage's
 * stdout to an end that came after its cap: it took the cut for the end of its input. A cut in the middle of a
 * pipeline is a wrong answer, not a shorter one (`head -c 3MiB | wc -c` would answer 1 MiB), so the stages that end
 * after it fail with `InvalidData`, whatever `overflow` says. A next stage that stopped reading before the cut (`cat
 * big | head`) never sees it: nothing fails. (Left open: one that stops right after the last kept byte, its input
 * already written to its pipe, when the end is handed over, counts as having read to the cut.)
 */
interface Pipeline {
  cut: string | undefined
}

/** What a stage's end owes to its pipeline, not to its own run. */
interface Stop {
  /** A stage of its pipeline timed out, and this one was stopped with it. */
  timedOut: boolean
  /** The pipeline's cut as it was when this stage ended (so its exit code and streams never change afterwards). */
  cut: string | undefined
}

/** What the engine hands a stage when its process has started. */
interface Started {
  readonly pid: number
  readonly stopTree: (signal: KillSignal) => Effect.Effect<void>
}

interface Stage {
  readonly process: CommandExecutor.Process
  readonly fiber: Fiber.RuntimeFiber<ExecResult, NativeRunnerError>
  readonly stop: Stop
  /** Ends the run as its pipeline's timeout: kills the tree, streams and exit code fail with `TimedOut`. */
  readonly abort: Effect.Effect<void>
}

type ProcessFields = Omit<CommandExecutor.Process, typeof CommandExecutor.ProcessTypeId | keyof Inspectable.Inspectable>

const makeProcess = (fields: ProcessFields): CommandExecutor.Process => {
  const json = () => ({ _id: "@effect/platform/CommandExecutor/Process", pid: fields.pid })
  return {
    [CommandExecutor.ProcessTypeId]: CommandExecutor.ProcessTypeId,
    ...fields,
    toJSON: json,
    toString: () => Inspectable.format(json()),
    [Inspectable.NodeInspectSymbol]: json
  }
}

/** The failure of every stage of a pipeline that was cut between two stages. */
const cutBetween = (command: Command.StandardCommand, method: string, stage: string) =>
  endedBy(
    command,
    method,
    "InvalidData",
    `${stage}: its stdout passed the runner's cap (maxStdoutBytes) on its way to the next stage; the pipeline's answer would be wrong`
  )

/** What both a stage's streams and its exit code fail with first: its pipeline's cut, or a timeout (its own or the pipeline's). */
const cutOrTimedOut = (
  command: Command.StandardCommand,
  method: string,
  stop: Stop,
  exit: Exit.Exit<ExecResult, NativeRunnerError>
): PlatformError | undefined =>
  stop.cut !== undefined
    ? cutBetween(command, method, stop.cut)
    : (Exit.isSuccess(exit) ? exit.value.timedOut : stop.timedOut)
    ? timedOut(command, method)
    : undefined

/** How a run's end shows on its streams: a cut or a timeout, with `overflow: "fail"` its own cap, or its failure. */
const streamEnd = (
  command: Command.StandardCommand,
  settings: ExecutorSettings,
  stop: Stop,
  exit: Exit.Exit<ExecResult, NativeRunnerError>,
  output: Output,
  name: "stdout" | "stderr"
): PlatformError | undefined => {
  const method = `read(${name})`
  const early = cutOrTimedOut(command, method, stop, exit)
  if (early !== undefined) return early
  if (Exit.isSuccess(exit)) {
    return settings.overflow === "fail" && output.truncated()
      ? endedBy(command, method, "InvalidData", `${describe(command)}: ${name} passed the runner's cap; the rest was dropped`)
      : undefined
  }
  const failure = failureOf(exit)
  return failure === undefined ? undefined : toPlatformError(command, failure)
}

/** The run's typed failure, when it failed with one (not interrupted). */
const failureOf = (exit: Exit.Exit<ExecResult, NativeRunnerError>): NativeRunnerError | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

const exitCodeOf = (command: Command.StandardCommand, stop: Stop) =>
(exit: Exit.Exit<ExecResult, NativeRunnerError>): Effect.Effect<CommandExecutor.ExitCode, PlatformError> => {
  const early = cutOrTimedOut(command, "exitCode", stop, exit)
  if (early !== undefined) return Effect.fail(early)
  if (Exit.isSuccess(exit)) {
    const result = exit.value
    if (result.signal !== undefined) return Effect.fail(bySignal(command, result.signal))
    return Effect.succeed(CommandExecutor.ExitCode(result.exitCode))
  }
  const failure = failureOf(exit)
  return failure !== undefined
    ? Effect.fail(toPlatformError(command, failure))
    : Effect.fail(endedBy(command, "exitCode", "Unknown", `${describe(command)}: the run was interrupted (its scope closed)`))
}

const startStage = (
  core: RunnerCore,
  settings: ExecutorSettings,
  command: Command.StandardCommand,
  how: StartHow
): Effect.Effect<Stage, PlatformError, Scope.Scope> =>
  Effect.gen(function*() {
    if (Option.isSome(command.uid) || Option.isSome(command.gid)) {
      return yield* Effect.fail(
        new BadArgument({
          module: "Command",
          method: "spawn",
          description: "uid and gid are not taken: the runner's sandbox user decides who a command runs as"
        })
      )
    }
    const pipe = command.stdin === "pipe" && how.writable && how.stdin === undefined ? yield* makeStdinPipe : undefined
    // Our own stdin ("inherit"): its descriptor, or for a sandboxed run a stream of it (never our descriptor).
    const inherit = command.stdin === "inherit" && how.stdin === undefined
    const stdin = how.stdin ??
      (inherit && core.sandboxed ? ourStdin : typeof command.stdin === "string" ? pipe?.stream : command.stdin)
    const controls: RunControls = {
      exactEnv: !command.extendEnv,
      slotHeld: how.slotHeld,
      ...(inherit && !core.sandboxed ? { stdin: "inherit" as const } : {})
    }
    const pipeline = how.pipeline
    const stdout: Output = yield* makeOutput(
      core.options.maxStdoutBytes,
      command.stdout === "inherit" ? process.stdout : undefined,
      how.feedsNext === true && pipeline !== undefined
        ? () => {
          if (stdout.truncated()) pipeline.cut ??= describe(command)
        }
        : undefined
    )
    const stderr = yield* makeOutput(core.options.maxStderrBytes, command.stderr === "inherit" ? process.stderr : undefined)
    // The pid, and how to stop the tree without ending the run (its result then says how the process really ended):
    // the engine gives the second just before the first.
    const started = yield* Deferred.make<Started, PlatformError>()
    let stopTree: Started["stopTree"] | undefined
    const listener: RunListener = {
      onStoppable: (stop) => {
        stopTree = stop
      },
      onStarted: (_runId, pid) =>
        Deferred.unsafeDone(
          started,
          stopTree === undefined ? Exit.die(new Error("the engine started a run it cannot stop")) : Exit.succeed({ pid, stopTree })
        ),
      onChunk: (stream, bytes) => (stream === "stdout" ? stdout : stderr).push(bytes)
    }
    const stop: Stop = { timedOut: false, cut: undefined }
    const run = core.run(standardInput(command, stdin), listener, controls).pipe(
      Effect.onExit((exit) =>
        Effect.zipRight(
          pipe?.close ?? Effect.void,
          Effect.sync(() => {
            // A cut before this stage: the stage before it handed over its end (EOF) after it, before this one ended.
            stop.cut = pipeline?.cut
            stdout.end(streamEnd(command, settings, stop, exit, stdout, "stdout"))
            stderr.end(streamEnd(command, settings, stop, exit, stderr, "stderr"))
            const failure = failureOf(exit)
            Deferred.unsafeDone(
              started,
              failure !== undefined ? Exit.fail(toPlatformError(command, failure)) : Exit.interrupt(FiberId.none)
            )
          })
        )
      )
    )
    const fiber = yield* Effect.forkScoped(run)
    // Interrupted (or failed) before the process started: the run goes too, not when the caller's scope closes.
    const { pid, stopTree: stopRun } = yield* Deferred.await(started).pipe(Effect.onError(() => Fiber.interrupt(fiber)))
    const kill = (signal: CommandExecutor.Signal = "SIGTERM"): Effect.Effect<void, PlatformError> => {
      if (!isKillSignal(signal)) {
        return Effect.fail(
          new BadArgument({
            module: "Command",
            method: "kill",
            description: `${signal} is not sent by the runner: it stops a run with SIGTERM, SIGINT, SIGHUP, SIGPIPE or SIGKILL (then SIGKILL after the grace)`
          })
        )
      }
      // The signal, the grace, SIGKILL, then the run's own end: a process that exited meanwhile keeps its own exit.
      return Effect.suspend(() =>
        fiber.unsafePoll() !== null ? Effect.void : Effect.zipRight(stopRun(signal), Effect.asVoid(Fiber.await(fiber)))
      )
    }
    const stdoutStream = typeof command.stdout === "string" ? stdout.stream : Stream.transduce(stdout.stream, command.stdout)
    const handle = makeProcess({
      pid: CommandExecutor.ProcessId(pid),
      exitCode: Effect.flatMap(Fiber.await(fiber), exitCodeOf(command, stop)),
      isRunning: Effect.map(Fiber.poll(fiber), Option.isNone),
      kill,
      stdin: pipe?.sink ?? Sink.drain,
      stdout: stdoutStream,
      stderr: stderr.stream
    })
    return {
      process: handle,
      fiber,
      stop,
      abort: Effect.suspend(() => {
        if (fiber.unsafePoll() !== null) return Effect.void
        stop.timedOut = true
        return Effect.asVoid(Fiber.interrupt(fiber))
      })
    }
  })

// ---------------------------------------------------------------------------------------------------------------
// Pipelines: stage i reads stage i-1's stdout (its capped stream); one stage timing out kills them all; killing the
// pipeline's process kills every stage; closing the scope kills what is left.
// ---------------------------------------------------------------------------------------------------------------

/** Takes `count` slots in the scope; the effect returned gives them back (once: later calls, and the scope's end, do nothing). */
const takeSlots = (slots: Effect.Semaphore, count: number): Effect.Effect<Effect.Effect<void>, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      // Interruptible while it waits: a pipeline that never got its slots gives nothing back.
      Effect.as(Effect.interruptible(slots.take(count)), { held: true }),
      (state) => state.held ? Effect.asVoid(slots.release(count)) : Effect.void
    ),
    (state) =>
      Effect.suspend(() => {
        if (!state.held) return Effect.void
        state.held = false
        return Effect.asVoid(slots.release(count))
      })
  )

const startCommand = (core: RunnerCore, settings: ExecutorSettings, writable: boolean) =>
(command: Command.Command): Effect.Effect<CommandExecutor.Process, PlatformError, Scope.Scope> =>
  Effect.gen(function*() {
    const [first, ...rest] = Command.flatten(command)
    if (rest.length === 0) return (yield* startStage(core, settings, first, { writable })).process
    // Every stage at once or none: stages each waiting for a slot would wait on each other (`yes | head` under
    // `maxConcurrent: 1` never ends). The slots are given back when the last stage has ended, or with the scope.
    const count = rest.length + 1
    if (count > core.options.maxConcurrent) {
      return yield* Effect.fail(
        new BadArgument({
          module: "Command",
          method: "spawn",
          description: `a pipeline of ${count} stages needs ${count} of the runner's slots at once; maxConcurrent is ${core.options.maxConcurrent}`
        })
      )
    }
    const release = yield* takeSlots(core.slots, count)
    const pipeline: Pipeline = { cut: undefined }
    const stages: Array<Stage> = []
    const startAll = Effect.gen(function*() {
      stages.push(yield* startStage(core, settings, first, { writable, slotHeld: true, pipeline, feedsNext: true }))
      for (const [i, stage] of rest.entries()) {
        const previous = stages[stages.length - 1]
        stages.push(yield* startStage(core, settings, stage, {
          writable: false,
          stdin: previous?.process.stdout,
          slotHeld: true,
          pipeline,
          feedsNext: i < rest.length - 1
        }))
      }
    })
    // A stage that cannot start fails the start, and the stages already running go with it (nothing is left behind).
    yield* startAll.pipe(
      Effect.onError(() => Effect.zipRight(Effect.forEach(stages, (stage) => Fiber.interrupt(stage.fiber), { discard: true }), release))
    )
    yield* Effect.forkScoped(Effect.zipRight(Effect.forEach(stages, (stage) => Fiber.await(stage.fiber), { discard: true }), release))
    const abortAll = Effect.forEach(stages, (stage) => stage.abort, { concurrency: "unbounded", discard: true })
    for (const stage of stages) {
      yield* Effect.forkScoped(Effect.flatMap(Fiber.await(stage.fiber), (exit) =>
        Exit.isSuccess(exit) && exit.value.timedOut ? abortAll : Effect.void))
    }
    const last = stages[stages.length - 1]
    if (last === undefined) return yield* Effect.dieMessage("a pipeline without stages")
    const head = stages[0]
    return makeProcess({
      ...last.process,
      // What the pipeline's Process.stdin writes is the first stage's input (the last one reads the stage before it).
      stdin: head?.process.stdin ?? last.process.stdin,
      kill: (signal) => Effect.forEach(stages, (stage) => stage.process.kill(signal), { concurrency: "unbounded", discard: true })
    })
  })

/**
 * The executor: `start` as the platform's (a `"pipe"` stdin is a pipe `Process.stdin` writes); `string`, `lines`,
 * `exitCode`, `stream` and `streamLines` give a `"pipe"` stdin /dev/null, since nothing could ever write it (the
 * platform's leaves it open: a program that reads it waits for ever).
 */
export const makeExecutor = (core: RunnerCore, settings: ExecutorSettings): CommandExecutor.CommandExecutor => {
  const started = CommandExecutor.makeExecutor(startCommand(core, settings, true))
  const quiet = CommandExecutor.makeExecutor(startCommand(core, settings, false))
  return {
    ...started,
    exitCode: quiet.exitCode,
    string: quiet.string,
    lines: quiet.lines,
    stream: quiet.stream,
    streamLines: quiet.streamLines
  }
}
