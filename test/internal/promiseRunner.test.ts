/** The Promise bridge cleans up: on the host's signals, and on `dispose`, nothing it started is left running. */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import { randomInt } from "node:crypto"
import * as path from "node:path"
import * as Errors from "../../src/Errors.js"
import * as NativeRunner from "../../src/NativeRunner.js"
import { hostProcesses, waitUntil } from "../helpers/escape.js"

const host = path.join(import.meta.dirname, "..", "fixtures", "promise-host.ts")

/** Starts the fixture app with tsx; resolves once it printed "ready" (its command is running by then). */
const startHost = (marker: string, mode: "cleanup" | "helper-only" | "direct" | "raw", setsid = false) =>
  Effect.async<{ readonly pid: number; readonly exited: Promise<NodeJS.Signals | number | null> }>((resume) => {
    const child = spawn(process.execPath, ["--import", "tsx", host, marker, mode, ...(setsid ? ["setsid"] : [])], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    const exited = new Promise<NodeJS.Signals | number | null>((done) => child.once("exit", (code, signal) => done(signal ?? code)))
    child.stdout.on("data", (chunk: Buffer) => {
      if (chunk.toString().includes("ready") && child.pid !== undefined) resume(Effect.succeed({ pid: child.pid, exited }))
    })
  })

/** A unique number of seconds to sleep, which marks the command on the host. */
const newMarker = () => `1000.${randomInt(1e9)}`

/** The `sleep` commands carrying `marker` (the app's own command line carries it too). */
const running = (marker: string) =>
  hostProcesses().filter((p) => p.argv[0] === "sleep" && p.argv[1] === marker).map((p) => p.pid)

describe("toPromiseRunner cleanup", () => {
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    it.live(`a ${signal} to a plain Node app kills the command it started, and the app dies of the signal`, () =>
      Effect.gen(function*() {
        const marker = newMarker()
        const app = yield* startHost(marker, "cleanup")
        expect(running(marker).length).toBe(1)
        process.kill(app.pid, signal)
        expect(yield* Effect.promise(() => app.exited)).toBe(signal)
        expect(yield* waitUntil(() => running(marker).length === 0, 5_000)).toBe(true)
      }), 30_000)
  }

  it.live("a SIGKILLed app, which no handler can clean up after, leaves nothing: the spawn helper kills the command", () =>
    Effect.gen(function*() {
      const marker = newMarker()
      const app = yield* startHost(marker, "helper-only")
      expect(running(marker).length).toBe(1)
      process.kill(app.pid, "SIGKILL")
      expect(yield* Effect.promise(() => app.exited)).toBe("SIGKILL")
      expect(yield* waitUntil(() => running(marker).length === 0, 5_000)).toBe(true)
    }), 30_000)

  it.live.runIf(process.getuid?.() === 0)(
    "a SIGKILLed app on the spawn helper: within a second nothing of the run lives, a setsid grandchild included",
    () =>
      Effect.gen(function*() {
        const marker = newMarker()
        const app = yield* startHost(marker, "helper-only", true)
        // Both sleeps exec'd: the setsid one has left the process group by then.
        expect(yield* waitUntil(() => running(marker).length === 2, 5_000), "both sleeps started").toBe(true)
        process.kill(app.pid, "SIGKILL")
        const killed = Date.now()
        expect(yield* Effect.promise(() => app.exited)).toBe("SIGKILL")
        // The helper, seeing its host go, kills the run's whole cgroup (a group kill misses the setsid one).
        expect(yield* waitUntil(() => running(marker).length === 0, 1_000), `left: ${running(marker).join(" ")}`).toBe(true)
        expect(Date.now() - killed).toBeLessThan(1_500)
      }), 30_000)

  it.live("a SIGKILLed app spawning directly (spawnHelper off) leaves nothing: the parent-death signal kills the command", () =>
    Effect.gen(function*() {
      const marker = newMarker()
      const app = yield* startHost(marker, "direct")
      expect(running(marker).length).toBe(1)
      process.kill(app.pid, "SIGKILL")
      expect(yield* Effect.promise(() => app.exited)).toBe("SIGKILL")
      expect(yield* waitUntil(() => running(marker).length === 0, 5_000)).toBe(true)
    }), 30_000)

  it.live("a command started with plain child_process.spawn outlives the app (the control)", () =>
    Effect.gen(function*() {
      const marker = newMarker()
      const app = yield* startHost(marker, "raw")
      process.kill(app.pid, "SIGKILL")
      expect(yield* Effect.promise(() => app.exited)).toBe("SIGKILL")
      const left = running(marker)
      expect(left.length).toBe(1)
      for (const pid of left) process.kill(pid, "SIGKILL")
    }), 30_000)

  it.live("dispose interrupts execs in flight and resolves once their trees are gone", () =>
    Effect.gen(function*() {
      const marker = newMarker()
      const runner = NativeRunner.toPromiseRunner(NativeRunner.layerNode(), { cleanup: false })
      // Settled handlers attached at once: the rejection comes during dispose.
      const settledPromise = runner.exec({ argv: ["sh", "-c", `sleep ${marker}; :`] }).then(() => "resolved", () => "rejected")
      expect(yield* waitUntil(() => running(marker).length === 1, 5_000)).toBe(true)
      yield* Effect.promise(() => runner.dispose())
      // Resolved only after the tree was killed: nothing to wait for.
      expect(running(marker)).toEqual([])
      const settled = yield* Effect.promise(() => settledPromise)
      expect(settled).toBe("rejected")
      const after = yield* Effect.promise(() => runner.exec({ argv: ["true"] }).then(() => "ran", () => "refused"))
      expect(after).toBe("refused")
    }), 30_000)
})

describe("toPromiseRunner exec", () => {
  it.live("takes the Effect API's whole input: Duration strings, keep, idleTimeout (typed, and used at run time)", () =>
    Effect.gen(function*() {
      const runner = NativeRunner.toPromiseRunner(NativeRunner.layerNode(), { cleanup: false })
      const input: NativeRunner.PromiseExecInput = {
        argv: ["sh", "-c", "printf 0123456789; sleep 5"],
        timeout: "300 millis",
        killGrace: "100 millis",
        keep: "tail",
        limits: { maxStdoutBytes: 4 }
      }
      const result = yield* Effect.promise(() => runner.exec(input).finally(() => runner.dispose()))
      expect([result.exitCode, result.timedOut, new TextDecoder().decode(result.stdout)]).toStrictEqual([124, true, "6789"])
    }), 30_000)

  it.live("exec(input, { signal }): aborting kills the tree, then rejects with ExecInterrupted Aborted; an aborted signal spawns nothing", () =>
    Effect.gen(function*() {
      const marker = newMarker()
      const runner = NativeRunner.toPromiseRunner(NativeRunner.layerNode(), { cleanup: false })
      yield* Effect.addFinalizer(() => Effect.promise(() => runner.dispose()))
      const controller = new AbortController()
      const pending = runner.exec({ argv: ["sleep", marker] }, { signal: controller.signal }).then(
        () => "resolved",
        (error: unknown) => error
      )
      expect(yield* waitUntil(() => running(marker).length === 1, 5_000)).toBe(true)
      controller.abort()
      const error = yield* Effect.promise(() => pending)
      expect(error).toBeInstanceOf(Errors.ExecInterrupted)
      expect(error).toMatchObject({ _tag: "ExecInterrupted", reason: "Aborted" })
      // Rejected only once the tree was gone.
      expect(running(marker)).toStrictEqual([])
      const again = yield* Effect.promise(() => runner.exec({ argv: ["sleep", marker] }, { signal: controller.signal }).catch((e: unknown) => e))
      expect(again).toMatchObject({ _tag: "ExecInterrupted", reason: "Aborted" })
      expect(running(marker)).toStrictEqual([])
    }).pipe(Effect.scoped), 30_000)

  it.live("dispose() with a run in flight, and an exec after it: both reject with ExecInterrupted Disposed", () =>
    Effect.gen(function*() {
      const marker = newMarker()
      const runner = NativeRunner.toPromiseRunner(NativeRunner.layerNode(), { cleanup: false })
      const pending = runner.exec({ argv: ["sleep", marker] }).catch((error: unknown) => error)
      expect(yield* waitUntil(() => running(marker).length === 1, 5_000)).toBe(true)
      yield* Effect.promise(() => runner.dispose())
      expect(yield* Effect.promise(() => pending)).toMatchObject({ _tag: "ExecInterrupted", reason: "Disposed" })
      expect(running(marker)).toStrictEqual([])
      const after = yield* Effect.promise(() => runner.exec({ argv: ["true"] }).catch((error: unknown) => error))
      expect(after).toBeInstanceOf(Errors.ExecInterrupted)
      expect(after).toMatchObject({ reason: "Disposed" })
    }), 30_000)
})
