/**
 * The runner's contract, written once as a behaviour suite. Run it against a backend to prove the backend conforms:
 * the live layer runs it with real processes, the test layer with scripted ones, and a new backend (a sandbox, a
 * remote host) runs it with whatever commands express each scenario there. Published as `effect-native-runner/testing`;
 * needs `vitest` and `@effect/vitest`.
 *
 * @example
 * // test/behaviour.mine.test.ts
 * runnerBehaviourSuite("my backend", {
 *   layer: (options) => MyRunner.layer(options),
 *   commands: { cat: ["cat"], pwd: ["pwd"], env: ["env", "-0"], ... },
 *   hostEnv: process.env,
 *   clock: "live",
 *   timing: { timeout: "400 millis", killGrace: "300 millis", slack: "5 seconds", startup: "750 millis" }
 * })
 */
import { afterAll, beforeAll, describe, expect, it, type Vitest } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import { existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs"
import { constants, tmpdir } from "node:os"
import { join } from "node:path"
import * as Audit from "./Audit.js"
import type { ExecInput, ExecResult } from "./Exec.js"
import * as NativeRunner from "./NativeRunner.js"

/** A command line, program first. */
export type Argv = ReadonlyArray<string>

/** Which output stream a chunk goes to. */
export type StreamName = "stdout" | "stderr"

/**
 * How a backend expresses each scenario as a command. Each command must behave exactly as documented, byte for
 * byte; the suite checks what the runner makes of it.
 */
export interface Commands {
  /** Writes each chunk, in order, to its stream, then exits 0. Chunks stay small (a few KiB in all). */
  readonly write: (chunks: ReadonlyArray<readonly [StreamName, Uint8Array]>) => Argv
  /** Writes `count` zero bytes to stdout (far more than a pipe holds), then exits 0. */
  readonly zeros: (count: number) => Argv
  /** Copies stdin to stdout until EOF, then exits 0 (`cat`). */
  readonly cat: Argv
  /** Exits with `code` and writes nothing. */
  readonly exit: (code: number) => Argv
  /** Dies by `signal`, sent to itself. */
  readonly raise: (signal: NodeJS.Signals) => Argv
  /** Writes `before` to stdout, then runs until killed; with `ignoreTerm`, only SIGKILL ends it (SIGTERM does nothing). */
  readonly hang: (before: string, options: { readonly ignoreTerm: boolean }) => Argv
  /** Writes its whole environment as `NAME=value` records, each ended by a NUL byte (`env -0`). */
  readonly env: Argv
  /** Writes its working directory and a newline (`pwd`). */
  readonly pwd: Argv
  /** Creates an empty file at the absolute `path` (`touch`): the suite's proof that something ran. */
  readonly touch: (path: string) => Argv
}

/** Groups of scenarios a backend may declare unsupported; their tests are registered as skipped. */
export type Capability = "signals" | "timeouts" | "interruption" | "env" | "cwd"

/** Durations of the time-dependent scenarios. */
export interface Timing {
  /** Timeout of the timeout scenarios: small on real processes ("400 millis"), large on a TestClock ("60 seconds"). */
  readonly timeout: Duration.DurationInput
  /** Grace between SIGTERM and SIGKILL in those scenarios ("300 millis" live, "2 seconds" on the TestClock). */
  readonly killGrace: Duration.DurationInput
  /** Lateness tolerated on top of timeout and grace before a run counts as stuck ("5 seconds" live, 0 on a TestClock). */
  readonly slack: Duration.DurationInput
  /**
   * Real time a just-started process gets before it is interrupted ("750 millis"). Live only: on a TestClock the
   * suite waits until the run blocks on the clock instead.
   */
  readonly startup: Duration.DurationInput
}

/** A backend under test: how to build it and how it runs each scenario. */
export interface Fixture<E = never> {
  /** Builds the backend's runner with `options`; it must be able to run every command in `commands`. */
  readonly layer: (options: NativeRunner.Options) => Layer.Layer<NativeRunner.NativeRunner, E>
  readonly commands: Commands
  /** The host environment the backend's inherit policy reads; it must include `SUITE_HOST_ENV`. */
  readonly hostEnv: Readonly<Record<string, string | undefined>>
  /** "live": real time (`it.live`). "test": `it.effect`, where time moves only by `TestClock.adjust` (no real time). */
  readonly clock: "live" | "test"
  readonly timing: Timing
  /** Scenario groups this backend cannot run (default: none). */
  readonly unsupported?: ReadonlyArray<Capability> | undefined
}

/** Variables the backend's host environment must hold for the env scenarios: one plain, one secret-looking. */
export const SUITE_HOST_ENV: Readonly<Record<string, string>> = {
  NR_SUITE_EXTRA: "extra-from-host",
  NR_SUITE_API_TOKEN: "host-secret-value"
}

/** The variables "core" inherits, as documented on `NativeRunner.Options.inheritEnv`; spelled out as the contract. */
const CORE_ENV = ["PATH", "HOME", "LANG", "TERM", "TZ", "TMPDIR", "USER", "SHELL"] as const
const SECRET_LOOKING = /KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION/i

const encoder = new TextEncoder()
const utf8 = (text: string) => encoder.encode(text)
const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}
/** Deterministic bytes covering every byte value (NUL, invalid UTF-8, ...). */
const pattern = (length: number, seed = 0): Uint8Array => Uint8Array.from({ length }, (_, i) => (i * 7 + seed) % 256)

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

/** Byte-exact comparison that reports the lengths and the first difference instead of dumping two large arrays. */
const expectBytes = (actual: Uint8Array, expected: Uint8Array) => {
  const mismatch = actual.findIndex((b, i) => b !== expected[i])
  const firstDiff = mismatch === -1 && actual.length !== expected.length
    ? Math.min(actual.length, expected.length)
    : mismatch
  const window = (bytes: Uint8Array) => hex(bytes.subarray(Math.max(0, firstDiff - 8), Math.max(0, firstDiff) + 8))
  expect({ length: actual.length, firstDiff, around: window(actual) })
    .toEqual({ length: expected.length, firstDiff: -1, around: window(expected) })
}

const parseEnv = (bytes: Uint8Array): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const record of new TextDecoder().decode(bytes).split("\u0000")) {
    if (record === "") continue
    const eq = record.indexOf("=")
    env[record.slice(0, eq)] = record.slice(eq + 1)
  }
  return env
}

/** Hands exec data the type system cannot vouch for, as a JavaScript or JSON caller would: exec must decode it. */
const untrusted = (input: unknown): ExecInput => input as ExecInput

const signalNumber = (signal: NodeJS.Signals): number => constants.signals[signal]

/**
 * Registers the behaviour suite (one `describe` named `name`) for a backend. Every test builds the backend's layer
 * with the options it needs, runs commands through `NativeRunner.exec` and checks bytes, exit codes, signals,
 * timings, errors and audit records.
 */
export const runnerBehaviourSuite = <E>(name: string, fixture: Fixture<E>): void => {
  const { commands } = fixture
  const live = fixture.clock === "live"
  const timeout = Duration.decode(fixture.timing.timeout)
  const grace = Duration.decode(fixture.timing.killGrace)
  const slack = Duration.decode(fixture.timing.slack)
  const T = Duration.toMillis(timeout)
  const G = Duration.toMillis(grace)
  const S = Duration.toMillis(slack)
  const startup = live ? Duration.toMillis(Duration.decode(fixture.timing.startup)) : 0

  const tester: Vitest.Tester<never> = live ? it.live : it.effect
  const test = (capability?: Capability): Vitest.Test<never> =>
    capability !== undefined && (fixture.unsupported ?? []).includes(capability) ? tester.skip : tester

  let dir = ""
  let markers = 0
  const marker = () => join(dir, `marker-${++markers}`)

  const withAudit = (options: NativeRunner.Options) =>
    fixture.layer(options).pipe(Layer.provideMerge(Audit.layerMemory))
  const run = (input: ExecInput, options: NativeRunner.Options = {}) =>
    NativeRunner.exec(input).pipe(Effect.provide(fixture.layer(options)))
  const records = Effect.flatMap(Audit.AuditMemory, (memory) => memory.records)

  /** Live: nothing to do. TestClock: waits (in real time) until the run blocks on the clock, i.e. the process is up. */
  const started: Effect.Effect<void> = live
    ? Effect.sleep(startup)
    : Effect.gen(function*() {
      for (let polls = 0; polls < 5000; polls++) {
        if ((yield* TestClock.sleeps()).length > 0) return
        yield* Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 1)))
      }
      return yield* Effect.dieMessage("the run never waited on the clock: was the process started?")
    })

  const stuck = (budget: Duration.Duration) =>
    `the run was still going after ${Duration.format(budget)}: timeout or kill is not enforced`

  /**
   * Runs `effect`, which must be done once `budget` has passed: real time when live (plus a second of slack for the
   * assertions to report instead of the test hanging), `TestClock.adjust` once the run has started otherwise.
   */
  const elapse = <A, Err, R>(effect: Effect.Effect<A, Err, R>, budget: Duration.Duration) =>
    live
      ? effect.pipe(
        Effect.timeoutFail({
          duration: Duration.sum(budget, Duration.seconds(1)),
          onTimeout: () => new Error(stuck(budget))
        })
      )
      : Effect.gen(function*() {
        const fiber = yield* Effect.fork(effect)
        yield* started
        yield* TestClock.adjust(budget)
        // Nothing is left to wait for once the clock has moved: a run still going has missed its deadline.
        for (let polls = 0; polls < 1000; polls++) {
          const exit = yield* Fiber.poll(fiber)
          if (exit._tag === "Some") return yield* exit.value
          yield* Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 1)))
        }
        // Not awaited: stopping a run whose kill is broken could itself wait on the clock forever.
        yield* Fiber.interruptFork(fiber)
        return yield* Effect.fail(new Error(stuck(budget)))
      })

  const ranInTime = (result: ExecResult) => {
    expect(result.timedOut).toBe(false)
    expect(result.signal).toBeUndefined()
  }

  describe(name, () => {
    beforeAll(() => {
      dir = realpathSync(mkdtempSync(join(tmpdir(), "nr-suite-")))
      mkdirSync(join(dir, "sub"))
      writeFileSync(join(dir, "file"), "")
    })
    afterAll(() => rmSync(dir, { recursive: true, force: true }))

    describe("output", () => {
      test()("keeps stdout and stderr apart, byte-exact (every byte value, NUL, invalid UTF-8)", () =>
        Effect.gen(function*() {
          const out1 = pattern(256)
          const err1 = Uint8Array.of(0x80, 0x00, 0xc3, 0x28)
          const out2 = Uint8Array.of(0xff, 0xfe, 0x00, 0x0a)
          const result = yield* run({ argv: commands.write([["stdout", out1], ["stderr", err1], ["stdout", out2]]) })
          expectBytes(result.stdout, concat(out1, out2))
          expectBytes(result.stderr, err1)
          expect(result).toMatchObject({
            exitCode: 0,
            truncatedStdout: false,
            truncatedStderr: false,
            stdoutBytes: 260,
            stderrBytes: 4
          })
          ranInTime(result)
        }))

      test()("keeps the first maxStdoutBytes/maxStderrBytes bytes and counts the rest", () =>
        Effect.gen(function*() {
          const chunks = [pattern(1000, 1), pattern(1000, 2), pattern(1000, 3)]
          const result = yield* run({
            argv: commands.write([...chunks.map((c) => ["stdout", c] as const), ["stderr", utf8("eeeeeeeeee")]]),
            limits: { maxStdoutBytes: 1500, maxStderrBytes: 4 }
          })
          expectBytes(result.stdout, concat(...chunks).subarray(0, 1500))
          expectBytes(result.stderr, utf8("eeee"))
          expect(result).toMatchObject({
            exitCode: 0,
            truncatedStdout: true,
            truncatedStderr: true,
            stdoutBytes: 3000,
            stderrBytes: 10
          })
        }))

      test()("applies the layer's caps when the input sets none", () =>
        Effect.gen(function*() {
          const result = yield* run(
            { argv: commands.write([["stdout", utf8("0123456789")], ["stderr", utf8("abcdef")]]) },
            { maxStdoutBytes: 7, maxStderrBytes: 6 }
          )
          expectBytes(result.stdout, utf8("0123456"))
          expectBytes(result.stderr, utf8("abcdef"))
          expect(result).toMatchObject({ truncatedStdout: true, truncatedStderr: false, stdoutBytes: 10 })
        }))

      test()("output exactly at the cap is not truncated; one byte more is", () =>
        Effect.gen(function*() {
          const bytes = pattern(64, 5)
          const argv = commands.write([["stdout", bytes.subarray(0, 40)], ["stdout", bytes.subarray(40)]])
          const atCap = yield* run({ argv, limits: { maxStdoutBytes: 64 } })
          expectBytes(atCap.stdout, bytes)
          expect(atCap).toMatchObject({ truncatedStdout: false, stdoutBytes: 64 })
          const below = yield* run({ argv, limits: { maxStdoutBytes: 63 } })
          expectBytes(below.stdout, bytes.subarray(0, 63))
          expect(below).toMatchObject({ truncatedStdout: true, stdoutBytes: 64 })
        }))

      test()("a cap of 0 keeps nothing but counts everything", () =>
        Effect.gen(function*() {
          const result = yield* run({
            argv: commands.write([["stdout", utf8("hello")], ["stderr", utf8("oops")]]),
            limits: { maxStdoutBytes: 0, maxStderrBytes: 0 }
          })
          expect(result.stdout.length).toBe(0)
          expect(result.stderr.length).toBe(0)
          expect(result).toMatchObject({ truncatedStdout: true, truncatedStderr: true, stdoutBytes: 5, stderrBytes: 4 })
        }))

      test()("drains a child that writes far more than the cap (and than a pipe holds) to the end", () =>
        Effect.gen(function*() {
          const result = yield* run({ argv: commands.zeros(1_000_000), limits: { maxStdoutBytes: 1024 } })
          expectBytes(result.stdout, new Uint8Array(1024))
          expect(result).toMatchObject({ exitCode: 0, truncatedStdout: true, stdoutBytes: 1_000_000 })
          ranInTime(result)
        }))
    })

    describe("stdin", () => {
      test()("is delivered byte-exact", () =>
        Effect.gen(function*() {
          const stdin = pattern(4096, 11)
          const result = yield* run({ argv: commands.cat, stdin })
          expectBytes(result.stdout, stdin)
          expect(result).toMatchObject({ exitCode: 0, stdoutBytes: 4096 })
        }))

      test()("absent or empty, the child sees EOF at once", () =>
        Effect.gen(function*() {
          const none = yield* run({ argv: commands.cat, timeout: "30 seconds" })
          const empty = yield* run({ argv: commands.cat, stdin: new Uint8Array(0), timeout: "30 seconds" })
          for (const result of [none, empty]) {
            expect(result.stdout.length).toBe(0)
            expect(result.exitCode).toBe(0)
            ranInTime(result)
          }
        }))

      test()("larger than a pipe buffer flows through while output is capped", () =>
        Effect.gen(function*() {
          const stdin = pattern(300_000, 3)
          const result = yield* run({ argv: commands.cat, stdin, limits: { maxStdoutBytes: 1000 } })
          expectBytes(result.stdout, stdin.subarray(0, 1000))
          expect(result).toMatchObject({ exitCode: 0, truncatedStdout: true, stdoutBytes: 300_000 })
        }))
    })

    describe("exit codes", () => {
      for (const code of [0, 1, 2, 42, 255]) {
        test()(`reports exit code ${code} as data, not as an error`, () =>
          Effect.gen(function*() {
            const result = yield* run({ argv: commands.exit(code) })
            expect(result.exitCode).toBe(code)
            expect(result.stdout.length + result.stderr.length).toBe(0)
            ranInTime(result)
          }))
      }
    })

    describe("signals", () => {
      for (const signal of ["SIGUSR1", "SIGKILL"] as const) {
        test("signals")(`a child killed by ${signal} exits 128+n with the signal's name`, () =>
          Effect.gen(function*() {
            const result = yield* run({ argv: commands.raise(signal) })
            expect(result).toMatchObject({ exitCode: 128 + signalNumber(signal), signal, timedOut: false })
          }))
      }
    })

    describe("timeouts", () => {
      test("timeouts")("a run past its timeout: exit 124, timedOut, SIGTERM, output kept, one audit", () =>
        Effect.gen(function*() {
          const result = yield* elapse(
            NativeRunner.exec({ argv: commands.hang("started\n", { ignoreTerm: false }), timeout, killGrace: grace }),
            Duration.sum(Duration.sum(timeout, grace), slack)
          )
          expect(result).toMatchObject({ exitCode: 124, timedOut: true, signal: "SIGTERM" })
          expectBytes(result.stdout, utf8("started\n"))
          // It obeyed TERM, so it was gone within the grace period; `slack` only absorbs a loaded machine.
          expect(result.durationMs).toBeGreaterThanOrEqual(T)
          expect(result.durationMs).toBeLessThanOrEqual(T + G + S)
          const audits = yield* records
          expect(audits).toHaveLength(1)
          expect(audits[0]).toEqual(result.audits[0])
          expect(audits[0]).toMatchObject({ timedOut: true, exitCode: 124, signal: "SIGTERM", interrupted: false })
        }).pipe(Effect.provide(withAudit({}))))

      test("timeouts")("a child ignoring SIGTERM is killed with SIGKILL after the grace period", () =>
        Effect.gen(function*() {
          const result = yield* elapse(
            run({ argv: commands.hang("stubborn\n", { ignoreTerm: true }), timeout, killGrace: grace }),
            Duration.sum(Duration.sum(timeout, grace), slack)
          )
          expect(result).toMatchObject({ exitCode: 124, timedOut: true, signal: "SIGKILL" })
          expectBytes(result.stdout, utf8("stubborn\n"))
          expect(result.durationMs).toBeGreaterThanOrEqual(T + G)
          expect(result.durationMs).toBeLessThanOrEqual(T + G + S)
        }))

      test("timeouts")("limits.timeoutMs works like timeout, and timeout wins over it", () =>
        Effect.gen(function*() {
          const budget = Duration.sum(Duration.sum(timeout, grace), slack)
          const argv = commands.hang("", { ignoreTerm: false })
          const byLimits = yield* elapse(run({ argv, limits: { timeoutMs: T }, killGrace: grace }), budget)
          expect(byLimits).toMatchObject({ exitCode: 124, timedOut: true })
          expect(byLimits.durationMs).toBeLessThanOrEqual(T + G + S)
          const both = yield* elapse(
            run({ argv, timeout, limits: { timeoutMs: 2_000_000_000 }, killGrace: grace }),
            budget
          )
          expect(both).toMatchObject({ exitCode: 124, timedOut: true })
          expect(both.durationMs).toBeLessThanOrEqual(T + G + S)
        }))

      test("timeouts")("the layer's timeout and grace apply when the input sets none", () =>
        Effect.gen(function*() {
          const result = yield* elapse(
            run({ argv: commands.hang("", { ignoreTerm: true }) }, { timeout, killGrace: grace }),
            Duration.sum(Duration.sum(timeout, grace), slack)
          )
          expect(result).toMatchObject({ exitCode: 124, timedOut: true, signal: "SIGKILL" })
          expect(result.durationMs).toBeGreaterThanOrEqual(T + G)
          expect(result.durationMs).toBeLessThanOrEqual(T + G + S)
        }))
    })

    describe("interruption", () => {
      for (const ignoreTerm of [false, true]) {
        const signal = ignoreTerm ? "SIGKILL" : "SIGTERM"
        test("interruption")(
          `interrupting the caller kills the process (${signal}${ignoreTerm ? " after the grace period" : ""}), ` +
            "audited as interrupted",
          () =>
            Effect.gen(function*() {
              const fiber = yield* Effect.fork(
                NativeRunner.exec({ argv: commands.hang("x", { ignoreTerm }), timeout: "1 hour", killGrace: grace })
              )
              yield* started
              const before = yield* Clock.currentTimeMillis
              const exit = yield* elapse(Fiber.interrupt(fiber), Duration.sum(grace, slack))
              const after = yield* Clock.currentTimeMillis
              expect(Exit.isInterrupted(exit)).toBe(true)
              const audits = yield* records
              expect(audits).toHaveLength(1)
              expect(audits[0]).toMatchObject({
                interrupted: true,
                timedOut: false,
                signal,
                exitCode: 128 + signalNumber(signal)
              })
              const duration = audits[0]?.durationMs ?? -1
              expect(duration).toBeLessThanOrEqual(startup + G + S)
              // How long interrupting took: wall time when live; on the TestClock the run started and was interrupted
              // at instant 0, so its audited duration is that time, exactly. (Live: 1 ms for timer rounding.)
              const killTime = live ? after - before : duration
              if (ignoreTerm) expect(killTime).toBeGreaterThanOrEqual(live ? G - 1 : G)
              // Interruption returns only once the process is dead, within the grace period (plus slack).
              expect(killTime).toBeLessThanOrEqual(G + S)
            }).pipe(Effect.provide(withAudit({})))
        )
      }
    })

    describe("environment", () => {
      const hostValue = (name: string) => fixture.hostEnv[name]
      const requireHostEnv = () => {
        for (const [key, value] of Object.entries(SUITE_HOST_ENV)) {
          const message = "the fixture's host env must include SUITE_HOST_ENV"
          expect({ [key]: hostValue(key) }, message).toEqual({ [key]: value })
        }
      }

      test("env")("\"core\" (the default) inherits only the core variables, never secrets; explicit env wins", () =>
        Effect.gen(function*() {
          requireHostEnv()
          const result = yield* run(
            { argv: commands.env, env: { NR_BOTH: "input", NR_INPUT: "input", NR_INPUT_TOKEN: "explicit" } },
            { env: { NR_LAYER: "layer", NR_BOTH: "layer" } }
          )
          const expected: Record<string, string> = {}
          for (const name of CORE_ENV) {
            const value = hostValue(name)
            if (value !== undefined) expected[name] = value
          }
          Object.assign(expected, { NR_LAYER: "layer", NR_BOTH: "input", NR_INPUT: "input", NR_INPUT_TOKEN: "explicit" })
          expect(parseEnv(result.stdout)).toEqual(expected)
        }))

      test("env")("\"all\" inherits the host env except secret-looking names", () =>
        Effect.gen(function*() {
          requireHostEnv()
          const result = yield* run({ argv: commands.env, env: { NR_INPUT: "input" } }, { inheritEnv: "all" })
          const child = parseEnv(result.stdout)
          expect(child["NR_SUITE_EXTRA"]).toBe(SUITE_HOST_ENV["NR_SUITE_EXTRA"])
          expect(child["PATH"]).toBe(hostValue("PATH"))
          expect(child["NR_INPUT"]).toBe("input")
          expect(Object.keys(child).filter((n) => SECRET_LOOKING.test(n))).toEqual([])
          // Nothing invented: every variable is the host's (same value) or the explicit one.
          for (const [key, value] of Object.entries(child)) {
            if (key !== "NR_INPUT") expect({ [key]: value }).toEqual({ [key]: hostValue(key) })
          }
        }))

      test("env")("\"none\" passes only the explicit variables", () =>
        Effect.gen(function*() {
          const path = hostValue("PATH") ?? "/usr/bin:/bin"
          const result = yield* run({ argv: commands.env, env: { NR_INPUT: "input" } }, {
            inheritEnv: "none",
            env: { PATH: path }
          })
          expect(parseEnv(result.stdout)).toEqual({ PATH: path, NR_INPUT: "input" })
        }))
    })

    describe("cwd", () => {
      test("cwd")("runs in the layer's cwd by default; a relative input cwd resolves against it", () =>
        Effect.gen(function*() {
          const atDefault = yield* run({ argv: commands.pwd }, { cwd: dir })
          expectBytes(atDefault.stdout, utf8(`${dir}\n`))
          const relative = yield* run({ argv: commands.pwd, cwd: "sub" }, { cwd: dir })
          expectBytes(relative.stdout, utf8(`${join(dir, "sub")}\n`))
          const absolute = yield* run({ argv: commands.pwd, cwd: dir }, { cwd: join(dir, "sub") })
          expectBytes(absolute.stdout, utf8(`${dir}\n`))
          expect(absolute.audits[0]?.cwd).toBe(dir)
        }))

      test("cwd")("a missing cwd fails with SpawnError CwdNotFound and runs nothing", () =>
        Effect.gen(function*() {
          const touched = marker()
          const missing = join(dir, "missing")
          const error = yield* Effect.flip(run({ argv: commands.touch(touched), cwd: missing }))
          expect(error).toMatchObject({ _tag: "SpawnError", reason: "CwdNotFound", cwd: missing })
          expect(existsSync(touched)).toBe(false)
        }))

      test("cwd")("a cwd that is a file fails with SpawnError CwdNotDirectory and runs nothing", () =>
        Effect.gen(function*() {
          const touched = marker()
          const file = join(dir, "file")
          const error = yield* Effect.flip(run({ argv: commands.touch(touched), cwd: file }))
          expect(error).toMatchObject({ _tag: "SpawnError", reason: "CwdNotDirectory", cwd: file })
          expect(existsSync(touched)).toBe(false)
        }))
    })

    describe("invalid input", () => {
      test()("the touch command works (so the checks below can fail)", () =>
        Effect.gen(function*() {
          const touched = marker()
          const result = yield* run({ argv: commands.touch(touched) })
          expect(result.exitCode).toBe(0)
          expect(existsSync(touched)).toBe(true)
        }))

      const cases: ReadonlyArray<readonly [string, (argv: Argv) => unknown]> = [
        ["an empty argv", () => ({ argv: [] })],
        ["an empty program", (argv) => ({ argv: ["", ...argv] })],
        ["a NUL byte in an argument", (argv) => ({ argv: [...argv, "a\u0000b"] })],
        ["a negative timeoutMs", (argv) => ({ argv, limits: { timeoutMs: -1 } })],
        ["a fractional byte cap", (argv) => ({ argv, limits: { maxStdoutBytes: 1.5 } })],
        ["an env name with '='", (argv) => ({ argv, env: { "A=B": "x" } })],
        ["an unknown property", (argv) => ({ argv, shell: true })],
        ["stdin that is not bytes", (argv) => ({ argv, stdin: "text" })],
        ["a timeout that is not a duration", (argv) => ({ argv, timeout: "soon" })],
        ["an empty cwd", (argv) => ({ argv, cwd: "" })],
        ["not an object at all", (argv) => argv.join(" ")]
      ]
      for (const [what, make] of cases) {
        test()(`${what} fails with InvalidInput; nothing runs, nothing is audited`, () =>
          Effect.gen(function*() {
            const touched = marker()
            const error = yield* Effect.flip(NativeRunner.exec(untrusted(make(commands.touch(touched)))))
            expect(error._tag).toBe("InvalidInput")
            if (error._tag === "InvalidInput") expect(error.issues.length).toBeGreaterThan(0)
            expect(existsSync(touched)).toBe(false)
            expect(yield* records).toEqual([])
          }).pipe(Effect.provide(withAudit({}))))
      }
    })

    describe("audit", () => {
      test()("one record per exec, equal to result.audits[0]; no env values and no output in it", () =>
        Effect.gen(function*() {
          const output = utf8("audit-output-7f3a")
          const argv = commands.write([["stdout", output]])
          const first = yield* NativeRunner.exec({
            argv,
            env: { NR_INPUT_VALUE: "input-value-9c2e" }
          })
          const second = yield* NativeRunner.exec({ argv: commands.exit(3) })
          const audits = yield* records
          expect(audits).toHaveLength(2)
          expect(audits[0]).toEqual(first.audits[0])
          expect(audits[1]).toEqual(second.audits[0])
          expect(first.audits).toHaveLength(1)
          expect(audits[0]?.runId).not.toBe(audits[1]?.runId)
          expect(audits[0]).toMatchObject({
            kind: "native.exec",
            cmd: argv[0],
            argv: [...argv],
            cwd: dir,
            exitCode: 0,
            timedOut: false,
            interrupted: false,
            stdoutBytes: output.length,
            stderrBytes: 0,
            truncatedStdout: false,
            truncatedStderr: false
          })
          expect(audits[1]).toMatchObject({ exitCode: 3, cmd: commands.exit(3)[0] })
          const serialized = JSON.stringify(audits)
          for (const secret of ["layer-value-4d1b", "input-value-9c2e", "audit-output-7f3a", "host-secret-value"]) {
            expect(serialized).not.toContain(secret)
          }
          for (const record of audits) expect(Object.keys(record)).not.toContain("env")
        }).pipe(Effect.provide(withAudit({ cwd: dir, env: { NR_LAYER_VALUE: "layer-value-4d1b" } }))))

      test()("an exec that could not start is audited too: spawnError set, exit 126, nothing ran", () =>
        Effect.gen(function*() {
          const touched = marker()
          const missing = join(dir, "missing")
          const argv = commands.touch(touched)
          const error = yield* Effect.flip(NativeRunner.exec({ argv, cwd: missing }))
          expect(error).toMatchObject({ _tag: "SpawnError", reason: "CwdNotFound" })
          expect(yield* records).toEqual([expect.objectContaining({
            kind: "native.exec",
            cmd: argv[0],
            argv: [...argv],
            cwd: missing,
            exitCode: 126,
            spawnError: "CwdNotFound",
            stdoutBytes: 0,
            timedOut: false,
            interrupted: false
          })])
          expect(existsSync(touched)).toBe(false)
        }).pipe(Effect.provide(withAudit({ cwd: dir }))))
    })
  })
}
