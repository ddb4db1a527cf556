/** Topic "invalid input": input exec cannot decode fails with InvalidInput before anything runs or is audited. */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { existsSync } from "node:fs"
import type { ExecInput } from "../Exec.js"
import * as NativeRunner from "../NativeRunner.js"
import type { SuiteContext } from "./context.js"
import type { Argv } from "./fixture.js"

/** Hands exec data the type system cannot vouch for, as a JavaScript or JSON caller would: exec must decode it. */
const untrusted = (input: unknown): ExecInput => input as ExecInput

const cases: ReadonlyArray<readonly [string, (argv: Argv) => unknown]> = [
  ["an empty argv", () => ({ argv: [] })],
  ["an empty program", (argv) => ({ argv: ["", ...argv] })],
  ["a NUL byte in an argument", (argv) => ({ argv: [...argv, "a\u0000b"] })],
  ["a negative timeoutMs", (argv) => ({ argv, limits: { timeoutMs: -1 } })],
  ["a fractional byte cap", (argv) => ({ argv, limits: { maxStdoutBytes: 1.5 } })],
  ["an env name with '='", (argv) => ({ argv, env: { "A=B": "x" } })],
  ["an unknown property", (argv) => ({ argv, shell: true })],
  ["stdin that is not bytes", (argv) => ({ argv, stdin: "text" })],
  ["a timeout that is not a duration", (argv) => ({ argv, timeout: "soon" })],
  ["an empty cwd", (argv) => ({ argv, cwd: "" })],
  ["not an object at all", (argv) => argv.join(" ")]
]

const touchWorks = <E>({ commands, marker, run, test }: SuiteContext<E>) =>
  test()("the touch command works (so the checks below can fail)", () =>
    Effect.gen(function*() {
      const touched = marker()
      const result = yield* run({ argv: commands.touch(touched) })
      expect(result.exitCode).toBe(0)
      expect(existsSync(touched)).toBe(true)
    }))

const refused = <E>(ctx: SuiteContext<E>, what: string, make: (argv: Argv) => unknown) =>
  ctx.test()(`${what} fails with InvalidInput; nothing runs, nothing is audited`, () =>
    Effect.gen(function*() {
      const touched = ctx.marker()
      const error = yield* Effect.flip(NativeRunner.exec(untrusted(make(ctx.commands.touch(touched)))))
      expect(error._tag).toBe("InvalidInput")
      if (error._tag === "InvalidInput") expect(error.issues.length).toBeGreaterThan(0)
      expect(existsSync(touched)).toBe(false)
      expect(yield* ctx.records).toEqual([])
    }).pipe(Effect.provide(ctx.withAudit({}))))

export const registerInvalidInput = <E>(ctx: SuiteContext<E>): void => {
  describe("invalid input", () => {
    touchWorks(ctx)
    for (const [what, make] of cases) refused(ctx, what, make)
  })
}
