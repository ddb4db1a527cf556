/**
 * The Node backend: spawns with `node:child_process` directly. Output goes from each pipe's `data` events straight
 * into the capture (no Stream machinery per chunk), and descriptors beyond stdio can be handed to the child (bwrap's
 * `--args`, `--seccomp`, `--json-status-fd`), which `@effect/platform`'s `Command` cannot express.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import { type ChildProcess, spawn, type StdioOptions } from "node:child_process"
import { existsSync } from "node:fs"
import type { Readable, Writable } from "node:stream"
import { isStreamStdin, type KillSignal, type ProcessExit, type RunningProcess, type SpawnStdin, type Spawner } from "./engine.js"
import { classifyFailure, errnoOf, spawnError } from "./live.js"
import type { ExtraFd, PreparedCommand } from "./prepared.js"
import { moveSelf } from "./runCgroup.js"
import { forkStdinWriter } from "./stdinWriter.js"

const ignore = () => {}

/** Writes `bytes` and closes; a child that exits without reading (EPIPE) is not an error. */
const feed = (stream: Writable | null | undefined, bytes: Uint8Array) => {
  if (stream === null || stream === undefined) return
  stream.on("error", ignore)
  stream.end(bytes)
}

/**
 * Signals the process group led by `pid`. ESRCH (gone) and EPERM (no longer ours to signal) are outcomes. Once the
 * leader has been reaped (`reaped`), a live process whose pid is `pid` cannot be ours: the kernel does not hand out a
 * pid still in use as a group id, so that process proves our group empty and the id reused; it is never signalled.
 * (Left open without a run cgroup: the last member exiting and the id being taken between this check and the kill.)
 */
export const killGroup = (pid: number, signal: KillSignal, reaped = false): void => {
  if (reaped && existsSync(`/proc/${pid}`)) return
  try {
    process.kill(-pid, signal)
  } catch (error) {
    const code = errnoOf(error)
    if (code !== "ESRCH" && code !== "EPERM") throw error
  }
}

/** The `SpawnError` for a failed start, from the Node error (its errno `code`), the cwd examined only now. */
export const spawnFailure = (command: PreparedCommand, error: unknown) => {
  const code = errnoOf(error)
  const program = command.argv[0]
  const otherwise = code === "ENOENT"
    ? spawnError(command, "NotFound", `command not found: ${program}`)
    : code === "EACCES"
    ? spawnError(command, "PermissionDenied", `permission denied: ${program}`)
    : code === "E2BIG"
    ? spawnError(command, "Unknown", `cannot spawn ${program}: argument list or environment too long (E2BIG)`)
    : spawnError(command, "Unknown", `cannot spawn ${program}: ${code ?? String(error)}`)
  // Node reports a missing cwd as ENOENT, like a missing program: look at the cwd only now that the start failed.
  return classifyFailure(command, otherwise)
}

const stdioOf = (stdin: SpawnStdin, extra: ReadonlyArray<ExtraFd>): StdioOptions => [
  // No input: /dev/null, so the child sees EOF at once and no pipe is made.
  stdin === undefined ? "ignore" : stdin === "inherit" ? 0 : "pipe",
  "pipe",
  "pipe",
  ...extra.map((fd) => fd._tag === "Directory" ? fd.fd : fd._tag === "Inherited" ? "ignore" as const : "pipe" as const)
]

/** A child that has started, with its exit already being watched (registered before any async boundary). */
interface Started {
  readonly child: ChildProcess
  readonly pid: number
  readonly exited: Deferred.Deferred<ProcessExit>
}

const isWritable = (stream: Readable | Writable | null | undefined): stream is Writable =>
  stream !== null && stream !== undefined && "write" in stream

const isReadable = (stream: Readable | Writable | null | undefined): stream is Readable =>
  stream !== null && stream !== undefined && "read" in stream

const start = (command: PreparedCommand, stdin: SpawnStdin) =>
  Effect.async<Started, { readonly error: unknown }>((resume) => {
    const [program, ...args] = command.argv
    let child: ChildProcess
    const cgroup = command.cgroup
    try {
      // libuv forks inside this synchronous call, so the child is born in the run's cgroup and nothing else is.
      if (cgroup !== undefined) moveSelf(cgroup.procs)
      // detached: the child leads a new session and process group, so the whole tree is signalled with kill(-pid).
      child = spawn(program, args, {
        cwd: command.cwd,
        env: command.env,
        detached: true,
        stdio: stdioOf(stdin, command.extraFds ?? [])
      })
    } catch (error) {
      // Some errnos (E2BIG, ENOTDIR for a cwd that is a file) are thrown instead of emitted.
      resume(Effect.fail({ error }))
      return
    } finally {
      if (cgroup !== undefined) moveSelf(cgroup.home)
    }
    const exited = Deferred.unsafeMake<ProcessExit>(FiberId.none)
    child.once("exit", (code, signal) => Deferred.unsafeDone(exited, Exit.succeed({ code, signal })))
    const onError = (error: unknown) => {
      child.off("spawn", onSpawn)
      resume(Effect.fail({ error }))
    }
    const onSpawn = () => {
      child.off("error", onError)
      const pid = child.pid
      if (pid === undefined) return resume(Effect.fail({ error: new Error("spawned without a pid") }))
      if (stdin instanceof Uint8Array) feed(child.stdin, stdin)
      ;(command.extraFds ?? []).forEach((fd, index) => {
        const stream = child.stdio[3 + index]
        if (fd._tag === "Input") feed(isWritable(stream) ? stream : undefined, fd.bytes)
        else if (fd._tag === "Output" && isReadable(stream)) {
          stream.on("error", ignore)
          stream.on("data", fd.onData)
        }
      })
      resume(Effect.succeed({ child, pid, exited }))
    }
    child.once("error", onError)
    child.once("spawn", onSpawn)
  })

/** Reads both pipes into the captures; completes when both have closed, destroys them when interrupted. */
const outputOf = (stdout: Readable | null, stderr: Readable | null): RunningProcess["output"] =>
(stdoutCapture, stderrCapture) =>
  Effect.async<void>((resume) => {
    let open = 2
    const closed = () => {
      if (--open === 0) resume(Effect.void)
    }
    for (const [stream, capture] of [[stdout, stdoutCapture], [stderr, stderrCapture]] as const) {
      if (stream === null) {
        closed()
        continue
      }
      // A read error ends the stream ("close" follows "error"): the capture records it, so the result says the output
      // is incomplete instead of passing for drained; the exit status still says how the process ended.
      stream.on("error", (error: unknown) => capture.fail(`${errnoOf(error) ?? "read error"}: ${error instanceof Error ? error.message : String(error)}`))
      stream.on("data", (chunk: Uint8Array) => capture.push(chunk))
      if (stream.destroyed) closed()
      else stream.once("close", closed)
    }
    return Effect.sync(() => {
      stdout?.destroy()
      stderr?.destroy()
    })
  })

/**
 * A `Spawner` on `node:child_process`. Each child leads its own process group; closing the spawn's scope while it
 * still runs SIGKILLs the group (the engine's TERM -> grace -> KILL finalizer runs before this one).
 */
export const makeNodeSpawner = (): Spawner => ({
  spawn: (command, stdin) =>
    Effect.map(
      Effect.acquireRelease(
        start(command, stdin).pipe(Effect.catchAll(({ error }) => spawnFailure(command, error))),
        ({ exited, pid }) =>
          Effect.flatMap(Deferred.isDone(exited), (done) => done ? Effect.void : Effect.sync(() => killGroup(pid, "SIGKILL")))
      ).pipe(
        // The writer lives in the run's scope: it stops when the run ends, whatever the child did with its stdin.
        Effect.tap(({ child }) =>
          isStreamStdin(stdin) && child.stdin !== null
            ? forkStdinWriter(Effect.succeed(child.stdin), stdin.stream)
            : Effect.void
        )
      ),
      ({ child, exited, pid }): RunningProcess => ({
        pid,
        output: outputOf(child.stdout, child.stderr),
        exit: Deferred.await(exited),
        kill: (signal) => Effect.flatMap(Deferred.isDone(exited), (reaped) => Effect.sync(() => killGroup(pid, signal, reaped)))
      })
    )
})
