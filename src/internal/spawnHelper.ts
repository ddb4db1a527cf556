/**
 * Spawning through a helper process. On Linux `child_process.spawn` forks the whole host, copying its page tables on
 * the main thread: 1.5 ms per exec at 50 MiB, about 40 ms at 1 GiB with the event loop stalled as long (FINDINGS,
 * "Spawn cost against the host's memory"). One small Node helper, started while the host is still small, forks
 * cheaply for ever after; the children write their output straight to the host over a Unix socket, so the helper
 * relays no output bytes. The protocol is described in ./spawnHelper/protocol.ts.
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer, type Server } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { SpawnError } from "./errors.js"
import type { Spawner } from "./engine.js"
import { killGroup, makeNodeSpawner, spawnFailure } from "./nodeSpawner.js"
import type { PreparedCommand } from "./prepared.js"
import { helperSource } from "./spawnHelper/helperMain.js"
import { type Exec, forget, makeTable, onReply, runningOf, type StartFailure, type Table } from "./spawnHelper/table.js"

/**
 * `makeAdaptiveSpawner` spawns directly below this host RSS. Measured through the runner (`BENCH_ONLY=mem npm run
 * bench`, medians of 3 runs, 2 shared cores): at an Effect host's own ~120 MiB the two paths cost about the same
 * (direct 4.6 ms, helper 3.9 ms per exec); at 290 MiB direct costs 13 ms and blocks the event loop about as long,
 * the helper 4.1 ms with 5 ms stalls, and it stays there up to 2 GiB. A threshold too low costs well under a
 * millisecond per exec, one too high several (the 256 MiB first proposed would leave hosts of 150-256 MiB at 2-3x):
 * 128 MiB, just above a fresh host, whose first execs then need no helper.
 */
export const DEFAULT_RSS_THRESHOLD_BYTES = 128 * 1024 * 1024

/** How long closing waits for the helper to exit after the disconnect, and again after a SIGKILL. */
const HELPER_EXIT_WAIT = Duration.seconds(2)

/** How long the first direct spawn after the helper died waits to learn how it ended, for the warning. */
const HELPER_STATUS_WAIT = Duration.millis(100)

/** Longest Unix socket path Linux takes is 107 bytes; the socket sits two levels below the temp dir. */
const MAX_SOCKET_PATH = 100

/** The helper spawner, plus what tests watch. */
export interface HelperSpawner extends Spawner {
  /** Pid of the helper process. */
  readonly helperPid: number
  /** The private (0700) directory holding the host's socket; removed when the scope closes. */
  readonly socketDir: string
  /** False once the helper has gone: spawns then go straight through `node:child_process`. */
  readonly alive: () => boolean
  /** Output connections the host dropped (a wrong token, an id not in flight, no header in time). */
  readonly rejectedConnections: () => number
}

const helperStartError = (message: string) =>
  new SpawnError({ reason: "Unknown", command: process.execPath, cwd: process.cwd(), message })

/** The helper reports the Node error's code and message; the mapping is the direct spawner's. */
const startFailure = (command: PreparedCommand, failure: StartFailure) =>
  spawnFailure(command, Object.assign(new Error(failure.message), { code: failure.code }))

/** Socket directories of the layers still open: removed if the host exits without closing them. */
const openDirs = new Set<string>()
const removeOpenDirs = () => {
  for (const dir of openDirs) rmSync(dir, { recursive: true, force: true })
}

/** A private directory for the socket (mkdtemp makes it 0700). */
const socketDirectory = Effect.acquireRelease(
  Effect.try({
    try: () => {
      const base = join(tmpdir(), "nr-spawn-XXXXXX", "host.sock").length <= MAX_SOCKET_PATH ? tmpdir() : "/tmp"
      const dir = mkdtempSync(join(base, "nr-spawn-"))
      // One listener for every layer (one each would trip Node's max-listeners warning past ten open layers).
      if (openDirs.size === 0) process.on("exit", removeOpenDirs)
      openDirs.add(dir)
      return dir
    },
    catch: (error) => helperStartError(`cannot make a directory for the spawn helper's socket: ${String(error)}`)
  }),
  (dir) =>
    Effect.sync(() => {
      openDirs.delete(dir)
      if (openDirs.size === 0) process.off("exit", removeOpenDirs)
      rmSync(dir, { recursive: true, force: true })
    })
)

const listen = (socketPath: string, table: Table) =>
  Effect.acquireRelease(
    Effect.async<Server, SpawnError>((resume) => {
      const server = createServer((socket) => table.accept(socket))
      server.once("error", (error) => resume(Effect.fail(helperStartError(`cannot listen on ${socketPath}: ${error}`))))
      server.listen(socketPath, () => {
        server.removeAllListeners("error")
        // A failed accept loses one exec's stream; the engine's drain timeout bounds the wait for it.
        server.on("error", () => {})
        // Like an idle child's pipes, the socket does not keep the host alive.
        server.unref()
        resume(Effect.succeed(server))
      })
    }),
    (server) => Effect.sync(() => table.closeSockets(server))
  )

/** The helper's environment: the host's, without NODE_OPTIONS (a loader such as tsx would only slow it down). */
const helperEnv = (): NodeJS.ProcessEnv =>
  Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== "NODE_OPTIONS"))

interface Helper {
  readonly child: ChildProcess
  readonly exited: Deferred.Deferred<void>
}

const startHelper = (socketPath: string, table: Table) =>
  Effect.async<Helper, SpawnError>((resume) => {
    let child: ChildProcess
    try {
      child = spawn(process.execPath, ["-e", helperSource(socketPath)], {
        stdio: ["ignore", "inherit", "inherit", "ipc"],
        serialization: "advanced",
        // Its own process group: a terminal's Ctrl-C reaches the host, which decides; the helper leaves with the host.
        detached: true,
        env: helperEnv()
      })
    } catch (error) {
      return resume(Effect.fail(helperStartError(`cannot start the spawn helper: ${String(error)}`)))
    }
    const exited = Deferred.unsafeMake<void>(FiberId.none)
    const onError = (error: Error) => resume(Effect.fail(helperStartError(`cannot start the spawn helper: ${error}`)))
    child.once("error", onError)
    child.once("spawn", () => {
      child.off("error", onError)
      // Later errors are failed sends racing the helper's exit: "disconnect" says what happened.
      child.on("error", () => {})
      child.on("message", (message) => onReply(table, message))
      // All replies have been read by then (unlike at "exit"), so no exit report is lost.
      child.once("disconnect", () => table.goneAway("the spawn helper went away", true))
      child.once("exit", () => Deferred.unsafeDone(exited, Exit.void))
      // An idle helper does not keep the host alive; the channel is held while execs are in flight (`table.hold`).
      child.unref()
      child.channel?.unref()
      table.attach({
        send: (request) => child.send(request),
        hold: (held) => {
          if (!child.connected) return
          if (held) child.channel?.ref()
          else child.channel?.unref()
        },
        stuck: () => child.kill("SIGKILL")
      })
      resume(Effect.succeed({ child, exited }))
    })
  })

/** Kills what still runs, disconnects (the helper then exits), and waits a bounded time for the helper's exit. */
const stopHelper = (table: Table) => ({ child, exited }: Helper) =>
  Effect.gen(function*() {
    yield* Effect.sync(() => {
      table.goneAway("the layer was closed")
      if (child.connected) child.disconnect()
    })
    if (Option.isSome(yield* Effect.timeoutOption(Deferred.await(exited), HELPER_EXIT_WAIT))) return
    child.kill("SIGKILL")
    yield* Effect.timeoutOption(Deferred.await(exited), HELPER_EXIT_WAIT)
  })

const viaHelper = (table: Table): Spawner["spawn"] => (command, stdin) =>
  Effect.map(
    Effect.acquireRelease(
      Effect.catchAll(table.request(command, stdin), (failure) => startFailure(command, failure)),
      (exec: Exec) =>
        Effect.sync(() => {
          if (!exec.exitKnown) killGroup(exec.pid, "SIGKILL")
          forget(table, exec)
        })
    ),
    (exec) => runningOf(table, exec)
  )

/** Options of `makeHelperSpawnerWith`. */
export interface HelperOptions {
  /**
   * How long the helper may take to start a child (default 30 seconds). A helper that does not answer in time is
   * taken for stuck (stopped, or wedged): it is killed, that start fails, and later spawns go direct.
   */
  readonly answerWithin?: Duration.DurationInput | undefined
}

const DEFAULT_ANSWER_WITHIN = Duration.seconds(30)

/**
 * A `Spawner` that starts every child through one helper Node process, started now in the given scope. Closing the
 * scope SIGKILLs every running group, disconnects and waits (bounded) for the helper to exit. The helper dies with the
 * host, even a SIGKILLed one, taking its children and their run cgroups with it. If the helper dies first, or reports
 * no exit within 2 s of the host's own SIGKILL (stopped, wedged: it is then killed), the execs in flight are killed
 * and fail with `SpawnError` `HelperLost` (with their output so far), and later spawns go straight through
 * `node:child_process`.
 */
export const makeHelperSpawnerWith = (
  options: HelperOptions = {}
): Effect.Effect<HelperSpawner, SpawnError, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = yield* socketDirectory
    const socketPath = join(dir, "host.sock")
    const table = makeTable(Duration.toMillis(Duration.decode(options.answerWithin ?? DEFAULT_ANSWER_WITHIN)))
    yield* listen(socketPath, table)
    const helper = yield* Effect.acquireRelease(startHelper(socketPath, table), stopHelper(table))
    const direct = makeNodeSpawner()
    let warned = false
    const warnOnce = Effect.suspend(() => {
      if (warned) return Effect.void
      warned = true
      // "exit" comes just after "disconnect": a moment's wait lets the warning say how the helper ended.
      return Effect.flatMap(Effect.timeoutOption(Deferred.await(helper.exited), HELPER_STATUS_WAIT), () => {
        const { exitCode, signalCode } = helper.child
        const status = signalCode ?? (exitCode === null ? "still running" : `exit code ${exitCode}`)
        return Effect.logWarning(`${table.gone ?? "the spawn helper is gone"} (${status}): spawning directly from now on`)
      })
    })
    const spawnViaHelper = viaHelper(table)
    return {
      helperPid: helper.child.pid ?? 0,
      socketDir: dir,
      alive: () => table.gone === undefined,
      rejectedConnections: table.rejected,
      spawn: (command, stdin) =>
        Effect.suspend(() =>
          table.gone === undefined ? spawnViaHelper(command, stdin) : Effect.zipRight(warnOnce, direct.spawn(command, stdin))
        )
    }
  })

/** `makeHelperSpawnerWith` with the defaults. */
export const makeHelperSpawner: Effect.Effect<HelperSpawner, SpawnError, Scope.Scope> = makeHelperSpawnerWith()

/**
 * Per exec, `direct` while this process's RSS is below `rssThresholdBytes`, else `helper`. Reading the RSS costs about
 * 8 µs (measured, Node 20, at 50 MiB and 1 GiB alike), so it is read on every spawn.
 */
export const makeAdaptiveSpawner = (
  direct: Spawner,
  helper: Spawner,
  options: { readonly rssThresholdBytes?: number | undefined } = {}
): Spawner => {
  const threshold = options.rssThresholdBytes ?? DEFAULT_RSS_THRESHOLD_BYTES
  return {
    spawn: (command, stdin) =>
      Effect.suspend(() => (process.memoryUsage.rss() < threshold ? direct : helper).spawn(command, stdin))
  }
}
