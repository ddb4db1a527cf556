/**
 * Found in review (2026-12-04), kept as tests. The test layer against the live one for a stdin stream that does not end, or dies. Live (every path): a stream that
 * never emits into `true` gives exit 0 at once, into `sleep` a timeout (exit 124); the test layer reads the stream to
 * its end inside the uninterruptible spawn, so the run's timeout never fired and nothing could interrupt it (fixed: the
 * collection is interruptible and ends with the run's time). A stream whose pull dies: the test layer died with the
 * defect, the live layers went on silently; now both end the child's stdin there and log the defect.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { NativeRunner, NativeRunnerTest } from "../../src/index.js"

const anything = NativeRunnerTest.layerTest([NativeRunnerTest.when("anything", () => true, () => ({ stdout: "" }))])

describe("test layer: a stdin stream that never ends", () => {
  it.effect("the run's timeout still ends it (live: exit 124 after 1 s)", () =>
    Effect.gen(function*() {
      // Never emits until the test lets it go (so a hung run does not hang the test file).
      const release = yield* Deferred.make<void>()
      const stdin = Stream.fromEffect(Effect.as(Deferred.await(release), new Uint8Array(0)))
      const fiber = yield* Effect.fork(NativeRunner.exec({ argv: ["sleep", "30"], stdin, timeout: "1 second" }))
      yield* TestClock.adjust("5 seconds")
      const polled = yield* Fiber.poll(fiber)
      yield* Deferred.succeed(release, undefined)
      expect(Option.isSome(polled)).toBe(true)
    }).pipe(Effect.provide(anything)))
})

describe("a stdin stream whose pull dies", () => {
  const logged = (layer: Layer.Layer<NativeRunner.NativeRunner, unknown>) =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const logger = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => void lines.push(String(message))))
      const stdin = Stream.concat(Stream.make(new TextEncoder().encode("abc")), Stream.die("boom"))
      const result = yield* NativeRunner.exec({ argv: ["wc", "-c"], stdin }).pipe(Effect.provide(Layer.merge(layer, logger)))
      return { exitCode: result.exitCode, logged: lines.some((line) => line.includes("the stdin stream died")) }
    })
  for (const [name, layer] of [["layerNode", NativeRunner.layerNode()], ["layerNode spawnHelper: off", NativeRunner.layerNode({ spawnHelper: "off" })]] as const) {
    it.live(`${name}: the child's stdin ends there, the run goes on, and the defect is logged`, () =>
      Effect.gen(function*() {
        expect(yield* logged(layer)).toStrictEqual({ exitCode: 0, logged: true })
      }))
  }
  it.effect("the test layer: the same (the script sees the bytes before the defect), never a dead exec", () =>
    Effect.gen(function*() {
      const script = NativeRunnerTest.layerTest([
        NativeRunnerTest.when("wc", () => true, (call) => ({ stdout: String(call.input.stdin?.length ?? -1) }))
      ])
      expect(yield* logged(script)).toStrictEqual({ exitCode: 0, logged: true })
    }))
})
