/** The host's own cwd is read once, when the layer is built; deleting it later breaks only runs that rely on it. */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import * as NativeRunner from "../../src/NativeRunner.js"

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)

/** Runs `use` with this process's cwd in a fresh directory, restoring the cwd afterwards whatever happens. */
const inTempCwd = <A, E, R>(use: (dir: string) => Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const previous = process.cwd()
      const dir = mkdtempSync(path.join(tmpdir(), "enr-hostcwd-"))
      process.chdir(dir)
      return { previous, dir }
    }),
    ({ dir }) => use(dir),
    ({ dir, previous }) =>
      Effect.sync(() => {
        process.chdir(previous)
        rmSync(dir, { recursive: true, force: true })
      })
  )

describe("host cwd", () => {
  it.live("deleted after the layer is built: the default cwd is a typed SpawnError, an explicit cwd still works", () =>
    inTempCwd((dir) =>
      Effect.gen(function*() {
        const runner = yield* NativeRunner.makeNode()
        rmSync(dir, { recursive: true })
        const error = yield* Effect.flip(runner.exec({ argv: ["true"] }))
        expect(error).toMatchObject({ _tag: "SpawnError", reason: "CwdNotFound", cwd: dir })
        const result = yield* runner.exec({ argv: ["pwd"], cwd: "/tmp" })
        expect([result.exitCode, text(result.stdout)]).toEqual([0, "/tmp\n"])
      }).pipe(Effect.scoped)
    ))

  it.live("deleted before the layer is built: the layer builds, and only an absolute cwd runs", () =>
    inTempCwd((dir) =>
      Effect.gen(function*() {
        rmSync(dir, { recursive: true })
        const runner = yield* NativeRunner.makeNode()
        const error = yield* Effect.flip(runner.exec({ argv: ["true"], cwd: "relative" }))
        expect(error).toMatchObject({ _tag: "SpawnError", reason: "CwdNotFound" })
        const result = yield* runner.exec({ argv: ["pwd"], cwd: "/" })
        expect([result.exitCode, text(result.stdout)]).toEqual([0, "/\n"])
      }).pipe(Effect.scoped)
    ))
})
