/**
 * `Process.kill` right after the child exited by itself, while the run is still finishing (drain, audit): the
 * platform's executor reports the child's own exit code; ours reports a signal that was never sent.
 */
import * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { readFileSync } from "node:fs"
import { NativeRunner } from "../../src/index.js"

/** The leader has exited: a zombie, or reaped already. */
const exited = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z")
  } catch {
    return true
  }
}

const layers: ReadonlyArray<readonly [string, Layer.Layer<CommandExecutor.CommandExecutor, unknown>, boolean]> = [
  ["NodeContext (reference)", NodeContext.layer, true],
  ["layerCommandExecutor", NativeRunner.layerCommandExecutor(), false],
  ["layerCommandExecutor spawnHelper: off", NativeRunner.layerCommandExecutor({ spawnHelper: "off" }), false]
]

describe("Process.kill after the child's own exit", () => {
  for (const [name, layer] of layers) {
    it.live(`${name}: exitCode is the child's own code (3), not a signal`, () =>
      Effect.gen(function*() {
        const proc = yield* Command.start(Command.make("sh", "-c", "exit 3"))
        while (!exited(proc.pid)) yield* Effect.sleep("2 millis")
        yield* proc.kill("SIGTERM")
        expect(yield* Effect.either(proc.exitCode)).toMatchObject({ _tag: "Right", right: 3 })
      }).pipe(Effect.scoped, Effect.provide(layer)), 20_000)
  }
})
