/**
 * What every topic of the behaviour suite shares: the fixture, its timings in milliseconds, the tester (live or on
 * the TestClock), a scratch directory with markers, and the helpers that run commands and wait on time.
 */
import { expect, it, type Vitest } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Audit from "../Audit.js"
import type { NativeRunnerError } from "../Errors.js"
import type { AuditRecord, ExecInput, ExecResult } from "../Exec.js"
import * as NativeRunner from "../NativeRunner.js"
import type { Argv, Capability, Commands, Fixture, PacedStep } from "./fixture.js"

/** The shared context each `register<Topic>` receives. */
export interface SuiteContext<E> {
  readonly fixture: Fixture<E>
  readonly commands: Commands
  readonly live: boolean
  readonly timeout: Duration.Duration
  readonly grace: Duration.Duration
  readonly slack: Duration.Duration
  readonly idle: Duration.Duration
  /** `timeout`, `grace`, `slack`, `idle` and `startup` (0 on a TestClock) in milliseconds. */
  readonly T: number
  readonly G: number
  readonly S: number
  readonly I: number
  readonly startup: number
  /**
   * The tester for a scenario group: skipped when the fixture declares the group unsupported, or when the scenario
   * `needs` the `paced` command and the fixture has none.
   */
  readonly test: (capability?: Capability | ReadonlyArray<Capability>, needs?: "paced") => Vitest.Test<never>
  /** The fixture's `paced` command (only in tests that declared they need it). */
  readonly paced: (steps: ReadonlyArray<PacedStep>) => Argv
  /** The suite's scratch directory (real path), holding an empty `sub` directory and an empty `file`. */
  readonly dir: () => string
  /** A fresh path in `dir` that nothing has created yet. */
  readonly marker: () => string
  readonly createDir: () => void
  readonly removeDir: () => void
  /** The fixture's layer with an in-memory audit (`records`). */
  readonly withAudit: (
    options: NativeRunner.Options
  ) => Layer.Layer<NativeRunner.NativeRunner | Audit.Audit | Audit.AuditMemory, E>
  /** `exec` on a fresh layer built with `options`. */
  readonly run: (input: ExecInput, options?: NativeRunner.Options) => Effect.Effect<ExecResult, NativeRunnerError | E>
  readonly records: Effect.Effect<ReadonlyArray<AuditRecord>, never, Audit.AuditMemory>
  /** Live: waits `startup`. TestClock: waits (in real time) until the run blocks on the clock, i.e. is up. */
  readonly started: Effect.Effect<void>
  /** Runs `effect`, which must be done once `budget` has passed (real time live, `TestClock.adjust` otherwise). */
  readonly elapse: <A, Err, R>(
    effect: Effect.Effect<A, Err, R>,
    budget: Duration.Duration
  ) => Effect.Effect<A, Err | Error, R>
  /** The run ended by itself: no timeout, no signal. */
  readonly ranInTime: (result: ExecResult) => void
}

/** Real time, on either clock: what a slow consumer or a poll waits. */
export const realDelay = (millis: number): Effect.Effect<void> =>
  Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, millis)))

const waitForClock: Effect.Effect<void> = Effect.gen(function*() {
  for (let polls = 0; polls < 5000; polls++) {
    if ((yield* TestClock.sleeps()).length > 0) return
    yield* realDelay(1)
  }
  return yield* Effect.dieMessage("the run never waited on the clock: was the process started?")
})

const stuck = (budget: Duration.Duration) =>
  `the run was still going after ${Duration.format(budget)}: timeout or kill is not enforced`

/**
 * Live: real time, plus a second of slack for the assertions to report instead of the test hanging. TestClock:
 * `TestClock.adjust` once the run has started.
 */
const makeElapse = (live: boolean, started: Effect.Effect<void>) =>
<A, Err, R>(effect: Effect.Effect<A, Err, R>, budget: Duration.Duration): Effect.Effect<A, Err | Error, R> =>
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
        yield* realDelay(1)
      }
      // Not awaited: stopping a run whose kill is broken could itself wait on the clock forever.
      yield* Fiber.interruptFork(fiber)
      return yield* Effect.fail(new Error(stuck(budget)))
    })

/** The scratch directory, created before the suite's tests and removed after them. */
const makeWorkDir = () => {
  let dir = ""
  let markers = 0
  return {
    dir: () => dir,
    marker: () => join(dir, `marker-${++markers}`),
    createDir: () => {
      dir = realpathSync(mkdtempSync(join(tmpdir(), "nr-suite-")))
      mkdirSync(join(dir, "sub"))
      writeFileSync(join(dir, "file"), "")
    },
    removeDir: () => rmSync(dir, { recursive: true, force: true })
  }
}

const millis = (duration: Duration.DurationInput) => Duration.toMillis(Duration.decode(duration))

/** Builds the context of one `runnerBehaviourSuite` call. */
export const makeContext = <E>(fixture: Fixture<E>): SuiteContext<E> => {
  const live = fixture.clock === "live"
  const { timing } = fixture
  const tester: Vitest.Tester<never> = live ? it.live : it.effect
  const startup = live ? millis(timing.startup) : 0
  const idle = timing.idle === undefined
    ? Duration.times(Duration.decode(timing.timeout), 0.75)
    : Duration.decode(timing.idle)
  const { paced } = fixture.commands
  const started = live ? Effect.sleep(startup) : waitForClock
  return {
    fixture,
    commands: fixture.commands,
    live,
    timeout: Duration.decode(timing.timeout),
    grace: Duration.decode(timing.killGrace),
    slack: Duration.decode(timing.slack),
    idle,
    T: millis(timing.timeout),
    G: millis(timing.killGrace),
    S: millis(timing.slack),
    I: Duration.toMillis(idle),
    startup,
    test: (capability, needs) =>
      [capability ?? []].flat().some((c) => (fixture.unsupported ?? []).includes(c)) ||
        (needs === "paced" && paced === undefined)
        ? tester.skip
        : tester,
    paced: (steps) => {
      if (paced === undefined) throw new Error("the fixture has no paced command: this test should have been skipped")
      return paced(steps)
    },
    ...makeWorkDir(),
    withAudit: (options) => fixture.layer(options).pipe(Layer.provideMerge(Audit.layerMemory)),
    run: (input, options = {}) => NativeRunner.exec(input).pipe(Effect.provide(fixture.layer(options))),
    records: Effect.flatMap(Audit.AuditMemory, (memory) => memory.records),
    started,
    elapse: makeElapse(live, started),
    ranInTime: (result) => {
      expect(result.timedOut).toBe(false)
      expect(result.signal).toBeUndefined()
    }
  }
}
