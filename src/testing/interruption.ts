/** Topic "interruption": interrupting the caller kills the process tree before it returns, and audits it. */
import { describe, expect } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as NativeRunner from "../NativeRunner.js"
import type { SuiteContext } from "./context.js"
import { signalNumber } from "./signals.js"

const interruptingKills = <E>(ctx: SuiteContext<E>, ignoreTerm: boolean) => {
  const signal = ignoreTerm ? "SIGKILL" : "SIGTERM"
  return ctx.test("interruption")(
    `interrupting the caller kills the process (${signal}${ignoreTerm ? " after the grace period" : ""}), ` +
      "audited as interrupted",
    () =>
      Effect.gen(function*() {
        const { G, S, commands, grace, live, startup } = ctx
        const fiber = yield* Effect.fork(
          NativeRunner.exec({ argv: commands.hang("x", { ignoreTerm }), timeout: "1 hour", killGrace: grace })
        )
        yield* ctx.started
        const before = yield* Clock.currentTimeMillis
        const exit = yield* ctx.elapse(Fiber.interrupt(fiber), Duration.sum(grace, ctx.slack))
        const after = yield* Clock.currentTimeMillis
        expect(Exit.isInterrupted(exit)).toBe(true)
        const audits = yield* ctx.records
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
      }).pipe(Effect.provide(ctx.withAudit({})))
  )
}

export const registerInterruption = <E>(ctx: SuiteContext<E>): void => {
  describe("interruption", () => {
    for (const ignoreTerm of [false, true]) interruptingKills(ctx, ignoreTerm)
  })
}
