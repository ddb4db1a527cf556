/**
 * Topic "idle timeout": no output on either stream for `idleTimeout` stops the run like the timeout (TERM, grace,
 * KILL, exit 124), and the result says which timeout fired (`timeoutKind`).
 */
import { describe, expect } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { ExecResult } from "../Exec.js"
import * as NativeRunner from "../NativeRunner.js"
import { expectBytes, utf8 } from "./bytes.js"
import type { SuiteContext } from "./context.js"
import type { PacedStep } from "./fixture.js"

/** `count` writes of `bytes` to `stream`, each after a pause of `gap`. */
const every = (gap: Duration.DurationInput, count: number, stream: "stdout" | "stderr", bytes: Uint8Array) =>
  Array.from({ length: count }, (): ReadonlyArray<PacedStep> => [["sleep", gap], [stream, bytes]]).flat()

const expectTimeoutKind = (result: ExecResult, kind: "idle" | "wall" | undefined) => {
  for (const record of [result, result.audits[0]]) {
    if (kind === undefined) expect(Object.keys(record ?? {})).not.toContain("timeoutKind")
    else expect(record).toMatchObject({ timedOut: true, exitCode: 124, timeoutKind: kind })
  }
}

/**
 * Output every quarter of `idle` for one `idle`, then silence: with an idle timeout of twice `idle`, the run must
 * stop at 3 x idle at the earliest (measured from the last output, not from the start), and within the grace after.
 */
const quietRun = <E>(ctx: SuiteContext<E>) =>
  ctx.test("idle", "paced")(
    "output, then silence: the idle timeout stops the run (124, timeoutKind \"idle\"), output kept",
    () =>
      Effect.gen(function*() {
        const { G, I, S, idle } = ctx
        const argv = ctx.paced([
          ["stdout", utf8("0")],
          ...every(Duration.times(idle, 0.25), 4, "stdout", utf8("+")),
          ["sleep", Duration.times(idle, 100)]
        ])
        const result = yield* ctx.elapse(
          NativeRunner.exec({ argv, idleTimeout: Duration.times(idle, 2), timeout: "1 hour", killGrace: ctx.grace }),
          Duration.millis(3 * I + G + S)
        )
        expect(result).toMatchObject({ signal: "SIGTERM" })
        expectTimeoutKind(result, "idle")
        expectBytes(result.stdout, utf8("0++++"))
        expect(result.durationMs).toBeGreaterThanOrEqual(3 * I)
        expect(result.durationMs).toBeLessThanOrEqual(3 * I + G + S)
        expect(yield* ctx.records).toEqual(result.audits)
      }).pipe(Effect.provide(ctx.withAudit({})))
  )

/** Only stderr keeps the run alive here: stdout is silent after its first byte, far longer than the idle timeout. */
const busyRun = <E>(ctx: SuiteContext<E>) =>
  ctx.test("idle", "paced")(
    "output on either stream faster than the idle timeout keeps a run going; the wall timeout stops it (\"wall\")",
    () =>
      Effect.gen(function*() {
        const { G, I, S, idle } = ctx
        const argv = ctx.paced([["stdout", utf8("o")], ...every(Duration.times(idle, 0.25), 48, "stderr", utf8("e"))])
        const result = yield* ctx.elapse(
          ctx.run({ argv, idleTimeout: Duration.times(idle, 2), timeout: Duration.times(idle, 4), killGrace: ctx.grace }),
          Duration.millis(4 * I + G + S)
        )
        expectTimeoutKind(result, "wall")
        expectBytes(result.stdout, utf8("o"))
        // Live, the count depends on how fast `sleep` runs; the stream itself must be all "e".
        expect(result.stderr.length).toBeGreaterThanOrEqual(4)
        expectBytes(result.stderr, new Uint8Array(result.stderr.length).fill(utf8("e")[0] ?? 0))
        expect(result.durationMs).toBeGreaterThanOrEqual(4 * I)
        expect(result.durationMs).toBeLessThanOrEqual(4 * I + G + S)
      }))

const layerIdle = <E>(ctx: SuiteContext<E>) =>
  ctx.test("idle", "paced")("the layer's idleTimeout applies when the input sets none", () =>
    Effect.gen(function*() {
      const { G, I, S, idle } = ctx
      const argv = ctx.paced([["stdout", utf8("x")], ["sleep", Duration.times(idle, 100)]])
      const result = yield* ctx.elapse(
        ctx.run({ argv }, { idleTimeout: idle, timeout: "1 hour", killGrace: ctx.grace }),
        Duration.millis(I + G + S)
      )
      expectTimeoutKind(result, "idle")
      expectBytes(result.stdout, utf8("x"))
      expect(result.durationMs).toBeGreaterThanOrEqual(I)
      expect(result.durationMs).toBeLessThanOrEqual(I + G + S)
    }))

const inTime = <E>(ctx: SuiteContext<E>) =>
  ctx.test("idle")("a run that ends by itself has no timeoutKind, with or without an idle timeout", () =>
    Effect.gen(function*() {
      const argv = ctx.commands.write([["stdout", utf8("done\n")]])
      // An idle timeout far above what starting a process can take, so that only its presence is tested.
      const watched = yield* ctx.run({ argv, idleTimeout: Duration.times(ctx.idle, 100) })
      const plain = yield* ctx.run({ argv })
      for (const result of [watched, plain]) {
        expect(result.exitCode).toBe(0)
        ctx.ranInTime(result)
        expectTimeoutKind(result, undefined)
      }
    }))

const wallWithoutIdle = <E>(ctx: SuiteContext<E>) =>
  ctx.test("timeouts")("without an idle timeout, a run past its timeout says timeoutKind \"wall\"", () =>
    Effect.gen(function*() {
      const { G, S, T, grace, slack, timeout } = ctx
      const argv = ctx.commands.hang("", { ignoreTerm: false })
      const result = yield* ctx.elapse(
        ctx.run({ argv, timeout, killGrace: grace }),
        Duration.sum(Duration.sum(timeout, grace), slack)
      )
      expectTimeoutKind(result, "wall")
      expect(result.durationMs).toBeLessThanOrEqual(T + G + S)
    }))

export const registerIdle = <E>(ctx: SuiteContext<E>): void => {
  describe("idle timeout", () => {
    quietRun(ctx)
    busyRun(ctx)
    layerIdle(ctx)
    inTime(ctx)
    wallWithoutIdle(ctx)
  })
}
