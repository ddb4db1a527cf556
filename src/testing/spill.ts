/**
 * Topic "spill": each stream, whole (up to `spill.maxBytes`), also goes to a new file (mode 0600) in `spill.dir`,
 * whatever the cap keeps; the result names the files, which the caller owns.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import { dirname, join } from "node:path"
import type { ExecResult } from "../Exec.js"
import * as NativeRunner from "../NativeRunner.js"
import { concat, expectBytes, pattern, utf8 } from "./bytes.js"
import type { SuiteContext } from "./context.js"

/** A fresh directory in the suite's, removed (with the files spilt into it) once `use` is done. */
const withSpillDir = <E>(ctx: SuiteContext<E>) =>
<A, Err, R>(use: (dir: string) => Effect.Effect<A, Err, R>): Effect.Effect<A, Err, R> =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const dir = ctx.marker()
      mkdirSync(dir)
      return dir
    }),
    use,
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  )

/** The spill files of `result`, checked to be new files in `dir`, readable by their owner only. */
const spilt = (result: ExecResult, dir: string): { readonly stdout: Uint8Array; readonly stderr: Uint8Array } => {
  const files = [result.stdoutFile, result.stderrFile]
  expect(files.map((file) => file === undefined ? undefined : dirname(file))).toEqual([dir, dir])
  expect(new Set(files).size).toBe(2)
  const [stdout, stderr] = files.map((file) => {
    expect((statSync(file ?? "").mode & 0o777).toString(8)).toBe("600")
    return new Uint8Array(readFileSync(file ?? ""))
  })
  return { stdout: stdout ?? new Uint8Array(0), stderr: stderr ?? new Uint8Array(0) }
}

const everyByte = <E>(ctx: SuiteContext<E>) =>
  ctx.test("spill")("every byte of each stream goes to its own new 0600 file, whatever the caps keep", () =>
    withSpillDir(ctx)((dir) =>
      Effect.gen(function*() {
        const out = concat(pattern(1000, 1), pattern(1000, 2), pattern(1000, 3))
        const err = utf8("eeeeeeeeee")
        const argv = ctx.commands.write([
          ["stdout", out.subarray(0, 1500)],
          ["stderr", err],
          ["stdout", out.subarray(1500)]
        ])
        const limits = { maxStdoutBytes: 100, maxStderrBytes: 4 }
        const first = yield* ctx.run({ argv, limits, spill: { dir } })
        const files = spilt(first, dir)
        expectBytes(files.stdout, out)
        expectBytes(files.stderr, err)
        // The result is what it would be without spilling.
        expectBytes(first.stdout, out.subarray(0, 100))
        expectBytes(first.stderr, utf8("eeee"))
        expect(first).toMatchObject({ exitCode: 0, truncatedStdout: true, stdoutBytes: 3000, stderrBytes: 10 })
        // A second run gets files of its own; the first run's stay (the caller owns them).
        const second = yield* ctx.run({ argv, limits, spill: { dir } })
        expectBytes(spilt(second, dir).stdout, out)
        expect(readdirSync(dir).sort()).toEqual(
          [first.stdoutFile, first.stderrFile, second.stdoutFile, second.stderrFile]
            .map((file) => file?.slice(dir.length + 1))
            .sort()
        )
      })
    ))

const largeStream = <E>(ctx: SuiteContext<E>) =>
  ctx.test("spill")("a stream larger than a pipe holds is spilt whole while the result stays capped", () =>
    withSpillDir(ctx)((dir) =>
      Effect.gen(function*() {
        const stdin = pattern(300_000, 6)
        const result = yield* ctx.run({ argv: ctx.commands.cat, stdin, limits: { maxStdoutBytes: 1000 }, spill: { dir } })
        expectBytes(spilt(result, dir).stdout, stdin)
        expectBytes(result.stdout, stdin.subarray(0, 1000))
        expect(result).toMatchObject({ exitCode: 0, truncatedStdout: true, stdoutBytes: 300_000 })
      })
    ))

const maxBytesCutsTheFile = <E>(ctx: SuiteContext<E>) =>
  ctx.test("spill")("spill.maxBytes cuts the file, not the result; a silent stream gets an empty file", () =>
    withSpillDir(ctx)((dir) =>
      Effect.gen(function*() {
        const out = pattern(3000, 7)
        const argv = ctx.commands.write([["stdout", out.subarray(0, 2000)], ["stdout", out.subarray(2000)]])
        const result = yield* ctx.run({ argv, spill: { dir, maxBytes: 100 } })
        const files = spilt(result, dir)
        expectBytes(files.stdout, out.subarray(0, 100))
        expectBytes(files.stderr, new Uint8Array(0))
        expectBytes(result.stdout, out)
        expect(result).toMatchObject({ truncatedStdout: false, stdoutBytes: 3000 })
      })
    ))

const layerSpill = <E>(ctx: SuiteContext<E>) =>
  ctx.test("spill")("the layer's spill applies when the input sets none; the input's wins; none, no files", () =>
    withSpillDir(ctx)((layerDir) =>
      withSpillDir(ctx)((inputDir) =>
        Effect.gen(function*() {
          const bytes = utf8("spilt\n")
          const argv = ctx.commands.write([["stdout", bytes]])
          const byLayer = yield* ctx.run({ argv }, { spill: { dir: layerDir } })
          expectBytes(spilt(byLayer, layerDir).stdout, bytes)
          const byInput = yield* ctx.run({ argv, spill: { dir: inputDir } }, { spill: { dir: layerDir } })
          expectBytes(spilt(byInput, inputDir).stdout, bytes)
          expect(readdirSync(layerDir)).toHaveLength(2)
          const none = yield* ctx.run({ argv })
          expect(Object.keys(none)).not.toContain("stdoutFile")
          expect(Object.keys(none)).not.toContain("stderrFile")
        })
      )
    ))

const missingDir = <E>(ctx: SuiteContext<E>) =>
  ctx.test("spill")("a missing spill dir fails with SpawnError before anything runs (audited as not started)", () =>
    Effect.gen(function*() {
      const touched = ctx.marker()
      const dir = join(ctx.dir(), "missing")
      const error = yield* Effect.flip(NativeRunner.exec({ argv: ctx.commands.touch(touched), spill: { dir } }))
      expect(error._tag).toBe("SpawnError")
      expect(existsSync(touched)).toBe(false)
      expect(existsSync(dir)).toBe(false)
      const audits = yield* ctx.records
      expect(audits).toHaveLength(1)
      expect(audits[0]?.spawnError).toBeDefined()
      expect(audits[0]).toMatchObject({ stdoutBytes: 0, timedOut: false, interrupted: false })
    }).pipe(Effect.provide(ctx.withAudit({}))))

export const registerSpill = <E>(ctx: SuiteContext<E>): void => {
  describe("spill", () => {
    everyByte(ctx)
    largeStream(ctx)
    maxBytesCutsTheFile(ctx)
    layerSpill(ctx)
    missingDir(ctx)
  })
}
