/**
 * What a layer settles when it is built: its options (one Schema, decoded once; a misspelt key is an error naming it)
 * and the host's own cwd (read once; deleting it later breaks only runs that rely on it).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import * as NativeRunner from "../src/NativeRunner.js"
import * as NativeRunnerTest from "../src/NativeRunnerTest.js"

/** Options as a JavaScript caller might pass them, misspelt keys and all. */
const given = (options: unknown): NativeRunner.Options => options as NativeRunner.Options

const buildError = <E>(layer: Layer.Layer<NativeRunner.NativeRunner, E>) =>
  Effect.flip(Effect.scoped(Layer.build(layer)))

describe("layer options", () => {
  it.live.each([
    ["maxStdout", { maxStdout: 5 }],
    ["timout", { timout: "1 second" }],
    ["sandbox.fallbak", { sandbox: { policy: { workspace: "/tmp" }, fallbak: "unsandboxed" } }],
    ["sandbox.policy.netwrok", { sandbox: { policy: { workspace: "/tmp", netwrok: "host" } } }],
    ["resourceLimits.maxProcs", { resourceLimits: { maxProcs: 3 } }]
  ])("a misspelt key (%s) fails the live layer with InvalidInput naming it", ([key, options]) =>
    Effect.gen(function*() {
      const error = yield* buildError(NativeRunner.layerNode(given(options)))
      expect(error._tag).toBe("InvalidInput")
      expect(error._tag === "InvalidInput" && error.issues).toEqual([{ path: key, message: "is not a known field" }])
      expect(error.message).toContain(key)
    }))

  it.live.each([
    ["uid", { uid: 4_294_967_295, gid: 65534 }],
    ["uid", { uid: 4_294_967_296, gid: 65534 }],
    ["gid", { uid: 65534, gid: 4_294_967_296 }],
    ["uid", { uid: 0, gid: 65534 }]
  ] as const)("a sandbox user setpriv would turn into root (%s %j) fails the layer with InvalidInput", ([field, user]) =>
    Effect.gen(function*() {
      // (uid_t)-1 means "no change" to setresuid, and 2^32 wraps to 0: either would leave the program root.
      const error = yield* buildError(NativeRunner.layerNode({ sandbox: { policy: { workspace: "/tmp", user } } }))
      expect(error._tag === "InvalidInput" && error.issues).toEqual([
        { path: `sandbox.policy.user.${field}`, message: `${field} must be a whole number from 1 to 4294967294 (never root)` }
      ])
    }))

  it.live("the test layer refuses a misspelt key the same way", () =>
    Effect.gen(function*() {
      const error = yield* buildError(NativeRunnerTest.layerTest([], { maxStdout: 5 } as unknown as NativeRunnerTest.TestOptions))
      expect(error).toMatchObject({ _tag: "InvalidInput", issues: [{ path: "maxStdout", message: "is not a known field" }] })
    }))

  it.live("correct keys build, with the documented defaults applied", () =>
    Effect.gen(function*() {
      const runner = yield* NativeRunner.makeNode({ maxStdoutBytes: 5, timeout: "10 seconds" })
      const result = yield* runner.exec({ argv: ["sh", "-c", "printf 0123456789"] })
      expect([new TextDecoder().decode(result.stdout), result.truncatedStdout]).toEqual(["01234", true])
      const decoded = yield* NativeRunner.decodeOptions(NativeRunner.Options, {})
      expect(decoded).toMatchObject({
        maxStdoutBytes: NativeRunner.DEFAULTS.maxStdoutBytes,
        maxConcurrent: NativeRunner.DEFAULTS.maxConcurrent,
        keep: "head"
      })
    }).pipe(Effect.scoped))
})

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
