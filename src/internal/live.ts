/**
 * The live backend: spawns through `@effect/platform`'s `CommandExecutor`. The platform spawns each child as the
 * leader of its own process group, so the whole tree is signalled with `kill(-pid)`.
 */
import * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import type { PlatformError } from "@effect/platform/Error"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { stat } from "node:fs/promises"
import { SpawnError, type SpawnFailure } from "../Errors.js"
import type { KillSignal, ProcessExit, RunningProcess, Spawner } from "./engine.js"
import type { PreparedCommand } from "./prepared.js"

const errnoOf = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

/** Checks the cwd ourselves: Node reports a missing cwd as ENOENT, indistinguishable from a missing program. */
export const checkCwd = (command: PreparedCommand): Effect.Effect<void, SpawnError> =>
  Effect.tryPromise({
    try: () => stat(command.cwd),
    catch: (error) => error
  }).pipe(
    Effect.catchAll((error) => {
      const code = errnoOf(error)
      const reason: SpawnFailure = code === "ENOENT" || code === "ENOTDIR"
        ? "CwdNotFound"
        : code === "EACCES"
        ? "PermissionDenied"
        : "Unknown"
      return Effect.fail(spawnError(command, reason, `cannot use cwd ${command.cwd}: ${String(error)}`))
    }),
    Effect.flatMap((stats) =>
      stats.isDirectory()
        ? Effect.void
        : Effect.fail(spawnError(command, "CwdNotDirectory", `cwd ${command.cwd} is not a directory`))
    )
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

/** A `Spawner` over a `CommandExecutor`. */
export const makeSpawner = (executor: CommandExecutor.CommandExecutor): Spawner => ({
  spawn: (command, stdin) =>
    Effect.gen(function*() {
      yield* checkCwd(command)
      const [program, ...args] = command.argv
      const platformCommand = Command.make(program, ...args).pipe(
        Command.env(command.env, { extendEnv: false }),
        Command.workingDirectory(command.cwd),
        // Explicit input so the pipe is closed after it: the child sees EOF at once when there is none.
        Command.stdin(stdin === undefined ? Stream.empty : Stream.succeed(stdin))
      )
      const process = yield* executor.start(platformCommand).pipe(Effect.mapError(fromPlatformError(command)))
      const running: RunningProcess = {
        stdout: process.stdout,
        stderr: process.stderr,
        exit: exitOf(process),
        kill: (signal) => killGroup(process.pid, signal)
      }
      return running
    })
})
