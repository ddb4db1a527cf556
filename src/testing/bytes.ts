/** Byte helpers of the behaviour suite: building test bytes, and comparing them with a readable report. */
import { expect } from "@effect/vitest"

const encoder = new TextEncoder()

export const utf8 = (text: string): Uint8Array => encoder.encode(text)

export const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}

/** Deterministic bytes covering every byte value (NUL, invalid UTF-8, ...). */
export const pattern = (length: number, seed = 0): Uint8Array =>
  Uint8Array.from({ length }, (_, i) => (i * 7 + seed) % 256)

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

/** Byte-exact comparison that reports the lengths and the first difference instead of dumping two large arrays. */
export const expectBytes = (actual: Uint8Array, expected: Uint8Array): void => {
  const mismatch = actual.findIndex((b, i) => b !== expected[i])
  const firstDiff = mismatch === -1 && actual.length !== expected.length
    ? Math.min(actual.length, expected.length)
    : mismatch
  const window = (bytes: Uint8Array) => hex(bytes.subarray(Math.max(0, firstDiff - 8), Math.max(0, firstDiff) + 8))
  expect({ length: actual.length, firstDiff, around: window(actual) })
    .toEqual({ length: expected.length, firstDiff: -1, around: window(expected) })
}
