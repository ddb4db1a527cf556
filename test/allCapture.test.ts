/**
 * `all`: one more capture of stdout and stderr together, in the order their chunks reached the runner, with its own
 * cap (`maxAllBytes`) and the run's `keep`. Properties at the engine's sinks (the code every backend feeds), then the
 * test layer, a real process and the CLI's `--json --all`.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as fc from "fast-check"
import type { Keep } from "../src/Exec.js"
import { capturesOf } from "../src/internal/engine.js"
import { NativeRunner, NativeRunnerTest } from "../src/index.js"
import { cliStdout } from "./helpers/cliOut.js"

const text = (bytes: Uint8Array | undefined) => bytes === undefined ? undefined : new TextDecoder().decode(bytes)

/** The reference, computed from all the bytes at once: the slices the mode keeps, and where the cut is. */
const kept = (bytes: Uint8Array, cap: number, keep: Keep) => {
  if (bytes.length <= cap) return { bytes: Array.from(bytes), omitted: undefined }
  const head = keep === "head" ? cap : keep === "tail" ? 0 : Math.floor(cap / 2)
  return {
    bytes: [...bytes.subarray(0, head), ...bytes.subarray(bytes.length - (cap - head))],
    omitted: { offset: head, bytes: bytes.length - cap }
  }
}

const events = fc.array(fc.record({ stream: fc.constantFrom("stdout" as const, "stderr" as const), chunk: fc.uint8Array({ maxLength: 300 }) }), { maxLength: 30 })

const settings = (maxAllBytes: number | undefined, keep: Keep) => ({
  maxStdoutBytes: 1000,
  maxStderrBytes: 700,
  timeout: Duration.seconds(1),
  killGrace: Duration.seconds(1),
  drainTimeout: Duration.seconds(1),
  keep,
  maxAllBytes
})

describe("all: properties at the engine's sinks", () => {
  it("all is the interleaving in arrival order, byte-exact at every cap and keep; each stream's own capture is unchanged", () => {
    fc.assert(fc.property(events, fc.nat({ max: 6000 }), fc.constantFrom<Keep>("head", "tail", "both"), (seen, capSeed, keep) => {
      const total = seen.reduce((n, e) => n + e.chunk.length, 0)
      // A third of the caps at the edge: the total, one below, one above.
      const cap = capSeed % 3 === 0 ? Math.max(0, total - 1 + (capSeed % 9) / 3) : capSeed
      const captures = capturesOf(settings(cap, keep), undefined, Clock.make(), 0)
      for (const { stream, chunk } of seen) captures.sinks[stream === "stdout" ? 0 : 1].push(chunk)
      const everything = new Uint8Array(Buffer.concat(seen.map((e) => e.chunk)))
      const expected = kept(everything, cap, keep)
      expect(Array.from(captures.all!.bytes())).toStrictEqual(expected.bytes)
      expect(captures.all!.omitted()).toStrictEqual(expected.omitted)
      expect(captures.all!.total()).toBe(total)
      for (const [stream, capture, own] of [["stdout", captures.stdout, 1000], ["stderr", captures.stderr, 700]] as const) {
        const mine = new Uint8Array(Buffer.concat(seen.filter((e) => e.stream === stream).map((e) => e.chunk)))
        expect(Array.from(capture.bytes())).toStrictEqual(kept(mine, own, keep).bytes)
      }
    }), { numRuns: 300 })
  })

  it("without maxAllBytes there is no combined capture", () => {
    expect(capturesOf(settings(undefined, "head"), undefined, Clock.make(), 0).all).toBeUndefined()
  })

  it("a stream that could not be read leaves all marked truncated, naming the stream", () => {
    const captures = capturesOf(settings(100, "head"), undefined, Clock.make(), 0)
    captures.sinks[1].push(new Uint8Array([1]))
    captures.sinks[1].fail("EIO: i/o error")
    expect([captures.all!.truncated(), captures.all!.readError()]).toStrictEqual([true, "stderr: EIO: i/o error"])
  })
})

describe("all: through the runner", () => {
  const script = NativeRunnerTest.layerTest([
    NativeRunnerTest.when("interleaved", (call) => call.input.argv[0] === "interleaved", () => ({
      output: [
        NativeRunnerTest.stdout("out1 "),
        NativeRunnerTest.sleep("10 millis"),
        NativeRunnerTest.stderr("err1 "),
        NativeRunnerTest.sleep("10 millis"),
        NativeRunnerTest.stdout("out2")
      ]
    }))
  ], { all: true, maxAllBytes: 12 })

  it.live("the test layer: all in arrival order, cut at maxAllBytes; the audit records its kept size; off when asked", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.exec({ argv: ["interleaved"] })
      expect([text(result.all), result.allOmitted, text(result.stdout), text(result.stderr)])
        .toStrictEqual(["out1 err1 ou", { offset: 12, bytes: 2 }, "out1 out2", "err1 "])
      expect(result.audits[0]?.allKeptBytes).toBe(12)
      const tail = yield* NativeRunner.exec({ argv: ["interleaved"], keep: "tail", limits: { maxAllBytes: 100 } })
      expect([text(tail.all), tail.allOmitted]).toStrictEqual(["out1 err1 out2", undefined])
      const off = yield* NativeRunner.exec({ argv: ["interleaved"], all: false })
      expect([off.all, off.audits[0]?.allKeptBytes]).toStrictEqual([undefined, undefined])
    }).pipe(Effect.provide(script)))

  it.live("a real process: stdout and stderr interleaved as they were written (a pause between writes)", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.exec({
        argv: ["sh", "-c", "printf 'out1 '; sleep 0.2; printf 'err1 ' >&2; sleep 0.2; printf out2"],
        all: true
      })
      expect(text(result.all)).toBe("out1 err1 out2")
      const plain = yield* NativeRunner.exec({ argv: ["echo", "x"] })
      expect(plain.all).toBeUndefined()
    }).pipe(Effect.provide(NativeRunner.layerNode())))

  it.live("the CLI: --json --all prints all, allEncoding and allOmitted; without --all they are null", () =>
    Effect.gen(function*() {
      const run = (args: ReadonlyArray<string>) =>
        Effect.map(
          cliStdout(["run", "--json", ...args, "--", "sh", "-c", "printf abc; sleep 0.2; printf def >&2"]),
          (out) => JSON.parse(out)
        )
      expect(yield* run(["--all", "--max-all", "4"])).toMatchObject({ all: "abcd", allEncoding: "utf8", allOmitted: { offset: 4, bytes: 2 } })
      expect(yield* run([])).toMatchObject({ all: null, allEncoding: null, allOmitted: null })
    }))
})
