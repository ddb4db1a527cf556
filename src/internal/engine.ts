/**
 * The run engine shared by every backend (live processes and the scripted test layer): bounded capture, timeout by
 * interruption, TERM -> grace -> KILL of the whole tree, bounded drain after exit, exit-code mapping. A backend only
 * says how to start a process; everything a caller can observe is decided here, so the backends cannot drift apart.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import { constants } from "node:os"
import { SpawnError } from "./errors.js"
import { type Capture, makeCapture } from "./capture.js"
import type { Keep } from "../Exec.js"
import type { PreparedCommand } from "./prepared.js"

/** How a process ended, as the OS reports it: an exit code, or the signal that killed it. */
export interface ProcessExit {
  readonly code: number | null
  readonly signal: string | null
  /** Set when the backend lost track of the process (its spawn helper died or stopped): why. It was killed. */
  readonly lost?: string | undefined
}

/** The signals the engine sends to a process tree. */
export type KillSignal = StopSignal | "SIGKILL"

/** What a run that is stopped gets first, before the grace and SIGKILL. */
export type StopSignal = "SIGTERM" | "SIGINT" | "SIGHUP" | "SIGPIPE"

/**
 * The first signal an interrupted run's tree gets (a timeout always sends SIGTERM, as `timeout(1)` does), read when
 * the interruption is handled. The CLI sets it to the signal it received itself, so Ctrl-C reaches the command as
 * SIGINT; everything else leaves the default, SIGTERM.
 */
export const currentStopSignal: FiberRef.FiberRef<() => StopSignal> = FiberRef.unsafeMake<() => StopSignal>(() => "SIGTERM")

/**
 * What the child reads: bytes written then closed; a stream of bytes (`StreamStdin`), written as it comes with
 * backpressure, then closed (our own stdin reaches a sandboxed child so, through a pipe of its own: with our
 * descriptor it could reopen a file's for writing through `/proc/self/fd/0`); `"inherit"`, our own stdin's
 * descriptor itself (streamed with no copy, as a shell's child reads it); or nothing (`/dev/null`: EOF at once).
 */
export type SpawnStdin = Uint8Array | StreamStdin | OurStdin | undefined

/**
 * Stdin from a `Stream`: pulled only as fast as the child reads (one chunk in flight), ended at the stream's end;
 * a child that exits or closes its stdin stops the pull (EPIPE is how that looks, not an error); a stream that fails
 * ends the child's stdin there.
 */
export interface StreamStdin {
  readonly _tag: "StreamStdin"
  readonly stream: Stream.Stream<Uint8Array, unknown>
}

/** Whether a run's stdin comes from a `Stream`. */
export const isStreamStdin = (stdin: SpawnStdin): stdin is StreamStdin =>
  typeof stdin === "object" && !(stdin instanceof Uint8Array)

/** Our own stdin's descriptor, handed to the child (see `SpawnStdin`). */
export type OurStdin = "inherit"

/** Whether a run reads our own stdin's descriptor rather than bytes, a stream or nothing. */
export const isOurStdin = (stdin: SpawnStdin): stdin is OurStdin => stdin === "inherit"

/**
 * What a run given no stdin reads instead of /dev/null: our own stdin's descriptor (see `SpawnStdin`). Set by the CLI
 * when its stdin is not a terminal and the run is not sandboxed, as a shell's child reads it; not part of the public
 * input.
 */
export const currentStdinInherit: FiberRef.FiberRef<"none" | OurStdin> = FiberRef.unsafeMake<"none" | OurStdin>("none")

/** A started process, as a backend hands it to the engine. */
export interface RunningProcess {
  /** The process id of the started process (for a sandbox: of bwrap, or of setpriv before it). */
  readonly pid: number
  /**
   * Feeds both output pipes into the captures until both have ended. Started once, right after the spawn; the
   * engine interrupts it when a pipe held open by an escaped grandchild outlives the drain timeout.
   */
  readonly output: (stdout: Capture, stderr: Capture) => Effect.Effect<void>
  /** Completes when the process has exited; can be awaited any number of times. */
  readonly exit: Effect.Effect<ProcessExit>
  /** Sends `signal` to the whole process tree; a tree that is already gone is not an error. */
  readonly kill: (signal: KillSignal) => Effect.Effect<void>
}

/** Starts processes. The process must be owned by the given `Scope`; the engine adds its own kill finalizer. */
export interface Spawner {
  readonly spawn: (
    command: PreparedCommand,
    stdin: SpawnStdin,
    /**
     * How long the whole run may take (its timeout plus the kill grace). The start is uninterruptible, so a backend
     * that waits on another process to start the child (the spawn helper) bounds that wait by it.
     */
    runWithinMs?: number | undefined
  ) => Effect.Effect<RunningProcess, SpawnError, Scope.Scope>
}

/** Resolved limits of one run. */
export interface RunSettings {
  readonly maxStdoutBytes: number
  readonly maxStderrBytes: number
  readonly timeout: Duration.Duration
  readonly killGrace: Duration.Duration
  /** How long to keep reading after exit (a grandchild may hold the pipe open) before giving up on the rest. */
  readonly drainTimeout: Duration.Duration
  /** No output on either stream for this long stops the run like the timeout; none by default. */
  readonly idleTimeout?: Duration.Duration | undefined
  /** Which bytes of each stream the caps keep (default `"head"`). */
  readonly keep?: Keep | undefined
  /** Set: also keep stdout and stderr together, in arrival order, up to this many bytes (same `keep`). */
  readonly maxAllBytes?: number | undefined
}

/** What a caller sees of a run while it runs. Called synchronously, from the pipe's own events: keep them cheap. */
export interface RunHooks {
  /** The process started (before any output). */
  readonly onStarted?: ((pid: number) => void) | undefined
  /** A chunk arrived on a stream, in order; it is the capture's own bytes: read it, never change it. */
  readonly onChunk?: ((stream: "stdout" | "stderr", bytes: Uint8Array) => void) | undefined
  /**
   * The process started: how to stop its tree (the signal, then SIGKILL after the grace) while the run goes on to
   * its end, so the result says how the process really ended (a `Process.kill` that races the exit changes nothing).
   */
  readonly onStoppable?: ((stop: (signal: KillSignal) => Effect.Effect<void>) => void) | undefined
  /** The run's fiber was interrupted: what was captured so far, after the process tree was killed. */
  readonly onInterrupt?: ((outcome: Outcome) => Effect.Effect<void>) | undefined
}

/** Everything a run produced. */
export interface Outcome {
  readonly exitCode: number
  readonly signal: string | undefined
  readonly timedOut: boolean
  /** Which timeout fired, when one did. */
  readonly timeoutKind: "wall" | "idle" | undefined
  readonly interrupted: boolean
  readonly stdout: Capture
  readonly stderr: Capture
  /** Both streams together in arrival order, when `RunSettings.maxAllBytes` asked for it. */
  readonly all: Capture | undefined
  readonly durationMs: number
}

/** Exit code 124 on timeout, as coreutils' `timeout` reports it. */
export const TIMEOUT_EXIT_CODE = 124

const signalNumber = (name: string): number => {
  const table: Readonly<Record<string, number | undefined>> = constants.signals
  return table[name] ?? 0
}

/** Maps an OS exit to one number: the code, or 128+n for signal n (as shells do). */
export const exitCodeOf = (exit: ProcessExit): number =>
  exit.code !== null ? exit.code : 128 + (exit.signal === null ? 0 : signalNumber(exit.signal))

/**
 * TERM (or `first`) to the tree, up to `grace` for the process to exit, then KILL. Also KILLs leftover members of the
 * tree that ignored TERM after the leader died. Interruptible waits inside so it also works from a finalizer.
 */
export const terminate = (proc: RunningProcess, grace: Duration.Duration, first: KillSignal = "SIGTERM"): Effect.Effect<ProcessExit> =>
  Effect.gen(function*() {
    yield* proc.kill(first)
    const exited = yield* Effect.interruptible(proc.exit).pipe(Effect.timeoutOption(grace))
    yield* proc.kill("SIGKILL")
    return Option.isSome(exited) ? exited.value : yield* proc.exit
  })

/**
 * A capture that also tells `hooks` of each chunk and notes when output last arrived (for the idle timeout). The
 * plain capture is used as it is when nobody listens: the common exec pays nothing for streaming.
 */
const observed = (
  capture: Capture,
  stream: "stdout" | "stderr",
  onChunk: RunHooks["onChunk"],
  activity: { last: number } | undefined,
  all: Capture | undefined,
  clock: Clock.Clock
): Capture =>
  onChunk === undefined && activity === undefined && all === undefined ? capture : {
    ...capture,
    push: (chunk) => {
      if (activity !== undefined) activity.last = clock.unsafeCurrentTimeMillis()
      capture.push(chunk)
      all?.push(chunk)
      onChunk?.(stream, chunk)
    },
    // A stream that could not be read to its end leaves the combined capture incomplete too.
    fail: (reason) => {
      capture.fail(reason)
      all?.fail(`${stream}: ${reason}`)
    }
  }

/** Completes with "idle" once no output arrived for `idle` (rechecked when it arrived meanwhile). */
const idleWatch = (idle: Duration.Duration, activity: { last: number }): Effect.Effect<"idle"> =>
  Effect.gen(function*() {
    const idleMs = Duration.toMillis(idle)
    for (;;) {
      const quietFor = (yield* Clock.currentTimeMillis) - activity.last
      if (quietFor >= idleMs) return "idle" as const
      yield* Effect.sleep(Duration.millis(idleMs - quietFor))
    }
  })

/** Waits for the exit, or for the first timeout to fire (`None` with its kind). */
const awaitExit = (
  proc: RunningProcess,
  settings: RunSettings,
  activity: { last: number } | undefined
): Effect.Effect<ProcessExit | "wall" | "idle"> =>
  settings.idleTimeout === undefined || activity === undefined
    ? Effect.map(proc.exit.pipe(Effect.timeoutOption(settings.timeout)), Option.getOrElse(() => "wall" as const))
    : Effect.raceAll<Effect.Effect<ProcessExit | "wall" | "idle">>([
      proc.exit,
      Effect.as(Effect.sleep(settings.timeout), "wall" as const),
      idleWatch(settings.idleTimeout, activity)
    ])

/**
 * The two captures of a run, the sinks the backend feeds (the captures, observed when someone listens), and when
 * output last arrived (for the idle timeout).
 */
export interface RunCaptures {
  readonly stdout: Capture
  readonly stderr: Capture
  /** Both streams in the order their chunks arrived (`maxAllBytes`), fed by the sinks. */
  readonly all: Capture | undefined
  readonly sinks: readonly [Capture, Capture]
  readonly activity: { last: number } | undefined
}

/** The captures of one run and the sinks a backend feeds. Exported for the property tests of the combined capture. */
export const capturesOf = (settings: RunSettings, onChunk: RunHooks["onChunk"], clock: Clock.Clock, started: number) => {
  const stdout = makeCapture(settings.maxStdoutBytes, settings.keep)
  const stderr = makeCapture(settings.maxStderrBytes, settings.keep)
  const all = settings.maxAllBytes === undefined ? undefined : makeCapture(settings.maxAllBytes, settings.keep)
  const activity = settings.idleTimeout === undefined ? undefined : { last: started }
  const sinks = [
    observed(stdout, "stdout", onChunk, activity, all, clock),
    observed(stderr, "stderr", onChunk, activity, all, clock)
  ] as const
  return { stdout, stderr, all, sinks, activity } satisfies RunCaptures
}

/** The outcome from how the run ended; an exit never seen (interrupted before it) counts as SIGKILL. */
const outcomeOf = (
  captures: RunCaptures,
  started: number,
  exit: ProcessExit | undefined,
  timeoutKind: Outcome["timeoutKind"],
  interrupted: boolean
) =>
  Effect.map(Clock.currentTimeMillis, (now): Outcome => ({
    exitCode: timeoutKind !== undefined
      ? TIMEOUT_EXIT_CODE
      : exit === undefined
      ? 128 + signalNumber("SIGKILL")
      : exitCodeOf(exit),
    signal: exit?.signal ?? undefined,
    timedOut: timeoutKind !== undefined,
    timeoutKind,
    interrupted,
    stdout: captures.stdout,
    stderr: captures.stderr,
    all: captures.all,
    durationMs: now - started
  }))

/** The run's timeout plus its kill grace: by then it has ended, one way or the other. */
const runWithinMs = (settings: RunSettings): number =>
  Duration.toMillis(settings.timeout) + Duration.toMillis(settings.killGrace)

/** The exit once known, shared by the run, its kill finalizer and its interruption. */
interface ExitNote {
  exit: ProcessExit | undefined
}

/**
 * Spawn and kill finalizer as one uninterruptible step: an interrupt landing in between would leave only the
 * backend's own release, which (for the platform's) sends TERM and waits forever for a child that ignores it.
 * Readers start before we wait for the exit, or a chatty child blocks on a full pipe. They are forked before the
 * kill finalizer is added, so on interruption they stop only after it: a program handling TERM can still write
 * (closing its pipes first would kill it with SIGPIPE in its own handler), and what it writes is kept.
 */
const spawnOwned = (
  spawner: Spawner,
  command: PreparedCommand,
  stdin: SpawnStdin,
  sinks: RunCaptures["sinks"],
  settings: RunSettings,
  note: ExitNote
) =>
  Effect.uninterruptible(Effect.flatMap(spawner.spawn(command, stdin, runWithinMs(settings)), (proc) =>
    Effect.zipLeft(
      Effect.map(Effect.forkScoped(Effect.interruptible(proc.output(...sinks))), (readers) => [proc, readers] as const),
      // Added after the backend's own release, so it runs first: nothing outlives the scope, whatever ends it.
      Effect.addFinalizer(() =>
        note.exit !== undefined
          ? Effect.void
          : Effect.flatMap(FiberRef.get(currentStopSignal), (stop) =>
            Effect.map(terminate(proc, settings.killGrace, stop()), (exit) => {
              note.exit = exit
            }))
      )
    )))

/** Waits for the exit or a timeout. Timed out: kill the tree. Exited: kill what it left behind in its group. */
const awaitEnd = (proc: RunningProcess, settings: RunSettings, activity: RunCaptures["activity"]) =>
  Effect.gen(function*() {
    const waited = yield* awaitExit(proc, settings, activity)
    const timeoutKind = typeof waited === "string" ? waited : undefined
    const exit = typeof waited === "string" ? yield* terminate(proc, settings.killGrace) : waited
    // Background children of a process that exited by itself.
    if (timeoutKind === undefined) yield* proc.kill("SIGKILL")
    return { exit, timeoutKind }
  })

/**
 * The pipes close once every holder is dead; one that survives (e.g. setsid) only gets a bounded wait. Usually both
 * pipes have ended by now: then no timer is needed.
 */
const drainRest = (readers: Fiber.RuntimeFiber<void>, drainTimeout: Duration.Duration) =>
  Effect.gen(function*() {
    const early = yield* Fiber.poll(readers)
    if (Option.isNone(early)) {
      const drained = yield* Fiber.join(readers).pipe(Effect.timeoutOption(drainTimeout))
      if (Option.isNone(drained)) yield* Fiber.interrupt(readers)
    }
  })

/**
 * Runs one prepared command to completion under `settings`. Non-zero exits, signals, timeouts and truncation are
 * in the outcome; only a failed spawn is an error. If the calling fiber is interrupted, the process tree is killed
 * before this effect ends, and `hooks.onInterrupt` receives what was captured so far.
 */
export const runProcess = (
  spawner: Spawner,
  command: PreparedCommand,
  stdin: SpawnStdin,
  settings: RunSettings,
  hooks: RunHooks = {}
): Effect.Effect<Outcome, SpawnError> =>
  Effect.gen(function*() {
    const clock = yield* Effect.clock
    const started = clock.unsafeCurrentTimeMillis()
    const captures = capturesOf(settings, hooks.onChunk, clock, started)
    const note: ExitNote = { exit: undefined }
    const run = Effect.scoped(
      Effect.gen(function*() {
        const [proc, readers] = yield* spawnOwned(spawner, command, stdin, captures.sinks, settings, note)
        hooks.onStoppable?.((signal) => Effect.asVoid(terminate(proc, settings.killGrace, signal)))
        hooks.onStarted?.(proc.pid)
        const { exit, timeoutKind } = yield* awaitEnd(proc, settings, captures.activity)
        note.exit = exit
        yield* drainRest(readers, settings.drainTimeout)
        if (exit.lost !== undefined) {
          return yield* Effect.fail(
            new SpawnError({
              reason: "HelperLost",
              command: command.argv[0],
              cwd: command.cwd,
              message: `the run's processes were killed: ${exit.lost}`,
              stdout: captures.stdout.bytes(),
              stderr: captures.stderr.bytes()
            })
          )
        }
        return yield* outcomeOf(captures, started, exit, timeoutKind, false)
      })
    )
    const onInterrupt = hooks.onInterrupt
    return yield* onInterrupt === undefined
      ? run
      : run.pipe(Effect.onInterrupt(() => Effect.flatMap(outcomeOf(captures, started, note.exit, undefined, true), onInterrupt)))
  })
