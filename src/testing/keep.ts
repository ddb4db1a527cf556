/**
 * Topic "keep": which bytes the cap keeps (`keep`: "head", "tail" or "both") and where the result says the cut is
 * (`stdoutOmitted` / `stderrOmitted`: `bytes` dropped at `offset` in the kept bytes).
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type { ExecResult, Keep, Omitted } from "../Exec.js"
import { concat, expectBytes, pattern, utf8 } from "./bytes.js"
import type { SuiteContext } from "./context.js"

const KEEPS: ReadonlyArray<Keep> = ["head", "tail", "both"]

/** The kept bytes and the cut, checked together, on stdout or stderr. */
const expectKept = (
  result: ExecResult,
  stream: "stdout" | "stderr",
  bytes: Uint8Array,
  omitted: Omitted | undefined
) => {
  expectBytes(result[stream], bytes)
  const key = stream === "stdout" ? "stdoutOmitted" : "stderrOmitted"
  if (omitted === undefined) expect(Object.keys(result)).not.toContain(key)
  else expect(result[key]).toEqual(omitted)
}

// 3000 bytes of stdout under a cap of 1001 (odd: "both" keeps 500 + 501), 10 of stderr under a cap of 4.
const out = concat(pattern(1000, 1), pattern(1000, 2), pattern(1000, 3))
const err = utf8("0123456789")
const expected: Readonly<Record<Keep, {
  readonly out: Uint8Array
  readonly outOmitted: Omitted
  readonly err: string
  readonly errOmitted: Omitted
}>> = {
  head: {
    out: out.subarray(0, 1001),
    outOmitted: { offset: 1001, bytes: 1999 },
    err: "0123",
    errOmitted: { offset: 4, bytes: 6 }
  },
  tail: {
    out: out.subarray(1999),
    outOmitted: { offset: 0, bytes: 1999 },
    err: "6789",
    errOmitted: { offset: 0, bytes: 6 }
  },
  both: {
    out: concat(out.subarray(0, 500), out.subarray(2499)),
    outOmitted: { offset: 500, bytes: 1999 },
    err: "0189",
    errOmitted: { offset: 2, bytes: 6 }
  }
}

const cutBelowOutput = <E>(ctx: SuiteContext<E>, keep: Keep) =>
  ctx.test("keep")(`keep "${keep}" under a cap: exactly those bytes, and where the cut is`, () =>
    Effect.gen(function*() {
      const argv = ctx.commands.write([
        ["stdout", out.subarray(0, 1000)],
        ["stderr", err],
        ["stdout", out.subarray(1000, 2000)],
        ["stdout", out.subarray(2000)]
      ])
      const result = yield* ctx.run({ argv, keep, limits: { maxStdoutBytes: 1001, maxStderrBytes: 4 } })
      const want = expected[keep]
      expectKept(result, "stdout", want.out, want.outOmitted)
      expectKept(result, "stderr", utf8(want.err), want.errOmitted)
      expect(result).toMatchObject({
        exitCode: 0,
        truncatedStdout: true,
        truncatedStderr: true,
        stdoutBytes: 3000,
        stderrBytes: 10
      })
      expect(result.audits[0]).toMatchObject({ truncatedStdout: true, truncatedStderr: true, stdoutBytes: 3000 })
    }))

const withinTheCap = <E>(ctx: SuiteContext<E>) =>
  ctx.test("keep")("output within the cap is kept whole, with no *Omitted, whatever keep says", () =>
    Effect.gen(function*() {
      const bytes = pattern(64, 9)
      const argv = ctx.commands.write([["stdout", bytes.subarray(0, 30)], ["stdout", bytes.subarray(30)]])
      for (const keep of KEEPS) {
        const result = yield* ctx.run({ argv, keep, limits: { maxStdoutBytes: 64 } })
        expectKept(result, "stdout", bytes, undefined)
        expectKept(result, "stderr", new Uint8Array(0), undefined)
        expect(result).toMatchObject({ truncatedStdout: false, stdoutBytes: 64 })
      }
    }))

const tinyCaps = <E>(ctx: SuiteContext<E>) =>
  ctx.test("keep")("caps of 0 and 1: \"both\" gives its one byte to the tail", () =>
    Effect.gen(function*() {
      const argv = ctx.commands.write([["stdout", utf8("hello")]])
      const cases = [
        ["head", 0, "", { offset: 0, bytes: 5 }],
        ["tail", 0, "", { offset: 0, bytes: 5 }],
        ["both", 0, "", { offset: 0, bytes: 5 }],
        ["head", 1, "h", { offset: 1, bytes: 4 }],
        ["tail", 1, "o", { offset: 0, bytes: 4 }],
        ["both", 1, "o", { offset: 0, bytes: 4 }]
      ] as const
      for (const [keep, cap, kept, omitted] of cases) {
        const result = yield* ctx.run({ argv, keep, limits: { maxStdoutBytes: cap } })
        expect({ keep, cap, kept: new TextDecoder().decode(result.stdout), omitted: result.stdoutOmitted })
          .toEqual({ keep, cap, kept, omitted })
        expect(result).toMatchObject({ truncatedStdout: true, stdoutBytes: 5 })
      }
    }))

const manyChunks = <E>(ctx: SuiteContext<E>) =>
  ctx.test("keep")("tail and both across many chunks (more than a pipe holds)", () =>
    Effect.gen(function*() {
      const stdin = pattern(300_000, 4)
      const tail = yield* ctx.run({ argv: ctx.commands.cat, stdin, keep: "tail", limits: { maxStdoutBytes: 1000 } })
      expectKept(tail, "stdout", stdin.subarray(299_000), { offset: 0, bytes: 299_000 })
      const both = yield* ctx.run({ argv: ctx.commands.cat, stdin, keep: "both", limits: { maxStdoutBytes: 100_001 } })
      expectKept(both, "stdout", concat(stdin.subarray(0, 50_000), stdin.subarray(249_999)), {
        offset: 50_000,
        bytes: 199_999
      })
      for (const result of [tail, both]) {
        expect(result).toMatchObject({ exitCode: 0, truncatedStdout: true, stdoutBytes: 300_000 })
      }
    }))

const layerKeep = <E>(ctx: SuiteContext<E>) =>
  ctx.test("keep")("head by default; the layer's keep applies when the input sets none; the input's wins", () =>
    Effect.gen(function*() {
      const argv = ctx.commands.write([["stdout", utf8("0123456789")]])
      const byDefault = yield* ctx.run({ argv }, { maxStdoutBytes: 4 })
      expectKept(byDefault, "stdout", utf8("0123"), { offset: 4, bytes: 6 })
      const byLayer = yield* ctx.run({ argv }, { maxStdoutBytes: 4, keep: "tail" })
      expectKept(byLayer, "stdout", utf8("6789"), { offset: 0, bytes: 6 })
      const byInput = yield* ctx.run({ argv, keep: "both" }, { maxStdoutBytes: 4, keep: "tail" })
      expectKept(byInput, "stdout", utf8("0189"), { offset: 2, bytes: 6 })
      const headByInput = yield* ctx.run({ argv, keep: "head" }, { maxStdoutBytes: 4, keep: "tail" })
      expectKept(headByInput, "stdout", utf8("0123"), { offset: 4, bytes: 6 })
    }))

export const registerKeep = <E>(ctx: SuiteContext<E>): void => {
  describe("keep", () => {
    for (const keep of KEEPS) cutBelowOutput(ctx, keep)
    withinTheCap(ctx)
    tinyCaps(ctx)
    manyChunks(ctx)
    layerKeep(ctx)
  })
}
