/**
 * Draining a backend's output Streams (src/internal/drain.ts): a pipe that cannot be read to its end is reported,
 * never passed off as drained.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { drainStreams } from "../../src/internal/drain.js"
import type { Spawner } from "../../src/internal/engine.js"
import { bareRunner } from "../helpers/runner.js"

// A process whose stderr read fails after three bytes (as under address-space pressure), and which exits 0.
const failingStderr: Spawner = {
  spawn: () =>
    Effect.succeed({
      pid: 4242,
      output: drainStreams(
        Stream.make(new Uint8Array([111, 107])),
        Stream.concat(Stream.make(new Uint8Array([1, 2, 3])), Stream.fail(new Error("EIO: i/o error, read")))
      ),
      exit: Effect.succeed({ code: 0, signal: null }),
      kill: () => Effect.void
    })
}

describe("read errors", () => {
  it.effect("a failed read marks that stream truncated and says why, in the result and its audit", () =>
    Effect.gen(function*() {
      const runner = yield* bareRunner(failingStderr)
      const result = yield* runner.exec({ argv: ["anything"] })
      expect(result).toMatchObject({
        exitCode: 0,
        truncatedStdout: false,
        truncatedStderr: true,
        stderrBytes: 3,
        readError: "stderr: EIO: i/o error, read"
      })
      expect(Array.from(result.stderr)).toEqual([1, 2, 3])
      expect(result.audits[0]).toMatchObject({ truncatedStderr: true, readError: "stderr: EIO: i/o error, read" })
    }))
})
