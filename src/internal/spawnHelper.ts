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
import * as Either from "effect/Either"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { createServer, type Server, type Socket } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { SpawnError } from "./errors.js"
import { isOurStdin, isStreamStdin, type Spawner } from "./engine.js"
import { takeInput } from "./spawnHelper/output.js"
import { forkStdinWriter } from "./stdinWriter.js"
import { killGroup, makeNodeSpawner, spawnFailure } from "./nodeSpawner.js"
import type { PreparedCommand } from "./prepared.js"
import {
  EXIT_REPORT_WITHIN_MS,
  type Exec,
  forget,
  makeTable,
  onReply,
  runningOf,
  type StartFailure,
  type Table
} from "./spawnHelper/table.js"

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

/** How long the replacement of a lost helper waits to learn how it ended, for the warning. */
const HELPER_STATUS_WAIT = Duration.millis(100)

/** Longest Unix socket path Linux takes is 107 bytes; the socket sits two levels below the temp dir. */
const MAX_SOCKET_PATH = 100

/** The helper spawner, plus what tests watch. */
export interface HelperSpawner extends Spawner {
  /** Pid of the current helper process (a lost helper's replacement has another). */
  readonly helperPid: number
  /** The private (0700) directory holding the current helper's host socket; removed with its helper. */
  readonly socketDir: string
  /** False from the moment the current helper is lost until the next spawn starts its replacement. */
  readonly alive: () => boolean
  /** Helpers started so far (the first, and one per replacement). */
  readonly started: () => number
  /** Output connections the host dropped (a wrong token, an id not in flight, no header in time), every helper's. */
  readonly rejectedConnections: () => number
}

const helperStartError = (message: string) =>
  new SpawnError({ reason: "Unknown", command: process.execPath, cwd: process.cwd(), message })

/**
 * The helper reports the Node error's code and message; the mapping is the direct spawner's. A start the helper was
 * lost before answering is `HelperLost`: nothing of it runs (the helper's children die with it), and it is not
 * retried, since the child may have run.
 */
const startFailure = (command: PreparedCommand, failure: StartFailure) =>
  failure.lost === true
    ? Effect.fail(
      new SpawnError({
        reason: "HelperLost",
        command: command.argv[0],
        cwd: command.cwd,
        message: `the run's start was lost: ${failure.message}`
      })
    )
    : spawnFailure(command, Object.assign(new Error(failure.message), { code: failure.code }))

/** Socket directories of the layers still open: removed if the host exits without closing them. */
const openDirs = new Set<string>()
const removeOpenDirs = () => {
  for (const dir of openDirs) rmSync(dir, { recursive: true, force: true })
}

/** A private directory for the socket (mkdtemp makes it 0700), one per helper. */
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

/**
 * The helper's program, beside this module wherever it runs: src/internal (the tests), dist/internal (the library),
 * or, in the bin's bundle, where `import.meta.url` is the bundle's own URL, dist/bin (bench/build-bin.mjs copies it).
 * Read when a helper starts, not at import: a bundle with no `import.meta.url` (CommonJS) then only loses the helper.
 */
export const helperProgram = (): string | undefined => {
  try {
    const program = fileURLToPath(new URL("./spawnHelper/native-runner-spawn-helper.mjs", import.meta.url))
    return existsSync(program) ? program : undefined
  } catch {
    return undefined
  }
}

const PROGRAM_MISSING = "the spawn helper's program (spawnHelper/native-runner-spawn-helper.mjs and helperProgram.mjs, " +
  "beside the module that starts it) is not there; a bundle must copy them (see the README, \"Bundling\")"

interface Helper {
  readonly child: ChildProcess
  readonly exited: Deferred.Deferred<void>
}

const startHelper = (socketPath: string, table: Table) =>
  Effect.async<Helper, SpawnError>((resume) => {
    const program = helperProgram()
    if (program === undefined) return resume(Effect.fail(helperStartError(PROGRAM_MISSING)))
    let child: ChildProcess
    try {
      child = spawn(process.execPath, [program, socketPath], {
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

/**
 * After the engine's run bound (timeout + kill grace), a start still unanswered gets as long as a kill's exit report
 * (`EXIT_REPORT_WITHIN_MS`): a helper that has said nothing by then is stopped or wedged.
 */
const viaHelper = (table: Table): Spawner["spawn"] => (command, stdin, runWithinMs) =>
  Effect.map(
    Effect.acquireRelease(
      Effect.catchAll(
        table.request(
          command,
          isOurStdin(stdin) ? undefined : isStreamStdin(stdin) ? "connection" : stdin,
          runWithinMs === undefined ? undefined : runWithinMs + EXIT_REPORT_WITHIN_MS
        ),
        (failure) => startFailure(command, failure)
      ),
      (exec: Exec) =>
        Effect.sync(() => {
          if (!exec.exitKnown) killGroup(exec.pid, "SIGKILL")
          forget(table, exec)
        })
    ).pipe(
      // The writer lives in the run's scope; the connection reaches the host just before (or just after) "spawned".
      Effect.tap((exec) =>
        isStreamStdin(stdin)
          ? forkStdinWriter(inputOf(exec), stdin.stream)
          : Effect.void
      )
    ),
    (exec) => runningOf(table, exec)
  )

/** The exec's stdin connection, once the helper has opened it. */
const inputOf = (exec: Exec): Effect.Effect<Socket> =>
  Effect.async<Socket>((resume) => {
    exec.input.take = (socket) => resume(Effect.succeed(socket))
    takeInput(exec.input)
    return Effect.sync(() => {
      exec.input.take = undefined
    })
  })

/** Options of `makeHelperSpawnerWith`. */
export interface HelperOptions {
  /**
   * How long the helper may take to start a child (default 30 seconds; an exec's own timeout + kill grace + 2 s when
   * that is shorter). A helper that does not answer in time is taken for stuck (stopped, or wedged): it is killed,
   * that start fails with `HelperLost`, and the next spawn starts a new helper.
   */
  readonly answerWithin?: Duration.DurationInput | undefined
}

const DEFAULT_ANSWER_WITHIN = Duration.seconds(30)

/** More helpers lost than this within `LOSS_WINDOW_MS` and the layer stops replacing them: it spawns directly. */
const MAX_LOSSES = 3
const LOSS_WINDOW_MS = 60_000

/** One helper with its socket directory, listening socket and table of execs, in a scope of its own. */
interface Generation {
  readonly dir: string
  readonly table: Table
  readonly helper: Helper
  readonly scope: Scope.CloseableScope
  readonly spawn: Spawner["spawn"]
}

const startGeneration = (layer: Scope.Scope, answerWithinMs: number): Effect.Effect<Generation, SpawnError> =>
  Effect.flatMap(Scope.fork(layer, ExecutionStrategy.sequential), (scope) =>
    Effect.gen(function*() {
      const dir = yield* socketDirectory
      const socketPath = join(dir, "host.sock")
      const table = makeTable(answerWithinMs)
      yield* listen(socketPath, table)
      const helper = yield* Effect.acquireRelease(startHelper(socketPath, table), stopHelper(table))
      return { dir, table, helper, scope, spawn: viaHelper(table) }
    }).pipe(
      Scope.extend(scope),
      Effect.onError(() => Scope.close(scope, Exit.void))
    ))

/** How a lost helper ended, for the warning: "exit" comes just after "disconnect", so it gets a moment. */
const statusOf = (helper: Helper) =>
  Effect.map(Effect.timeoutOption(Deferred.await(helper.exited), HELPER_STATUS_WAIT), () => {
    const { exitCode, signalCode } = helper.child
    return signalCode ?? (exitCode === null ? "still running" : `exit code ${exitCode}`)
  })

/**
 * A `Spawner` that starts every child through one helper Node process, started now in the given scope. Closing the
 * scope SIGKILLs every running group, disconnects and waits (bounded) for the helper to exit. The helper dies with the
 * host, even a SIGKILLed one, taking its children and their run cgroups with it. If the helper dies first, or goes
 * silent (no exit report within 2 s of the host's own SIGKILL, no answer to a start within the run's bound: it is then
 * killed), the execs in flight are killed and fail with `SpawnError` `HelperLost` (with their output so far), and the
 * next spawn starts a new helper. After more than three losses within a minute, or a replacement that cannot start,
 * spawns go straight through `node:child_process` (one warning).
 */
export const makeHelperSpawnerWith = (
  options: HelperOptions = {}
): Effect.Effect<HelperSpawner, SpawnError, Scope.Scope> =>
  Effect.gen(function*() {
    const layer = yield* Effect.scope
    const answerWithinMs = Duration.toMillis(Duration.decode(options.answerWithin ?? DEFAULT_ANSWER_WITHIN))
    let current = yield* startGeneration(layer, answerWithinMs)
    let started = 1
    let retiredRejections = 0
    let direct = false
    const losses: Array<number> = []
    const lock = yield* Effect.makeSemaphore(1)
    const directSpawner = makeNodeSpawner()

    /** Retires the lost helper and starts the next one, or gives up on helpers (`undefined`). */
    const replace = Effect.gen(function*() {
      const lost = current
      const why = lost.table.gone ?? "the spawn helper is gone"
      const status = yield* statusOf(lost.helper)
      yield* Scope.close(lost.scope, Exit.void)
      retiredRejections += lost.table.rejected()
      const now = Date.now()
      losses.push(now)
      while (losses.length > 0 && now - (losses[0] ?? now) > LOSS_WINDOW_MS) losses.shift()
      const next = losses.length > MAX_LOSSES
        ? Either.left(`${losses.length} spawn helpers lost within a minute`)
        : Either.mapLeft(yield* Effect.either(startGeneration(layer, answerWithinMs)), (error) => error.message)
      if (Either.isLeft(next)) {
        direct = true
        yield* Effect.logWarning(`${why} (${status}); ${next.left}: spawning directly from now on`)
        return undefined
      }
      current = next.right
      started++
      yield* Effect.logWarning(`${why} (${status}): a new spawn helper (pid ${current.helper.child.pid}) takes over`)
      return current
    })
    /** The helper to use now: the current one, or its replacement once it is lost; `undefined`: spawn directly. */
    const usable: Effect.Effect<Generation | undefined> = Effect.suspend(() =>
      direct
        ? Effect.succeed(undefined)
        : current.table.gone === undefined
        ? Effect.succeed(current)
        : lock.withPermits(1)(Effect.suspend(() =>
          direct ? Effect.succeed(undefined) : current.table.gone === undefined ? Effect.succeed(current) : replace
        ))
    )
    return {
      get helperPid() {
        return current.helper.child.pid ?? 0
      },
      get socketDir() {
        return current.dir
      },
      alive: () => !direct && current.table.gone === undefined,
      started: () => started,
      rejectedConnections: () => retiredRejections + current.table.rejected(),
      spawn: (command, stdin, runWithinMs) =>
        Effect.flatMap(usable, (generation) =>
          // Our own stdin cannot be handed to the helper (no descriptor passing in Node): such a run spawns here.
          generation === undefined || isOurStdin(stdin)
            ? directSpawner.spawn(command, stdin, runWithinMs)
            : generation.spawn(command, stdin, runWithinMs))
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
    spawn: (command, stdin, runWithinMs) =>
      Effect.suspend(() => (process.memoryUsage.rss() < threshold ? direct : helper).spawn(command, stdin, runWithinMs))
  }
}
