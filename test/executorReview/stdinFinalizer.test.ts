/**
 * A stdin stream over a Node Readable (`Stream.fromAsyncIterable(readable)`) that has nothing to give: the run's
 * timeout, the child's exit and an abort must still end the exec. They do not: ending the stdin writer waits for the
 * async iterator's `return()`, which Node queues behind the pending `next()`, so the exec returns only when the
 * source next produces (here: when the test ends it, after 8 s).
 */
import * as NodeCommandExecutor from "@effect/platform-node/NodeCommandExecutor"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { PassThrough } from "node:stream"
import { NativeRunner } from "../../src/index.js"

/** A readable that stays silent; ended after 8 s so a hung run comes back and the test can report it. */
const silent = () => {
  const source = new PassThrough()
  const unhang = setTimeout(() => source.end(), 8_000)
  return { stdin: Stream.fromAsyncIterable(source, (e) => e), done: () => (clearTimeout(unhang), source.end()) }
}

const layers = {
  "spawn helper": NativeRunner.layerNode(),
  "spawnHelper: off": NativeRunner.layerNode({ spawnHelper: "off" }),
  "layer over NodeCommandExecutor": NativeRunner.layer().pipe(Layer.provide(NodeCommandExecutor.layer), Layer.provide(NodeFileSystem.layer))
} as const

for (const [name, layer] of Object.entries(layers)) {
  describe(`silent stdin readable: ${name}`, () => {
    it.live("timeout 1s, killGrace 0: the exec returns within timeout + killGrace + 2 s", () =>
      Effect.gen(function*() {
        const { stdin, done } = silent()
        const started = Date.now()
        const result = yield* NativeRunner.exec({ argv: ["sleep", "30"], stdin, timeout: "1 second", killGrace: 0 })
        const took = Date.now() - started
        done()
        expect(result.timedOut).toBe(true)
        expect(took).toBeLessThan(3_000)
      }).pipe(Effect.provide(layer)), 20_000)

    it.live("a child that exits at once without reading: the exec returns at once", () =>
      Effect.gen(function*() {
        const { stdin, done } = silent()
        const started = Date.now()
        const result = yield* NativeRunner.exec({ argv: ["true"], stdin })
        const took = Date.now() - started
        done()
        expect(result.exitCode).toBe(0)
        expect(took).toBeLessThan(3_000)
      }).pipe(Effect.provide(layer)), 20_000)
  })
}

describe("silent stdin readable: the Promise bridge", () => {
  it.live("an aborted exec rejects soon after the abort", () =>
    Effect.promise(async () => {
      const runner = NativeRunner.toPromiseRunner(NativeRunner.layerNode(), { cleanup: false })
      const { stdin, done } = silent()
      const controller = new AbortController()
      setTimeout(() => controller.abort(), 300)
      const started = Date.now()
      const outcome = await runner.exec({ argv: ["sleep", "30"], stdin }, { signal: controller.signal }).then(
        () => "resolved",
        (error: { _tag?: string }) => error._tag
      )
      const took = Date.now() - started
      done()
      await runner.dispose()
      expect(outcome).toBe("ExecInterrupted")
      expect(took).toBeLessThan(3_000)
    }), 20_000)
})
