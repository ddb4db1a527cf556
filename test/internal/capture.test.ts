/** Capture memory: what a capture reserves grows with what it keeps, never the whole cap up front. */
import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { makeCapture } from "../../src/internal/capture.js"

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
})
