/**
 * The test layer's fake processes: a scripted response played on Effect's `Clock`, signal rules of a real process, and
 * the live layer's cwd check. `NativeRunnerTest` owns the shapes; this runs them (./fakeSpawner.ts picks which).
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Mailbox from "effect/Mailbox"
import type * as Scope from "effect/Scope"
import { statSync, type Stats } from "node:fs"
import type { SpawnError, SpawnFailure } from "../Errors.js"
import type { Data, FakeProcess, Response, SpawnFails, Step } from "../NativeRunnerTest.js"
import { drainStreams } from "./drain.js"
import type { KillSignal, ProcessExit, RunningProcess } from "./engine.js"
import { cwdNotDirectory, cwdStatFailure } from "./live.js"
import type { PreparedCommand } from "./prepared.js"

const encoder = new TextEncoder()
const toBytes = (data: Data): Uint8Array => (typeof data === "string" ? encoder.encode(data) : data)
const chunksOf = (data: Data | ReadonlyArray<Data> | undefined): ReadonlyArray<Data> =>
  data === undefined ? [] : typeof data === "string" || data instanceof Uint8Array ? [data] : data

/**
 * The live layer's cwd check (`checkCwd` in internal/live.ts), same reasons and messages, but synchronous. The live
 * one awaits `fs.promises.stat`; on a TestClock that async step lets `TestClock.adjust` run before the engine has
 * started its timeout, and a plain fork-adjust-join test then hangs at random (about 1 run in 10).
 */
export const checkCwdNow = (command: PreparedCommand): Effect.Effect<void, SpawnError> =>
  Effect.suspend(() => {
    let stats: Stats
    try {
      stats = statSync(command.cwd)
    } catch (error) {
      return Effect.fail(cwdStatFailure(command, error))
    }
    return stats.isDirectory() ? Effect.void : Effect.fail(cwdNotDirectory(command))
  })

export const isSpawnFails = (response: Response): response is SpawnFails =>
  "_tag" in response && response._tag === "SpawnFails"

export const defaultSpawnMessage = (reason: SpawnFailure, command: PreparedCommand): string => {
  const program = command.argv[0]
  switch (reason) {
    case "NotFound":
      return `command not found: ${program}`
    case "PermissionDenied":
      return `permission denied: ${program}`
    case "CwdNotFound":
      return `cannot use cwd ${command.cwd}: no such directory`
    case "CwdNotDirectory":
      return `cwd ${command.cwd} is not a directory`
    case "SandboxSetup":
      return `the sandbox for ${program} could not be set up`
    case "HelperLost":
      return `the spawn helper running ${program} was lost`
    case "Unknown":
      return `cannot spawn ${program}`
  }
}

// Fake processes get pids of their own, far above any real pid_max, so they can never be confused with real ones.
let nextFakePid = 10_000_000

/** Starts the scripted process in the spawn's scope; `kill` follows the signal rules of a real process. */
export const startFake = (fake: FakeProcess): Effect.Effect<RunningProcess, never, Scope.Scope> =>
  Effect.gen(function*() {
    const out = yield* Mailbox.make<Uint8Array>()
    const err = yield* Mailbox.make<Uint8Array>()
    const exited = yield* Deferred.make<ProcessExit>()
    // Like a real exit: the status is set once, and the pipes close (readers see the end of both streams).
    const finish = (exit: ProcessExit) =>
      Effect.uninterruptible(
        Effect.flatMap(Deferred.succeed(exited, exit), (first) => first ? Effect.zipRight(out.end, err.end) : Effect.void)
      )
    const steps: ReadonlyArray<Step> = [
      ...chunksOf(fake.stdout).map((data): Step => ({ _tag: "Stdout", data })),
      ...chunksOf(fake.stderr).map((data): Step => ({ _tag: "Stderr", data })),
      ...(fake.output ?? [])
    ]
    const run = Effect.gen(function*() {
      for (const step of steps) {
        if (step._tag === "Sleep") yield* Effect.sleep(step.duration)
        else yield* (step._tag === "Stdout" ? out : err).offer(toBytes(step.data))
      }
      const exit = fake.exit ?? 0
      if (exit === "never") return yield* Effect.never
      yield* finish(typeof exit === "number" ? { code: exit, signal: null } : { code: null, signal: exit.signal })
    })
    // Interruptible explicitly: the engine spawns uninterruptibly, and a fork inherits that.
    const fiber = yield* Effect.forkScoped(Effect.interruptible(run))
    const killWith = (signal: KillSignal) => Effect.zipRight(Fiber.interrupt(fiber), finish({ code: null, signal }))
    // Whatever closes the spawn's scope, the fake is gone afterwards, like a process whose tree was killed.
    yield* Effect.addFinalizer(() => killWith("SIGKILL"))
    const running: RunningProcess = {
      pid: nextFakePid++,
      output: drainStreams(Mailbox.toStream(out), Mailbox.toStream(err)),
      exit: Deferred.await(exited),
      kill: (signal) =>
        Effect.flatMap(Deferred.isDone(exited), (done) =>
          done || (signal === "SIGTERM" && fake.ignoreTerm === true) ? Effect.void : killWith(signal))
    }
    return running
  })

