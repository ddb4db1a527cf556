/** Topic "exit codes": a non-zero exit is data in the result, never an error. */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type { SuiteContext } from "./context.js"

export const registerExitCodes = <E>({ commands, ranInTime, run, test }: SuiteContext<E>): void => {
  describe("exit codes", () => {
    for (const code of [0, 1, 2, 42, 255]) {
      test()(`reports exit code ${code} as data, not as an error`, () =>
        Effect.gen(function*() {
          const result = yield* run({ argv: commands.exit(code) })
          expect(result.exitCode).toBe(code)
          expect(result.stdout.length + result.stderr.length).toBe(0)
          ranInTime(result)
        }))
    }
  })
}
