/**
 * Found in review (2026-12-04), kept as tests: pipelines and the maxConcurrent slots. After many pipelines that fail to start, are killed, interrupted
 * while waiting for slots or while starting, or cut, every slot must be back (maxConcurrent sleeps run at once),
 * and an interrupted start leaves no stage running in the caller's scope.
 */
import * as Command from "@effect/platform/Command"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { NativeRunner } from "../../src/index.js"
import { pidsWithCmdlineContaining, randomDigits } from "../helpers/escape.js"

const layer = NativeRunner.layerCommandExecutor({ killGrace: "200 millis", maxConcurrent: 2, maxStdoutBytes: 1 << 16, timeout: "10 seconds" })
const layer3 = NativeRunner.layerCommandExecutor({ killGrace: "200 millis", maxConcurrent: 3, timeout: "10 seconds" })
const sleeper = (mark: string) => Command.make("sleep", mark)

/** How long two `sleep 0.5` take side by side: about 0.5 s with both slots free, 1 s with one. */
const twoAtOnce = Effect.gen(function*() {
  const t = Date.now()
  yield* Effect.all([Command.exitCode(Command.make("sleep", "0.5")), Command.exitCode(Command.make("sleep", "0.5"))], { concurrency: 2 })
  return Date.now() - t
})

describe("pipeline slots", () => {
  it.live("after failed, killed, cut and interrupted pipelines, both slots are free again", () =>
    Effect.gen(function*() {
      const mark = `20.${randomDigits()}`
      for (let i = 0; i < 6; i++) {
        // A stage that cannot start.
        yield* Effect.either(Command.string(sleeper(mark).pipe(Command.pipeTo(Command.make("enr-no-such-program")))))
        // Killed while running.
        yield* Effect.scoped(Effect.gen(function*() {
          const p = yield* Command.start(sleeper(mark).pipe(Command.pipeTo(Command.make("cat"))))
          yield* p.kill("SIGKILL")
          yield* Effect.either(p.exitCode)
        }))
        // Cut between stages (InvalidData).
        yield* Effect.either(Command.string(Command.make("head", "-c", "200000", "/dev/zero").pipe(Command.pipeTo(Command.make("wc", "-c")))))
        // Interrupted at every point of its start, a little later each time.
        for (let d = 0; d < 8; d++) {
          yield* Effect.scoped(Effect.timeout(Command.start(sleeper(mark).pipe(Command.pipeTo(Command.make("cat")))), `${d} millis`).pipe(Effect.either))
        }
      }
      // Interrupted while waiting for slots held by someone else.
      yield* Effect.scoped(Effect.gen(function*() {
        const holder = yield* Effect.fork(Command.exitCode(Command.make("sleep", "0.3")))
        yield* Effect.sleep("50 millis")
        yield* Effect.either(Effect.timeout(Command.exitCode(sleeper(mark).pipe(Command.pipeTo(Command.make("cat")))), "100 millis"))
        yield* Fiber.join(holder)
      }))
      expect(pidsWithCmdlineContaining(mark)).toStrictEqual([])
      expect(yield* twoAtOnce).toBeLessThan(900)
      expect((yield* Command.string(Command.make("echo", "ok").pipe(Command.pipeTo(Command.make("cat"))))).trim()).toBe("ok")
    }).pipe(Effect.provide(layer)))

  it.live("an interrupted Command.start of a pipeline leaves no stage running in the caller's open scope, nor more runs than maxConcurrent", () =>
    Effect.gen(function*() {
      const mark = `20.${randomDigits()}`
      const other = `20.${randomDigits()}`
      const seen: Array<{ delayUs: number; left: number; running: number }> = []
      for (let i = 0; i < 24; i++) {
        const delayUs = 250 + i * 250
        yield* Effect.scoped(Effect.gen(function*() {
          const start = yield* Effect.fork(Command.start(sleeper(mark).pipe(Command.pipeTo(sleeper(mark)), Command.pipeTo(sleeper(mark)))))
          yield* Effect.promise(() => new Promise((r) => setTimeout(r, delayUs / 1000)))
          const exit = yield* Fiber.interrupt(start)
          if (exit._tag === "Failure") {
            // The start was interrupted; the scope is still open. Three more runs under maxConcurrent 3.
            const others = yield* Effect.fork(Effect.all([0, 1, 2].map(() => Command.exitCode(Command.make("sleep", other))), { concurrency: 3 }))
            yield* Effect.sleep("150 millis")
            const left = pidsWithCmdlineContaining(mark).length
            const running = left + pidsWithCmdlineContaining(other).length
            if (left > 0 || running > 3) seen.push({ delayUs, left, running })
            yield* Fiber.interrupt(others)
          }
        }))
      }
      expect(pidsWithCmdlineContaining(mark)).toStrictEqual([])
      expect(seen.slice(0, 3)).toStrictEqual([])
    }).pipe(Effect.provide(layer3)))
})
