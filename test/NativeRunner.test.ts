/** The layer options: one Schema, decoded once when a layer is built; a misspelt key is an error naming it. */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as NativeRunner from "../src/NativeRunner.js"
import * as NativeRunnerTest from "../src/NativeRunnerTest.js"

/** Options as a JavaScript caller might pass them, misspelt keys and all. */
const given = (options: unknown): NativeRunner.Options => options as NativeRunner.Options

const buildError = <E>(layer: Layer.Layer<NativeRunner.NativeRunner, E>) =>
  Effect.flip(Effect.scoped(Layer.build(layer)))

describe("layer options", () => {
  it.live.each([
    ["maxStdout", { maxStdout: 5 }],
    ["timout", { timout: "1 second" }],
    ["sandbox.fallbak", { sandbox: { policy: { workspace: "/tmp" }, fallbak: "unsandboxed" } }],
    ["sandbox.policy.netwrok", { sandbox: { policy: { workspace: "/tmp", netwrok: "host" } } }],
    ["resourceLimits.maxProcs", { resourceLimits: { maxProcs: 3 } }]
  ])("a misspelt key (%s) fails the live layer with InvalidInput naming it", ([key, options]) =>
    Effect.gen(function*() {
      const error = yield* buildError(NativeRunner.layerNode(given(options)))
      expect(error._tag).toBe("InvalidInput")
      expect(error._tag === "InvalidInput" && error.issues).toEqual([{ path: key, message: "is not a known field" }])
      expect(error.message).toContain(key)
    }))

  it.live("the test layer refuses a misspelt key the same way", () =>
    Effect.gen(function*() {
      const error = yield* buildError(NativeRunnerTest.layerTest([], { maxStdout: 5 } as unknown as NativeRunnerTest.TestOptions))
      expect(error).toMatchObject({ _tag: "InvalidInput", issues: [{ path: "maxStdout", message: "is not a known field" }] })
    }))

  it.live("correct keys build, with the documented defaults applied", () =>
    Effect.gen(function*() {
      const runner = yield* NativeRunner.makeNode({ maxStdoutBytes: 5, timeout: "10 seconds" })
      const result = yield* runner.exec({ argv: ["sh", "-c", "printf 0123456789"] })
      expect([new TextDecoder().decode(result.stdout), result.truncatedStdout]).toEqual(["01234", true])
      const decoded = yield* NativeRunner.decodeOptions(NativeRunner.Options, {})
      expect(decoded).toMatchObject({
        maxStdoutBytes: NativeRunner.DEFAULTS.maxStdoutBytes,
        maxConcurrent: NativeRunner.DEFAULTS.maxConcurrent,
        keep: "head"
      })
    }).pipe(Effect.scoped))
})
