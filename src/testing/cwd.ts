/** Topic "cwd": the layer's cwd by default, relative input cwds resolved against it, bad cwds run nothing. */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { expectBytes, utf8 } from "./bytes.js"
import type { SuiteContext } from "./context.js"

const layerCwd = <E>({ commands, dir, run, test }: SuiteContext<E>) =>
  test("cwd")("runs in the layer's cwd by default; a relative input cwd resolves against it", () =>
    Effect.gen(function*() {
      const atDefault = yield* run({ argv: commands.pwd }, { cwd: dir() })
      expectBytes(atDefault.stdout, utf8(`${dir()}\n`))
      const relative = yield* run({ argv: commands.pwd, cwd: "sub" }, { cwd: dir() })
      expectBytes(relative.stdout, utf8(`${join(dir(), "sub")}\n`))
      const absolute = yield* run({ argv: commands.pwd, cwd: dir() }, { cwd: join(dir(), "sub") })
      expectBytes(absolute.stdout, utf8(`${dir()}\n`))
      expect(absolute.audits[0]?.cwd).toBe(dir())
    }))

const badCwd = <E>({ commands, dir, marker, run, test }: SuiteContext<E>, what: "missing" | "file") => {
  const reason = what === "missing" ? "CwdNotFound" : "CwdNotDirectory"
  const name = what === "missing"
    ? "a missing cwd fails with SpawnError CwdNotFound and runs nothing"
    : "a cwd that is a file fails with SpawnError CwdNotDirectory and runs nothing"
  return test("cwd")(name, () =>
    Effect.gen(function*() {
      const touched = marker()
      const cwd = join(dir(), what)
      const error = yield* Effect.flip(run({ argv: commands.touch(touched), cwd }))
      expect(error).toMatchObject({ _tag: "SpawnError", reason, cwd })
      expect(existsSync(touched)).toBe(false)
    }))
}

export const registerCwd = <E>(ctx: SuiteContext<E>): void => {
  describe("cwd", () => {
    layerCwd(ctx)
    badCwd(ctx, "missing")
    badCwd(ctx, "file")
  })
}
