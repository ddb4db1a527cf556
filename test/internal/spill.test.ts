/** Spill files: a new private file per stream, every byte up to `maxBytes`, refusals as typed errors, never thrown. */
import { afterEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawnSync } from "node:child_process"
import {
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync
} from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { makeSpill, type Spill } from "../../src/internal/spill.js"

const dirs: Array<string> = []
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "enr-spill-"))
  dirs.push(dir)
  return dir
}
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

/** Pseudo-random bytes, so a misplaced or repeated chunk shows. */
const noise = (length: number, seed: number): Uint8Array => {
  const bytes = new Uint8Array(length)
  let x = seed
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    bytes[i] = x >>> 24
  }
  return bytes
}

/** Opens a spill, pushes `chunks`, closes it; what the spill said, read after the close. */
const spillAll = (options: Parameters<typeof makeSpill>[0], chunks: ReadonlyArray<Uint8Array>) =>
  Effect.scoped(Effect.map(makeSpill(options), (spill) => {
    for (const chunk of chunks) spill.push(chunk)
    return spill
  }))

const report = (spill: Spill) => ({ written: spill.written(), truncated: spill.truncated(), error: spill.error() })

/** Runs `effect` with the process umask set to `mask`. */
const withUmask = <A, E, R>(mask: number, effect: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => process.umask(mask)),
    () => effect,
    (previous) => Effect.sync(() => process.umask(previous))
  )

describe("makeSpill", () => {
  it.effect("writes every byte exactly, in order, whatever the chunking (empty and 5 MiB chunks included)", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const stream = noise(6 * 1024 * 1024 + 13, 7)
      const cuts = [0, 1, 1, 4096, 70_000, 70_001, 5 * 1024 * 1024 + 70_001, stream.length]
      const chunks = cuts.slice(1).map((end, i) => stream.subarray(cuts[i] ?? 0, end))
      const spill = yield* spillAll({ dir, name: "run.stdout" }, chunks)
      expect(spill.path).toBe(join(dir, "run.stdout"))
      expect(report(spill)).toEqual({ written: stream.length, truncated: false, error: undefined })
      expect(Buffer.compare(readFileSync(spill.path), stream)).toBe(0)
    }))

  it.effect("the file is mode 0600 whatever the umask (0 would give 0600 anyway; 0277 would leave 0400)", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      for (const mask of [0, 0o077, 0o277]) {
        const name = `umask-${mask.toString(8)}`
        const spill = yield* withUmask(mask, spillAll({ dir, name }, [new Uint8Array([1, 2, 3])]))
        expect([name, statSync(spill.path).mode & 0o777]).toEqual([name, 0o600])
        expect(report(spill)).toEqual({ written: 3, truncated: false, error: undefined })
        expect(Array.from(readFileSync(spill.path))).toEqual([1, 2, 3])
      }
    }))

  it.effect("an existing name is refused with a SpillError naming the path; the file is left as it was", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const file = join(dir, "taken")
      writeFileSync(file, "precious", { mode: 0o644 })
      const error = yield* Effect.flip(spillAll({ dir, name: "taken" }, [new Uint8Array([1])]))
      expect(error._tag).toBe("SpillError")
      expect(error.path).toBe(file)
      expect(error.message).toContain(file)
      expect(error.message).toContain("EEXIST")
      expect(readFileSync(file, "utf8")).toBe("precious")
      expect(statSync(file).mode & 0o777).toBe(0o644)
    }))

  it.effect("a symlink at the name is refused, not followed: its target is neither written nor created", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const outside = tempDir()
      const target = join(outside, "target")
      writeFileSync(target, "precious")
      symlinkSync(target, join(dir, "link"))
      symlinkSync(join(outside, "not-yet"), join(dir, "dangling"))
      for (const name of ["link", "dangling"]) {
        const error = yield* Effect.flip(spillAll({ dir, name }, [new Uint8Array([1])]))
        expect([name, error._tag]).toEqual([name, "SpillError"])
        expect(lstatSync(join(dir, name)).isSymbolicLink()).toBe(true)
      }
      expect(readFileSync(target, "utf8")).toBe("precious")
      expect(existsSync(join(outside, "not-yet"))).toBe(false)
    }))

  it.effect("maxBytes cuts the file: the rest is only counted, and truncated says more arrived", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const stream = noise(14, 3)
      const cut = yield* spillAll({ dir, name: "cut", maxBytes: 10 }, [stream.subarray(0, 7), stream.subarray(7)])
      expect(report(cut)).toEqual({ written: 10, truncated: true, error: undefined })
      expect(Array.from(readFileSync(cut.path))).toEqual(Array.from(stream.subarray(0, 10)))
      // Exactly maxBytes is not truncated; one more byte is.
      const exact = yield* spillAll({ dir, name: "exact", maxBytes: 14 }, [stream.subarray(0, 7), stream.subarray(7)])
      expect(report(exact)).toEqual({ written: 14, truncated: false, error: undefined })
      const zero = yield* spillAll({ dir, name: "zero", maxBytes: 0 }, [new Uint8Array(0), new Uint8Array([1])])
      expect(report(zero)).toEqual({ written: 0, truncated: true, error: undefined })
      expect(readFileSync(zero.path).length).toBe(0)
    }))

  it.effect("a missing directory, or a name that is not one path component, is a SpillError naming the path", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const missing = yield* Effect.flip(spillAll({ dir: join(dir, "gone"), name: "out" }, []))
      expect(missing.message).toContain(join(dir, "gone", "out"))
      expect(missing.message).toContain("ENOENT")
      for (const name of ["", ".", "..", "a/b", "../escape", "nul\u0000"]) {
        const error = yield* Effect.flip(spillAll({ dir, name }, []))
        expect([name, error._tag]).toEqual([name, "SpillError"])
      }
      expect(readdirSync(dir)).toEqual([])
      expect(readdirSync(join(dir, ".."))).not.toContain("escape")
    }))

  it.effect("the file stays after the scope closes, its descriptor closed; a push after that is recorded, not written", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const spill = yield* spillAll({ dir, name: "kept" }, [new Uint8Array([1, 2, 3])])
      expect(Array.from(readFileSync(spill.path))).toEqual([1, 2, 3])
      const openHere = readdirSync("/proc/self/fd").flatMap((fd) => {
        try {
          return [readlinkSync(join("/proc/self/fd", fd))]
        } catch {
          return [] // the descriptor readdir itself used, gone by now
        }
      })
      expect(openHere).not.toContain(spill.path)
      expect(() => spill.push(new Uint8Array([4]))).not.toThrow()
      expect(spill.error()).toBe("the spill file was closed before the stream ended")
      expect(Array.from(readFileSync(spill.path))).toEqual([1, 2, 3])
    }))

  it("a failed write (EFBIG past `ulimit -f`) stops spilling and is recorded, never thrown", () => {
    const dir = tempDir()
    const spillModule = fileURLToPath(new URL("../../src/internal/spill.ts", import.meta.url))
    // A child with a 4 KiB file size limit (dash counts 512-byte blocks) and SIGXFSZ ignored, so writes past it fail
    // with EFBIG: the first write of the 16 KiB chunk is cut at 4 KiB, the next one fails.
    const script = `
      const Effect = await import("effect/Effect")
      const { makeSpill } = await import(${JSON.stringify(spillModule)})
      const reports = await Effect.runPromise(Effect.scoped(Effect.map(makeSpill({ dir: ${JSON.stringify(dir)}, name: "big" }), (spill) => {
        const report = () => ({ written: spill.written(), truncated: spill.truncated(), error: spill.error() })
        spill.push(new Uint8Array(16384).fill(7))
        const first = report()
        spill.push(new Uint8Array(10).fill(8))
        return [first, report()]
      })))
      process.stdout.write(JSON.stringify(reports))`
    const child = spawnSync(
      "/bin/sh",
      ["-c", "trap '' XFSZ; ulimit -f 8; exec \"$0\" --import tsx --input-type=module -e \"$1\"", process.execPath, script],
      { cwd: fileURLToPath(new URL("../..", import.meta.url)), encoding: "utf8", env: { ...process.env, TSX_DISABLE_CACHE: "1" } }
    )
    expect(child.stderr).toBe("")
    const reports: unknown = JSON.parse(child.stdout)
    // The cut write is retried for the rest of the chunk, which fails at once; the next chunk is not tried.
    const report = { written: 4096, truncated: false, error: expect.stringContaining("EFBIG") }
    expect(reports).toEqual([report, report])
    expect(Array.from(readFileSync(join(dir, "big")))).toEqual(Array.from(new Uint8Array(4096).fill(7)))
  })
})
