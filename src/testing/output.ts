/** Topic "output": both streams captured byte-exact, within their caps, drained to the end. */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { concat, expectBytes, pattern, utf8 } from "./bytes.js"
import type { SuiteContext } from "./context.js"

const keepsStreamsApart = <E>({ commands, ranInTime, run, test }: SuiteContext<E>) =>
  test()("keeps stdout and stderr apart, byte-exact (every byte value, NUL, invalid UTF-8)", () =>
    Effect.gen(function*() {
      const out1 = pattern(256)
      const err1 = Uint8Array.of(0x80, 0x00, 0xc3, 0x28)
      const out2 = Uint8Array.of(0xff, 0xfe, 0x00, 0x0a)
      const result = yield* run({ argv: commands.write([["stdout", out1], ["stderr", err1], ["stdout", out2]]) })
      expectBytes(result.stdout, concat(out1, out2))
      expectBytes(result.stderr, err1)
      expect(result).toMatchObject({
        exitCode: 0,
        truncatedStdout: false,
        truncatedStderr: false,
        stdoutBytes: 260,
        stderrBytes: 4
      })
      ranInTime(result)
    }))

const keepsTheFirstBytes = <E>({ commands, run, test }: SuiteContext<E>) =>
  test()("keeps the first maxStdoutBytes/maxStderrBytes bytes and counts the rest", () =>
    Effect.gen(function*() {
      const chunks = [pattern(1000, 1), pattern(1000, 2), pattern(1000, 3)]
      const result = yield* run({
        argv: commands.write([...chunks.map((c) => ["stdout", c] as const), ["stderr", utf8("eeeeeeeeee")]]),
        limits: { maxStdoutBytes: 1500, maxStderrBytes: 4 }
      })
      expectBytes(result.stdout, concat(...chunks).subarray(0, 1500))
      expectBytes(result.stderr, utf8("eeee"))
      expect(result).toMatchObject({
        exitCode: 0,
        truncatedStdout: true,
        truncatedStderr: true,
        stdoutBytes: 3000,
        stderrBytes: 10
      })
    }))

const layerCaps = <E>({ commands, run, test }: SuiteContext<E>) =>
  test()("applies the layer's caps when the input sets none", () =>
    Effect.gen(function*() {
      const result = yield* run(
        { argv: commands.write([["stdout", utf8("0123456789")], ["stderr", utf8("abcdef")]]) },
        { maxStdoutBytes: 7, maxStderrBytes: 6 }
      )
      expectBytes(result.stdout, utf8("0123456"))
      expectBytes(result.stderr, utf8("abcdef"))
      expect(result).toMatchObject({ truncatedStdout: true, truncatedStderr: false, stdoutBytes: 10 })
    }))

const exactlyAtTheCap = <E>({ commands, run, test }: SuiteContext<E>) =>
  test()("output exactly at the cap is not truncated; one byte more is", () =>
    Effect.gen(function*() {
      const bytes = pattern(64, 5)
      const argv = commands.write([["stdout", bytes.subarray(0, 40)], ["stdout", bytes.subarray(40)]])
      const atCap = yield* run({ argv, limits: { maxStdoutBytes: 64 } })
      expectBytes(atCap.stdout, bytes)
      expect(atCap).toMatchObject({ truncatedStdout: false, stdoutBytes: 64 })
      const below = yield* run({ argv, limits: { maxStdoutBytes: 63 } })
      expectBytes(below.stdout, bytes.subarray(0, 63))
      expect(below).toMatchObject({ truncatedStdout: true, stdoutBytes: 64 })
    }))

const capOfZero = <E>({ commands, run, test }: SuiteContext<E>) =>
  test()("a cap of 0 keeps nothing but counts everything", () =>
    Effect.gen(function*() {
      const result = yield* run({
        argv: commands.write([["stdout", utf8("hello")], ["stderr", utf8("oops")]]),
        limits: { maxStdoutBytes: 0, maxStderrBytes: 0 }
      })
      expect(result.stdout.length).toBe(0)
      expect(result.stderr.length).toBe(0)
      expect(result).toMatchObject({ truncatedStdout: true, truncatedStderr: true, stdoutBytes: 5, stderrBytes: 4 })
    }))

const drainsToTheEnd = <E>({ commands, ranInTime, run, test }: SuiteContext<E>) =>
  test()("drains a child that writes far more than the cap (and than a pipe holds) to the end", () =>
    Effect.gen(function*() {
      const result = yield* run({ argv: commands.zeros(1_000_000), limits: { maxStdoutBytes: 1024 } })
      expectBytes(result.stdout, new Uint8Array(1024))
      expect(result).toMatchObject({ exitCode: 0, truncatedStdout: true, stdoutBytes: 1_000_000 })
      ranInTime(result)
    }))

export const registerOutput = <E>(ctx: SuiteContext<E>): void => {
  describe("output", () => {
    keepsStreamsApart(ctx)
    keepsTheFirstBytes(ctx)
    layerCaps(ctx)
    exactlyAtTheCap(ctx)
    capOfZero(ctx)
    drainsToTheEnd(ctx)
  })
}
