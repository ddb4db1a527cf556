/**
 * `stdin` as a `Stream<Uint8Array>` in `ExecInput`: pulled as the child reads it (backpressure), ended at the stream's
 * end, a child that stops reading (EPIPE) is not an error, on every live path (spawn helper, direct, any
 * `CommandExecutor`) and in the test layer (which reads it to its end for the script).
 */
import * as NodeCommandExecutor from "@effect/platform-node/NodeCommandExecutor"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { readdirSync } from "node:fs"
import { NativeRunner, NativeRunnerTest } from "../src/index.js"
import { toWire } from "../src/cluster/protocol.js"

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
const bytes = (s: string) => new TextEncoder().encode(s)
const mib = new Uint8Array(1024 * 1024).fill(120)

const layers = {
  "layerNode (spawn helper)": NativeRunner.layerNode(),
  "layerNode (spawnHelper: off)": NativeRunner.layerNode({ spawnHelper: "off" }),
  "layer over NodeCommandExecutor": NativeRunner.layer().pipe(
    Layer.provide(NodeCommandExecutor.layer),
    Layer.provide(NodeFileSystem.layer)
  )
} as const

for (const [name, layer] of Object.entries(layers)) {
  describe(`stdin stream: ${name}`, () => {
    it.live("80 MiB streamed is read whole; chunks arrive in order", () =>
      Effect.gen(function*() {
        const counted = yield* NativeRunner.exec({ argv: ["wc", "-c"], stdin: Stream.range(1, 80).pipe(Stream.map(() => mib)) })
        expect(text(counted.stdout).trim()).toBe(String(80 * 1024 * 1024))
        const ordered = yield* NativeRunner.exec({ argv: ["cat"], stdin: Stream.make(bytes("a"), bytes("b"), new Uint8Array(0), bytes("c")) })
        expect(text(ordered.stdout)).toBe("abc")
      }).pipe(Effect.provide(layer)))

    it.live("a child that never reads: exit 0, the endless stream is not pulled on", () =>
      Effect.gen(function*() {
        let pulled = 0
        const endless = Stream.repeatEffect(Effect.sync(() => (pulled++, mib)))
        const result = yield* NativeRunner.exec({ argv: ["true"], stdin: endless, timeout: "20 seconds" })
        expect([result.exitCode, result.timedOut]).toStrictEqual([0, false])
        expect(pulled).toBeLessThan(8)
      }).pipe(Effect.provide(layer)))

    it.live("a stream that fails ends the child's stdin there: what came before is read, the run is not an error", () =>
      Effect.gen(function*() {
        const failing = Stream.concat(Stream.make(bytes("0123456789")), Stream.fail("source broke"))
        const result = yield* NativeRunner.exec({ argv: ["wc", "-c"], stdin: failing })
        expect([result.exitCode, text(result.stdout).trim()]).toStrictEqual([0, "10"])
      }).pipe(Effect.provide(layer)))
  })
}

describe("stdin stream: nothing left behind", () => {
  it.live("300 runs with a streamed stdin through the spawn helper leave the host's descriptors where they were", () =>
    Effect.gen(function*() {
      const fds = () => readdirSync("/proc/self/fd").length
      const once = NativeRunner.exec({ argv: ["cat"], stdin: Stream.make(bytes("x")) })
      yield* Effect.repeatN(once, 20)
      const before = fds()
      for (let i = 0; i < 300; i++) {
        const result = yield* i % 3 === 0
          ? NativeRunner.exec({ argv: ["true"], stdin: Stream.repeatEffect(Effect.succeed(mib)) })
          : once
        expect(result.exitCode).toBe(0)
      }
      // A few descriptors of Node's own may come and go; a leaked connection per run would be hundreds.
      expect(fds() - before).toBeLessThan(10)
    }).pipe(Effect.provide(NativeRunner.layerNode())), 60_000)
})

describe("stdin stream: elsewhere", () => {
  it.effect("the test layer reads the stream to its end: the script sees call.input.stdin as bytes", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.exec({ argv: ["cat"], stdin: Stream.make(bytes("he"), bytes("llo")) })
      expect(text(result.stdout)).toBe("hello")
      const [call] = yield* NativeRunnerTest.calls
      expect(call?.input.stdin).toStrictEqual(bytes("hello"))
    }).pipe(Effect.provide(NativeRunnerTest.layerTest([
      NativeRunnerTest.when("cat", (call) => call.input.argv[0] === "cat", (call) => ({ stdout: call.input.stdin ?? "" }))
    ]))))

  it.effect("a fleet client refuses a stream with InvalidInput naming stdin: it cannot cross to a worker", () =>
    Effect.gen(function*() {
      const refused = yield* Effect.flip(toWire({ argv: ["cat"], stdin: Stream.make(bytes("x")) }))
      expect(refused.issues[0]?.path).toBe("stdin")
      const wire = yield* toWire({ argv: ["cat"], stdin: bytes("x") })
      expect(wire.stdin).toStrictEqual(bytes("x"))
    }))

  it.effect("anything else as stdin is InvalidInput", () =>
    Effect.gen(function*() {
      const bad = yield* Effect.flip(NativeRunner.exec({ argv: ["cat"], stdin: "text" as unknown as Uint8Array }))
      expect(bad._tag).toBe("InvalidInput")
    }).pipe(Effect.provide(NativeRunnerTest.layerTest([]))))
})
