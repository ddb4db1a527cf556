/** Topic "timeouts": a run past its timeout gets TERM, then KILL after the grace period, and exits 124. */
import { describe, expect } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as NativeRunner from "../NativeRunner.js"
import { expectBytes, utf8 } from "./bytes.js"
import type { SuiteContext } from "./context.js"

/** Timeout, grace and slack: by then a timed-out run must be over. */
const killBudget = <E>({ grace, slack, timeout }: SuiteContext<E>) => Duration.sum(Duration.sum(timeout, grace), slack)

const pastItsTimeout = <E>(ctx: SuiteContext<E>) =>
  ctx.test("timeouts")("a run past its timeout: exit 124, timedOut, SIGTERM, output kept, one audit", () =>
    Effect.gen(function*() {
      const { G, S, T, commands, grace, timeout } = ctx
      const result = yield* ctx.elapse(
        NativeRunner.exec({ argv: commands.hang("started\n", { ignoreTerm: false }), timeout, killGrace: grace }),
        killBudget(ctx)
      )
      expect(result).toMatchObject({ exitCode: 124, timedOut: true, signal: "SIGTERM" })
      expectBytes(result.stdout, utf8("started\n"))
      // It obeyed TERM, so it was gone within the grace period; `slack` only absorbs a loaded machine.
      expect(result.durationMs).toBeGreaterThanOrEqual(T)
      expect(result.durationMs).toBeLessThanOrEqual(T + G + S)
      const audits = yield* ctx.records
      expect(audits).toHaveLength(1)
      expect(audits[0]).toEqual(result.audits[0])
      expect(audits[0]).toMatchObject({ timedOut: true, exitCode: 124, signal: "SIGTERM", interrupted: false })
    }).pipe(Effect.provide(ctx.withAudit({}))))

const ignoringTerm = <E>(ctx: SuiteContext<E>) =>
  ctx.test("timeouts")("a child ignoring SIGTERM is killed with SIGKILL after the grace period", () =>
    Effect.gen(function*() {
      const { G, S, T, commands, grace, timeout } = ctx
      const result = yield* ctx.elapse(
        ctx.run({ argv: commands.hang("stubborn\n", { ignoreTerm: true }), timeout, killGrace: grace }),
        killBudget(ctx)
      )
      expect(result).toMatchObject({ exitCode: 124, timedOut: true, signal: "SIGKILL" })
      expectBytes(result.stdout, utf8("stubborn\n"))
      expect(result.durationMs).toBeGreaterThanOrEqual(T + G)
      expect(result.durationMs).toBeLessThanOrEqual(T + G + S)
    }))

const limitsTimeoutMs = <E>(ctx: SuiteContext<E>) =>
  ctx.test("timeouts")("limits.timeoutMs works like timeout, and timeout wins over it", () =>
    Effect.gen(function*() {
      const { G, S, T, commands, elapse, grace, run, timeout } = ctx
      const budget = killBudget(ctx)
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

const layerTimeout = <E>(ctx: SuiteContext<E>) =>
  ctx.test("timeouts")("the layer's timeout and grace apply when the input sets none", () =>
    Effect.gen(function*() {
      const { G, S, T, commands, grace, timeout } = ctx
      const result = yield* ctx.elapse(
        ctx.run({ argv: commands.hang("", { ignoreTerm: true }) }, { timeout, killGrace: grace }),
        killBudget(ctx)
      )
      expect(result).toMatchObject({ exitCode: 124, timedOut: true, signal: "SIGKILL" })
      expect(result.durationMs).toBeGreaterThanOrEqual(T + G)
      expect(result.durationMs).toBeLessThanOrEqual(T + G + S)
    }))

export const registerTimeouts = <E>(ctx: SuiteContext<E>): void => {
  describe("timeouts", () => {
    pastItsTimeout(ctx)
    ignoringTerm(ctx)
    limitsTimeoutMs(ctx)
    layerTimeout(ctx)
  })
}
