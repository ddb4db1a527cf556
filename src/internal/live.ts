/**
 * The live backend: spawns through `@effect/platform`'s `CommandExecutor`. The platform spawns each child as the
 * leader of its own process group, so the whole tree is signalled with `kill(-pid)`.
 */
import * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import type { PlatformError } from "@effect/platform/Error"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { stat } from "node:fs/promises"
import type { SpawnFailure } from "../Errors.js"
import { SpawnError } from "./errors.js"
import { drainStreams } from "./drain.js"
import { isOurStdin, isStreamStdin, type KillSignal, type ProcessExit, type RunningProcess, type Spawner } from "./engine.js"
import type { PreparedCommand } from "./prepared.js"
import { hostCwd } from "./runner.js"

export const errnoOf = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

/** The error for a cwd that `stat` refused (shared with the test layer's synchronous check). */
export const cwdStatFailure = (command: PreparedCommand, error: unknown): SpawnError => {
  const code = errnoOf(error)
  const reason: SpawnFailure = code === "ENOENT" || code === "ENOTDIR"
    ? "CwdNotFound"
    : code === "EACCES"
    ? "PermissionDenied"
    : "Unknown"
  const why = reason === "CwdNotFound"
    ? "no such directory"
    : reason === "PermissionDenied"
    ? "permission denied"
    : code ?? (error instanceof Error ? error.message : String(error))
  return spawnError(command, reason, `cannot use cwd ${command.cwd}: ${why}`)
}

/** The error for a cwd that exists but is not a directory. */
export const cwdNotDirectory = (command: PreparedCommand): SpawnError =>
  spawnError(command, "CwdNotDirectory", `cwd ${command.cwd} is not a directory`)

/** Checks the cwd ourselves: Node reports a missing cwd as ENOENT, indistinguishable from a missing program. */
export const checkCwd = (command: PreparedCommand): Effect.Effect<void, SpawnError> =>
  Effect.tryPromise({
    try: () => stat(command.cwd),
    catch: (error) => cwdStatFailure(command, error)
  }).pipe(
    Effect.flatMap((stats) => stats.isDirectory() ? Effect.void : Effect.fail(cwdNotDirectory(command)))
  )

export const spawnError = (command: PreparedCommand, reason: SpawnFailure, message: string) =>
  new SpawnError({ reason, command: command.argv[0], cwd: command.cwd, message })

const fromPlatformError = (command: PreparedCommand) => (error: PlatformError): SpawnError => {
  const reason: SpawnFailure = error._tag === "SystemError" && error.reason === "NotFound"
    ? "NotFound"
    : error._tag === "SystemError" && error.reason === "PermissionDenied"
    ? "PermissionDenied"
    : "Unknown"
  const what = reason === "NotFound"
    ? `command not found: ${command.argv[0]}`
    : reason === "PermissionDenied"
    ? `permission denied: ${command.argv[0]}`
    : `cannot spawn ${command.argv[0]}: ${error.message}`
  return spawnError(command, reason, what)
}

// The platform fails `exitCode` when the child died by a signal; the signal name is only in the message.
const SIGNAL_IN_MESSAGE = /signal: (SIG[A-Z0-9]+)/

const exitOf = (process: CommandExecutor.Process): Effect.Effect<ProcessExit> =>
  process.exitCode.pipe(
    Effect.map((code): ProcessExit => ({ code, signal: null })),
    Effect.catchAll((error) =>
      Effect.succeed<ProcessExit>({ code: null, signal: SIGNAL_IN_MESSAGE.exec(error.message)?.[1] ?? "SIGKILL" })
    )
  )

const killGroup = (pid: number, signal: KillSignal) =>
  Effect.sync(() => {
    try {
      process.kill(-pid, signal)
    } catch (error) {
      // ESRCH: the group is already gone, which is what we wanted.
      if (errnoOf(error) !== "ESRCH") throw error
    }
  })

// With no input the child's stdin is /dev/null: it sees EOF at once, and no pipe or writer fiber is made for it.
// The platform hands a string stdin straight to Node's `stdio` option; its type lists only "inherit" and "pipe".
const NO_INPUT = "ignore" as unknown as Command.CommandInput

/** A failed start: was it the cwd? Node reports a missing cwd as ENOENT, like a missing program. */
export const classifyFailure = (command: PreparedCommand, otherwise: SpawnError): Effect.Effect<never, SpawnError> =>
  Effect.flatMap(Effect.either(checkCwd(command)), (cwd) => Effect.fail(cwd._tag === "Left" ? cwd.left : otherwise))

/**
 * Node's spawn throws (instead of emitting "error") for some errnos: E2BIG for an argv or env beyond the kernel's
 * limits, ENOTDIR for a cwd that is a file. Inside the platform's `Effect.async` that is a defect; it is a failed
 * spawn all the same.
 */
const spawnDefect = (command: PreparedCommand) => (defect: unknown): Option.Option<Effect.Effect<never, SpawnError>> => {
  const code = errnoOf(defect)
  if (code === undefined) return Option.none()
  const message = code === "E2BIG"
    ? `cannot spawn ${command.argv[0]}: argument list or environment too long (E2BIG)`
    : `cannot spawn ${command.argv[0]}: ${code}`
  return Option.some(classifyFailure(command, spawnError(command, "Unknown", message)))
}

const EMPTY = new Uint8Array(0)

/**
 * The platform's stdin sink (platform-node-shared 0.5x, `writeEffect`) waits for "drain" only between the items of a
 * chunk, never after the last: a stream of one-item chunks is written with no backpressure at all (measured: an
 * endless stream into `true` blocked the event loop while Node buffered it). An empty item after each one makes it
 * wait for "drain" after every write; writing zero bytes is a no-op.
 */
const withBackpressure = (stream: Stream.Stream<Uint8Array, unknown>) =>
  Stream.mapChunks(stream, Chunk.flatMap((bytes) => Chunk.make(bytes, EMPTY)))

/**
 * A `Spawner` over a `CommandExecutor`. Kept cheap per exec (each item measured with `npm run bench`): the cwd is
 * only examined after a failed start; a cwd equal to the host's is not passed (the platform would check it again);
 * stdin is /dev/null unless there are bytes to write.
 */
export const makeSpawner = (
  executor: CommandExecutor.CommandExecutor,
  // Read once: process.cwd() throws once the host's cwd is deleted.
  cwdAtStart: string | undefined = hostCwd()
): Spawner => ({
  spawn: (command, stdin) =>
    Effect.gen(function*() {
      const [program, ...args] = command.argv
      const base = Command.make(program, ...args).pipe(Command.env(command.env, { extendEnv: false }))
      const withCwd = command.cwd === cwdAtStart ? base : Command.workingDirectory(base, command.cwd)
      const platformCommand = stdin === undefined
        ? Command.stdin(withCwd, NO_INPUT)
        : isOurStdin(stdin)
        ? Command.stdin(withCwd, "inherit")
        : withCwd
      const process = yield* executor.start(platformCommand).pipe(
        Effect.catchAll((error) => classifyFailure(command, fromPlatformError(command)(error))),
        Effect.catchSomeDefect(spawnDefect(command))
      )
      if (stdin instanceof Uint8Array || isStreamStdin(stdin)) {
        // Our own writer, in the run's scope: written then closed, and interrupted when the run ends whatever the
        // child did with its stdin (one that exits without reading is not an error).
        const source = stdin instanceof Uint8Array ? Stream.succeed(stdin) : withBackpressure(stdin.stream)
        // Stopped at the exit too: after EPIPE the platform's sink waits for a "drain" that never comes.
        // Not waited for when the run ends: a pull that never returns would hold the run's end (see forkStdinWriter).
        const writer = yield* Effect.forkDaemon(Effect.interruptible(
          Effect.raceFirst(Stream.run(source, process.stdin).pipe(Effect.ignore), exitOf(process))
        ))
        yield* Effect.addFinalizer(() => Fiber.interruptFork(writer))
      }
      const running: RunningProcess = {
        pid: process.pid,
        output: drainStreams(process.stdout, process.stderr),
        exit: exitOf(process),
        kill: (signal) => killGroup(process.pid, signal)
      }
      return running
    })
})
