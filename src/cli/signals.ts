/**
 * How the CLI process ends. SIGHUP, SIGINT and SIGTERM interrupt the program: the run's process tree gets the same
 * signal (`stopSignal`, as `timeout(1)` passes a signal on), then after the kill grace SIGKILL, and its audit line is
 * written by the runner's own interruption path; then the CLI exits 128+n (129, 130, 143), as a shell reports a death
 * by that signal. A second signal while that cleanup runs is ignored: a run's cleanup is bounded by
 * its kill grace. A worker's is bounded by `setShutdownDeadline`: its cluster retries forever to release its shards
 * when the database is gone (seen: SIGTERM never ended such a worker).
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import { constants } from "node:os"

const SIGNALS = ["SIGHUP", "SIGINT", "SIGTERM"] as const
type Stop = (typeof SIGNALS)[number] | "SIGPIPE"

let deadlineMs: number | undefined
let received: Stop | undefined
let stopWith: ((signal: Stop) => void) | undefined

/** The signal this process received, for the run's tree to get first (SIGTERM when none came: a plain interrupt). */
export const stopSignal = (): Stop => received ?? "SIGTERM"

/**
 * Our stdout's reader went away (EPIPE: \`native-runner run -- seq 1 1000000 | head -1\`): the run ends as if we had
 * got SIGPIPE, quietly: the command's tree gets SIGPIPE (as it would have writing to that pipe itself), the audit line
 * is written, and we exit 141, as \`timeout(1)\` does.
 */
export const brokenPipe = (): void => stopWith?.("SIGPIPE")

let exitOverride: number | undefined

/**
 * Our stdout failed otherwise (ENOSPC on a full disk, EIO): the output is being lost, so the run is stopped (its tree
 * gets SIGTERM, then the grace, then KILL), one line says why, and we exit 125, the runner's own failure.
 */
export const stdoutFailed = (code: string): void => {
  if (exitOverride !== undefined) return
  exitOverride = 125
  process.stderr.write(`native-runner: cannot write our stdout (${code}): the output is lost; the run was stopped\n`)
  stopWith?.("SIGTERM")
}

/** After the first signal, exit 128+n at the latest `ms` later, whatever the cleanup is still waiting for. */
export const setShutdownDeadline = (ms: number): Effect.Effect<void> => Effect.sync(() => (deadlineMs = ms))

/**
 * Runs `program` to its exit code and exits the process with it; `failed` is the code for a defect (reported on
 * stderr first). Returns at once; the process exits when the program is done.
 */
export const runToExit = (program: Effect.Effect<number>, failed: number): void => {
  const fiber = Effect.runFork(program)
  const onSignal = (signal: Stop) => {
    if (received !== undefined) return
    received = signal
    fiber.unsafeInterruptAsFork(FiberId.none)
    if (deadlineMs !== undefined) setTimeout(() => process.exit(128 + constants.signals[signal]), deadlineMs).unref()
  }
  stopWith = onSignal
  for (const signal of SIGNALS) process.on(signal, onSignal)
  // The fiber alone does not hold the event loop open (a command reading our stdin might not either).
  const keepAlive = setInterval(() => undefined, 2 ** 31 - 1)
  fiber.addObserver((exit) => {
    clearInterval(keepAlive)
    if (received !== undefined) return process.exit(exitOverride ?? 128 + constants.signals[received])
    if (Exit.isSuccess(exit)) return process.exit(exit.value)
    if (!Cause.isInterruptedOnly(exit.cause)) process.stderr.write(`${Cause.pretty(exit.cause)}\n`)
    process.exit(Cause.isInterruptedOnly(exit.cause) ? 130 : failed)
  })
}
