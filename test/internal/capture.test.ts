/**
 * Capture memory and the edges the properties do not reach: what a capture reserves grows with what it keeps, never
 * the whole cap up front; the tail and both modes stay bounded by the cap however much and however finely the
 * stream comes; read errors in every mode.
 */
import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import type { Keep } from "../../src/Exec.js"
import { makeCapture } from "../../src/internal/capture.js"

const keeps: ReadonlyArray<Keep> = ["head", "tail", "both"]
const MiB = 1024 * 1024

// A full collection before each measurement, so retained memory is measured, not garbage (vitest runs without
// --expose-gc; the flag set at run time takes effect in a new context).
setFlagsFromString("--expose-gc")
const collect: unknown = runInNewContext("gc")
/** Heap and ArrayBuffer bytes still reachable after a full collection. */
const retainedBytes = (): number => {
  if (typeof collect !== "function") throw new Error("gc is not available")
  collect()
  collect()
  const usage = process.memoryUsage()
  return usage.heapUsed + usage.arrayBuffers
}

/** This process's virtual memory size in KiB (reserved address space, committed or not). */
const vmSizeKiB = (): number => Number(/^VmSize:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1])

describe("makeCapture", () => {
  it("reserves address space as it keeps bytes, not the cap: 100 captures with a 4 GiB cap stay far below 400 GiB", () => {
    const before = vmSizeKiB()
    const captures = Array.from({ length: 100 }, () => {
      const capture = makeCapture(4 * 1024 * 1024 * 1024)
      // Two chunks: the second moves the first into a buffer, the step that reserved the whole cap before.
      capture.push(new Uint8Array(1000).fill(1))
      capture.push(new Uint8Array(1000).fill(2))
      return capture
    })
    const grownGiB = (vmSizeKiB() - before) / 1024 / 1024
    expect(captures.every((capture) => capture.kept() === 2000)).toBe(true)
    // 4 MiB or less per capture now; 4 GiB each (400 GiB) when the buffer was made with maxByteLength = cap.
    expect(grownGiB).toBeLessThan(1)
  })

  it("keeps the bytes exactly across the buffer's growth steps", () => {
    const capture = makeCapture(10 * 1024 * 1024)
    const chunk = (i: number) => new Uint8Array(300 * 1024).map((_, j) => (i * 7 + j) % 251)
    const chunks = Array.from({ length: 40 }, (_, i) => chunk(i))
    for (const bytes of chunks) capture.push(bytes)
    const kept = Buffer.concat(chunks).subarray(0, 10 * 1024 * 1024)
    expect(capture.kept()).toBe(kept.length)
    expect(capture.truncated()).toBe(true)
    expect(Buffer.from(capture.bytes()).equals(kept)).toBe(true)
  })

  it("a read error marks the capture truncated and keeps the first reason", () => {
    const capture = makeCapture(100)
    capture.push(new Uint8Array([1, 2, 3]))
    expect([capture.truncated(), capture.readError()]).toEqual([false, undefined])
    capture.fail("EIO: i/o error")
    capture.fail("later")
    expect([capture.truncated(), capture.readError(), Array.from(capture.bytes())]).toEqual([true, "EIO: i/o error", [1, 2, 3]])
  })

  describe.each(keeps)("keep %s", (keep) => {
    it("a read error marks the capture truncated, keeps the first reason and the bytes so far", () => {
      const capture = makeCapture(4, keep)
      capture.push(new Uint8Array([1, 2, 3]))
      capture.fail("EIO: i/o error")
      capture.fail("later")
      expect([capture.truncated(), capture.readError(), Array.from(capture.bytes()), capture.omitted()]).toEqual([
        true,
        "EIO: i/o error",
        [1, 2, 3],
        undefined
      ])
      // Past the cap as well: the cut and the read error are both reported.
      capture.push(new Uint8Array([4, 5, 6]))
      expect(capture.omitted()).toEqual({ offset: keep === "head" ? 4 : keep === "tail" ? 0 : 2, bytes: 2 })
      expect(Array.from(capture.bytes())).toEqual(keep === "head" ? [1, 2, 3, 4] : keep === "tail" ? [3, 4, 5, 6] : [1, 2, 5, 6])
      expect([capture.truncated(), capture.readError(), capture.total(), capture.kept()]).toEqual([true, "EIO: i/o error", 6, 4])
    })

    it("bytes() handed out never change as more bytes arrive", () => {
      // 1 KiB chunks fill the tail's 64 KiB blocks exactly; a block handed out by bytes() must not be reused.
      const capture = makeCapture(64 * 1024, keep)
      const chunk = (i: number) => new Uint8Array(1024).fill(i % 256)
      for (let i = 0; i < 64; i++) capture.push(chunk(i))
      const early = capture.bytes()
      const copy = Buffer.from(early)
      for (let i = 64; i < 400; i++) capture.push(chunk(i))
      expect(Buffer.compare(early, copy)).toBe(0)
      expect(capture.kept()).toBe(64 * 1024)
    })

    it("256 MiB in fresh 64 KiB chunks through a 1 MiB cap retains under 64 MiB, and keeps the right bytes", () => {
      const before = retainedBytes()
      const capture = makeCapture(MiB, keep)
      // A fresh buffer per chunk, as a pipe hands them over: a capture that kept them all would retain 256 MiB.
      for (let i = 0; i < 4096; i++) capture.push(new Uint8Array(64 * 1024).fill(i % 251))
      const grown = retainedBytes() - before
      const bytes = capture.bytes()
      const valueAt = (offset: number) => Math.floor(offset / (64 * 1024)) % 251
      const streamOffset = (k: number) =>
        keep === "head" || (keep === "both" && k < MiB / 2) ? k : 4096 * 64 * 1024 - MiB + k
      expect(bytes.length).toBe(MiB)
      for (const k of [0, 1, 64 * 1024 - 1, 64 * 1024, MiB / 2 - 1, MiB / 2, MiB - 1]) {
        expect(bytes[k]).toBe(valueAt(streamOffset(k)))
      }
      expect(capture.omitted()).toEqual({ offset: keep === "head" ? MiB : keep === "tail" ? 0 : MiB / 2, bytes: 255 * MiB })
      expect(grown).toBeLessThan(64 * MiB)
    })

    it("2 MiB in 1-byte chunks through a 1 MiB cap retains under 16 MiB (no bookkeeping per chunk kept)", () => {
      const stream = new Uint8Array(2 * MiB).map((_, i) => (i * 31) % 256)
      const before = retainedBytes()
      const capture = makeCapture(MiB, keep)
      // Views of one buffer: a capture keeping a view per byte would retain ~100 MiB of typed-array objects.
      for (let i = 0; i < stream.length; i++) capture.push(stream.subarray(i, i + 1))
      const grown = retainedBytes() - before
      const expected = keep === "head"
        ? stream.subarray(0, MiB)
        : keep === "tail"
        ? stream.subarray(MiB)
        : Buffer.concat([stream.subarray(0, MiB / 2), stream.subarray((3 * MiB) / 2)])
      expect(Buffer.compare(capture.bytes(), expected)).toBe(0)
      expect(grown).toBeLessThan(16 * MiB)
    })
  })

  it.each(["tail", "both"] as const)(
    "%s: 1 GiB through a 1 MiB cap in 64 KiB chunks takes well under a second (no copy of the window per chunk)",
    (keep) => {
      const pool = Array.from({ length: 64 }, (_, i) => new Uint8Array(64 * 1024).fill(i))
      const capture = makeCapture(MiB, keep)
      const started = performance.now()
      for (let i = 0; i < 16384; i++) capture.push(pool[i % 64] ?? new Uint8Array(0))
      capture.bytes()
      const elapsedMs = performance.now() - started
      // ~2-15 ms here (head: ~1-5 ms); copying the window on every chunk takes seconds.
      expect(capture.total()).toBe(1024 * MiB)
      expect(elapsedMs).toBeLessThan(1000)
    }
  )
})
