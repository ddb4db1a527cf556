/**
 * Review (arguable): a worker whose runner keeps 1 KiB of each stream, and that never asked for `all`, keeps what a
 * tenant's `all: true` asks of the 2 MiB default (in memory and in its stored outcome); the CLI's worker has no
 * --max-all to lower it. The ceiling test's own fallback says a worker without an all cap caps it at stdout + stderr.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { fromWire } from "../../src/cluster/protocol.js"
import { clampToCeiling } from "../../src/cluster/worker.js"
import { NativeRunner } from "../../src/index.js"
import { ceilingOf } from "../../src/NativeRunnerCluster.js"

const workerOptions = { maxStdoutBytes: 1024, maxStderrBytes: 1024 } as const

describe("fleet: all on a worker that keeps 1 KiB a stream", () => {
  it.live("a request's all keeps at most the worker's stdout + stderr caps", () =>
    Effect.gen(function*() {
      const ceiling = yield* ceilingOf(workerOptions)
      const sizes: Array<number | undefined> = []
      for (const wire of [
        { argv: ["head", "-c", "100000", "/dev/zero"], all: true },
        { argv: ["head", "-c", "100000", "/dev/zero"], all: true, limits: { maxAllBytes: 4 * 1024 * 1024 } }
      ]) {
        const clamped = clampToCeiling(ceiling, wire)
        if (!("argv" in clamped)) return yield* Effect.dieMessage("refused")
        const result = yield* NativeRunner.exec(fromWire(clamped))
        sizes.push(result.all?.length)
      }
      expect(sizes).toStrictEqual([2048, 2048])
    }).pipe(Effect.provide(NativeRunner.layerNode(workerOptions))))
})
