/**
 * The behaviour suite against `NativeRunnerTest.layerTest`: scripted processes on the TestClock, so 60-second
 * timeouts take no real time. Then what is specific to the fake: matching, `once`, the recorder, unscripted calls.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import { writeFile } from "node:fs/promises"
import { constants } from "node:os"
import * as NativeRunner from "../src/NativeRunner.js"
import * as NativeRunnerTest from "../src/NativeRunnerTest.js"
import { type Commands, runnerBehaviourSuite, SUITE_HOST_ENV } from "../src/testing.js"

const isSignal = (name: string): name is NodeJS.Signals => name in constants.signals
const fromBase64 = (text: string) => new Uint8Array(Buffer.from(text, "base64"))

/** Argvs of the fake's own little command set; `script` below answers them. */
const fakeCommands: Commands = {
  write: (chunks) => [
    "fake-write",
    ...chunks.map(([stream, bytes]) => `${stream}:${Buffer.from(bytes).toString("base64")}`)
  ],
  paced: (steps) => [
    "fake-paced",
    ...steps.map((step) =>
      step[0] === "sleep"
        ? `sleep:${Duration.toMillis(Duration.decode(step[1]))}`
        : `${step[0]}:${Buffer.from(step[1]).toString("base64")}`
    )
  ],
  zeros: (count) => ["fake-zeros", String(count)],
  cat: ["cat"],
  exit: (code) => ["fake-exit", String(code)],
  raise: (signal) => ["fake-raise", signal],
  hang: (before, { ignoreTerm }) => ["fake-hang", before, ignoreTerm ? "ignore-term" : "obey-term"],
  env: ["env", "-0"],
  pwd: ["pwd"],
  touch: (path) => ["touch", path]
}

const script: ReadonlyArray<NativeRunnerTest.Entry> = [
  NativeRunnerTest.prefix(["fake-write"], (call) => ({
    output: call.input.argv.slice(1).map((arg) => {
      const [stream = "", data = ""] = arg.split(":")
      return stream === "stderr" ? NativeRunnerTest.stderr(fromBase64(data)) : NativeRunnerTest.stdout(fromBase64(data))
    })
  })),
  NativeRunnerTest.prefix(["fake-paced"], (call) => ({
    output: call.input.argv.slice(1).map((arg) => {
      const [what = "", data = ""] = arg.split(":")
      return what === "sleep"
        ? NativeRunnerTest.sleep(Duration.millis(Number(data)))
        : what === "stderr"
        ? NativeRunnerTest.stderr(fromBase64(data))
        : NativeRunnerTest.stdout(fromBase64(data))
    })
  })),
  NativeRunnerTest.prefix(["fake-zeros"], (call) => {
    const count = Number(call.input.argv[1])
    const chunk = new Uint8Array(65536)
    const chunks = Array.from({ length: Math.ceil(count / chunk.length) }, (_, i) =>
      chunk.subarray(0, Math.min(chunk.length, count - i * chunk.length)))
    return { stdout: chunks }
  }),
  NativeRunnerTest.exact(["cat"], (call) => ({ stdout: call.input.stdin ?? new Uint8Array(0) })),
  NativeRunnerTest.prefix(["fake-exit"], (call) => ({ exit: Number(call.input.argv[1]) })),
  NativeRunnerTest.prefix(["fake-raise"], (call) => {
    const signal = call.input.argv[1] ?? ""
    return isSignal(signal) ? { exit: { signal } } : NativeRunnerTest.spawnFails("Unknown", `no such signal ${signal}`)
  }),
  NativeRunnerTest.prefix(["fake-hang"], (call) => ({
    stdout: call.input.argv[1] ?? "",
    exit: "never",
    ignoreTerm: call.input.argv[2] === "ignore-term"
  })),
  NativeRunnerTest.exact(["env", "-0"], (call) => ({
    stdout: Object.entries(call.command.env).map(([name, value]) => `${name}=${value}\u0000`).join("")
  })),
  NativeRunnerTest.exact(["pwd"], (call) => ({ stdout: `${call.command.cwd}\n` })),
  // A real side effect on purpose: the suite proves "nothing ran" by the absence of this file.
  NativeRunnerTest.prefix(["touch"], (call) => Effect.as(Effect.promise(() => writeFile(call.input.argv[1] ?? "", "")), {}))
]

const hostEnv = { ...NativeRunnerTest.DEFAULT_HOST_ENV, ...SUITE_HOST_ENV }

runnerBehaviourSuite("NativeRunnerTest.layerTest (scripted processes, TestClock)", {
  layer: (options) => NativeRunnerTest.layerTest(script, { ...options, hostEnv }),
  commands: fakeCommands,
  hostEnv,
  clock: "test",
  timing: { timeout: "60 seconds", killGrace: "2 seconds", slack: "0 millis", startup: "0 millis", idle: "10 seconds" }
})

describe("NativeRunnerTest specifics", () => {
  const utf8 = (bytes: Uint8Array) => new TextDecoder().decode(bytes)

  it.effect("entries are tried in order; exact, prefix and predicate matches; once entries are used up in order", () =>
    Effect.gen(function*() {
      const out = (argv: ReadonlyArray<string>) => Effect.map(NativeRunner.exec({ argv }), (r) => utf8(r.stdout))
      expect(yield* out(["git", "status"])).toBe("first")
      expect(yield* out(["git", "status"])).toBe("second")
      expect(yield* out(["git", "status"])).toBe("any git")
      expect(yield* out(["git", "log", "-1"])).toBe("any git")
      expect(yield* out(["ls", "-la"])).toBe("ls with 2 args")
      expect(yield* NativeRunnerTest.pending).toEqual([])
    }).pipe(Effect.provide(NativeRunnerTest.layerTest([
      NativeRunnerTest.exact(["git", "status"], { stdout: "first" }, { once: true }),
      NativeRunnerTest.exact(["git", "status"], { stdout: "second" }, { once: true }),
      NativeRunnerTest.prefix(["git"], { stdout: "any git" }),
      NativeRunnerTest.when("ls with 2 args", (call) => call.input.argv[0] === "ls" && call.input.argv.length === 2, {
        stdout: "ls with 2 args"
      })
    ]))))

  it.effect("pending lists once entries that were never called", () =>
    Effect.gen(function*() {
      yield* NativeRunner.exec({ argv: ["a"] })
      expect(yield* NativeRunnerTest.pending).toEqual(["exact [\"b\"] (once)"])
    }).pipe(Effect.provide(NativeRunnerTest.layerTest([
      NativeRunnerTest.exact(["a"], {}, { once: true }),
      NativeRunnerTest.exact(["b"], {}, { once: true })
    ]))))

  it.effect("an unscripted call dies with UnscriptedCall naming the argv and the script; it is still recorded", () =>
    Effect.gen(function*() {
      yield* NativeRunner.exec({ argv: ["git", "status"] })
      const exit = yield* Effect.exit(NativeRunner.exec({ argv: ["git", "status"] }))
      const defect = Exit.isFailure(exit) ? Cause.dieOption(exit.cause) : Option.none()
      expect(Option.isSome(defect) && defect.value instanceof NativeRunnerTest.UnscriptedCall).toBe(true)
      if (Option.isSome(defect) && defect.value instanceof NativeRunnerTest.UnscriptedCall) {
        expect(defect.value.argv).toEqual(["git", "status"])
        expect(defect.value.script).toEqual(["exact [\"git\",\"status\"] (once, used)", "prefix [\"npm\"]"])
        expect(defect.value.message).toContain("unscripted call [\"git\",\"status\"]")
      }
      expect((yield* NativeRunnerTest.calls).map((c) => c.input.argv)).toEqual([["git", "status"], ["git", "status"]])
    }).pipe(Effect.provide(NativeRunnerTest.layerTest([
      NativeRunnerTest.exact(["git", "status"], {}, { once: true }),
      NativeRunnerTest.prefix(["npm"], {})
    ]))))

  it.effect("records the decoded input and the prepared command (cwd resolved, env after the policy)", () =>
    Effect.gen(function*() {
      const stdin = new TextEncoder().encode("in")
      yield* NativeRunner.exec({ argv: ["tool", "--flag"], cwd: "work", env: { MINE: "1" }, stdin, timeout: "5 seconds" })
      const calls = yield* NativeRunnerTest.calls
      expect(calls).toHaveLength(1)
      expect(calls[0]?.input).toEqual({
        argv: ["tool", "--flag"],
        cwd: "work",
        env: { MINE: "1" },
        stdin,
        timeout: "5 seconds"
      })
      expect(calls[0]?.command).toEqual({
        argv: ["tool", "--flag"],
        cwd: "/virtual/work",
        env: { ...NativeRunnerTest.DEFAULT_HOST_ENV, FROM_LAYER: "x", MINE: "1" }
      })
    }).pipe(Effect.provide(NativeRunnerTest.layerTest([NativeRunnerTest.prefix(["tool"], {})], {
      cwd: "/virtual",
      checkCwd: false,
      env: { FROM_LAYER: "x" },
      hostEnv: { ...NativeRunnerTest.DEFAULT_HOST_ENV, GITHUB_TOKEN: "never-inherited" }
    }))))

  it.effect("scripted spawn failures are SpawnErrors with the given reason, as the live layer reports them", () =>
    Effect.gen(function*() {
      const notFound = yield* Effect.flip(NativeRunner.exec({ argv: ["nope"] }))
      expect(notFound).toMatchObject({
        _tag: "SpawnError",
        reason: "NotFound",
        command: "nope",
        message: "command not found: nope"
      })
      const denied = yield* Effect.flip(NativeRunner.exec({ argv: ["locked"] }))
      expect(denied).toMatchObject({ _tag: "SpawnError", reason: "PermissionDenied", message: "locked down" })
    }).pipe(Effect.provide(NativeRunnerTest.layerTest([
      NativeRunnerTest.exact(["nope"], NativeRunnerTest.spawnFails("NotFound")),
      NativeRunnerTest.exact(["locked"], NativeRunnerTest.spawnFails("PermissionDenied", "locked down"))
    ]))))

  it.effect("timed output follows the TestClock: a timeout cuts it where the clock is, in no real time", () =>
    Effect.gen(function*() {
      const realStart = Date.now()
      const fiber = yield* Effect.fork(NativeRunner.exec({ argv: ["slow"], timeout: "1 minute", killGrace: "5 seconds" }))
      yield* TestClock.adjust("2 minutes")
      const result = yield* Fiber.join(fiber)
      expect(utf8(result.stdout)).toBe("tick 0\ntick 1\n")
      expect(utf8(result.stderr)).toBe("warn\n")
      expect(result).toMatchObject({ exitCode: 124, timedOut: true, signal: "SIGTERM", durationMs: 60_000 })
      expect(Date.now() - realStart).toBeLessThan(2_000)
    }).pipe(Effect.provide(NativeRunnerTest.layerTest([
      NativeRunnerTest.exact(["slow"], {
        output: [
          NativeRunnerTest.stdout("tick 0\n"),
          NativeRunnerTest.sleep("30 seconds"),
          NativeRunnerTest.stderr("warn\n"),
          NativeRunnerTest.stdout("tick 1\n"),
          NativeRunnerTest.sleep("45 seconds"),
          NativeRunnerTest.stdout("tick 2\n")
        ]
      })
    ]))))

  it.effect("a response can compute from the call, e.g. stdin", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.exec({ argv: ["upper"], stdin: new TextEncoder().encode("shout") })
      expect(utf8(result.stdout)).toBe("SHOUT")
    }).pipe(Effect.provide(NativeRunnerTest.layerTest([
      NativeRunnerTest.exact(["upper"], (call) => ({ stdout: utf8(call.input.stdin ?? new Uint8Array()).toUpperCase() }))
    ]))))
})
