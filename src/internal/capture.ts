/**
 * Bounded, byte-exact capture of one output stream. The cap keeps the head, the tail or both ends of the stream;
 * everything else is only counted, so memory is bounded by the cap however much the child writes, while the pipe is
 * still drained.
 */
import type { Keep } from "../Exec.js"
import { bothWindow, headWindow, TailWindow } from "./captureWindow.js"

export interface Capture {
  /** Feeds one chunk as it arrives from the pipe. The chunk must not be modified afterwards (it may be kept as is). */
  readonly push: (chunk: Uint8Array) => void
  /** Total bytes seen, kept or not. */
  readonly total: () => number
  /** Bytes kept: `min(total, cap)`. */
  readonly kept: () => number
  /** True when more than `cap` bytes arrived, or reading failed. */
  readonly truncated: () => boolean
  /** The kept bytes in stream order: the head, the tail, or the head then the tail (see `omitted` for the cut). */
  readonly bytes: () => Uint8Array
  /**
   * Where the cap cut bytes out, or `undefined` when it dropped none: `bytes` bytes (`total - cap`) are missing at
   * `offset` in `bytes()`: `cap` (the end) for head, 0 for tail, the length of the head part for both.
   */
  readonly omitted: () => { readonly offset: number; readonly bytes: number } | undefined
  /**
   * Records that reading the pipe failed (the backend stops reading): the capture counts as truncated, since bytes
   * after the failure were never seen, and `readError` says why.
   */
  readonly fail: (reason: string) => void
  readonly readError: () => string | undefined
}

/**
 * A capture of one stream that keeps at most `cap` bytes: the first ones (`"head"`, the default), the last ones
 * (`"tail"`), or the first and the last half of the cap (`"both"`).
 *
 * @example
 * const capture = makeCapture(4, "both")
 * capture.push(new TextEncoder().encode("abcdefgh"))
 * capture.bytes() // "abgh"
 * capture.omitted() // { offset: 2, bytes: 4 }
 */
export const makeCapture = (cap: number, keep: Keep = "head"): Capture => {
  const window = keep === "head" ? headWindow(cap) : keep === "tail" ? new TailWindow(cap) : bothWindow(cap)
  const cutAt = keep === "head" ? cap : keep === "tail" ? 0 : Math.floor(cap / 2)
  let readError: string | undefined
  return {
    push: (chunk) => window.push(chunk),
    total: () => window.total(),
    kept: () => window.kept(),
    truncated: () => window.total() > cap || readError !== undefined,
    bytes: () => window.bytes(),
    omitted: () => {
      const total = window.total()
      return total > cap ? { offset: cutAt, bytes: total - cap } : undefined
    },
    fail: (reason) => {
      readError ??= reason
    },
    readError: () => readError
  }
}
