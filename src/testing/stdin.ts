/** Topic "stdin": delivered byte-exact, EOF when absent, and more than a pipe holds flows through. */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { expectBytes, pattern } from "./bytes.js"
import type { SuiteContext } from "./context.js"

export const registerStdin = <E>({ commands, ranInTime, run, test }: SuiteContext<E>): void => {
  describe("stdin", () => {
    test()("is delivered byte-exact", () =>
      Effect.gen(function*() {
        const stdin = pattern(4096, 11)
        const result = yield* run({ argv: commands.cat, stdin })
        expectBytes(result.stdout, stdin)
        expect(result).toMatchObject({ exitCode: 0, stdoutBytes: 4096 })
      }))

    test()("absent or empty, the child sees EOF at once", () =>
      Effect.gen(function*() {
        const none = yield* run({ argv: commands.cat, timeout: "30 seconds" })
        const empty = yield* run({ argv: commands.cat, stdin: new Uint8Array(0), timeout: "30 seconds" })
        for (const result of [none, empty]) {
          expect(result.stdout.length).toBe(0)
          expect(result.exitCode).toBe(0)
          ranInTime(result)
        }
      }))

    test()("larger than a pipe buffer flows through while output is capped", () =>
      Effect.gen(function*() {
        const stdin = pattern(300_000, 3)
        const result = yield* run({ argv: commands.cat, stdin, limits: { maxStdoutBytes: 1000 } })
        expectBytes(result.stdout, stdin.subarray(0, 1000))
        expect(result).toMatchObject({ exitCode: 0, truncatedStdout: true, stdoutBytes: 300_000 })
      }))
  })
}
