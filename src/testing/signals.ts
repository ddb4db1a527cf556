/** Topic "signals": a child killed by a signal exits 128+n, the signal named in the result. */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { constants } from "node:os"
import type { SuiteContext } from "./context.js"

export const signalNumber = (signal: NodeJS.Signals): number => constants.signals[signal]

export const registerSignals = <E>({ commands, run, test }: SuiteContext<E>): void => {
  describe("signals", () => {
    for (const signal of ["SIGUSR1", "SIGKILL"] as const) {
      test("signals")(`a child killed by ${signal} exits 128+n with the signal's name`, () =>
        Effect.gen(function*() {
          const result = yield* run({ argv: commands.raise(signal) })
          expect(result).toMatchObject({ exitCode: 128 + signalNumber(signal), signal, timedOut: false })
        }))
    }
  })
}
