/**
 * Found in review (2026-12-04), kept as tests: the pipeline's cut check reads `pipeline.cut` when a stream ends or exitCode is asked, not whether the
 * next stage ever saw the cut. A consumer that stopped reading before the cap (head -c 5) gets InvalidData once
 * the producer has gone on past the cap and ended, and the same Process's exitCode turns from 0 to InvalidData.
 */
import * as Command from "@effect/platform/Command"
import { describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Stream from "effect/Stream"
import { NativeRunner } from "../../src/index.js"

const ours = NativeRunner.layerCommandExecutor({ killGrace: "300 millis", maxStdoutBytes: 1 << 20, timeout: "10 seconds" })
// Five bytes, then (after the consumer has them) more than the cap.
const producer = Command.make("sh", "-c", "printf abcde; sleep 0.3; head -c 1100000 /dev/zero")

describe("pipeline cut: only a cut the next stage could see", () => {
  it.live("the same Process's exitCode does not change from 0 to InvalidData after the consumer has ended", () =>
    Effect.gen(function*() {
      const outcome = yield* Effect.scoped(Effect.gen(function*() {
        const proc = yield* Command.start(producer.pipe(Command.pipeTo(Command.make("head", "-c", "5"))))
        const out = new TextDecoder().decode(Buffer.concat(Chunk.toReadonlyArray(yield* Stream.runCollect(proc.stdout))))
        const first = yield* Effect.either(proc.exitCode)
        yield* Effect.sleep("800 millis")
        const second = yield* Effect.either(proc.exitCode)
        const show = (e: typeof first) => Either.isRight(e) ? e.right : `${e.left._tag}:${"reason" in e.left ? e.left.reason : ""}`
        return { out, first: show(first), second: show(second) }
      }))
      expect(outcome).toStrictEqual({ out: "abcde", first: 0, second: 0 })
    }).pipe(Effect.provide(ours)))

  it.live("Command.string of producer | (head -c 5; sleep) is what the consumer wrote, as under a shell", () =>
    Effect.gen(function*() {
      const got = yield* Effect.either(Command.string(producer.pipe(Command.pipeTo(Command.make("sh", "-c", "head -c 5; sleep 0.6")))))
      expect(Either.isRight(got) ? got.right : `${got.left._tag}:${"reason" in got.left ? got.left.reason : ""}`).toBe("abcde")
    }).pipe(Effect.provide(ours)))
})
