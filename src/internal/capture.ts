/**
 * Bounded, byte-exact capture of one output stream. Chunks are kept until the cap is reached; everything after it is
 * only counted, so memory is bounded by the cap however much the child writes, while the pipe is still drained.
 */
export interface Capture {
  /** Feeds one chunk as it arrives from the pipe. */
  readonly push: (chunk: Uint8Array) => void
  /** Total bytes seen, kept or not. */
  readonly total: () => number
  /** Bytes kept: `min(total, cap)`. */
  readonly kept: () => number
  /** True when more than `cap` bytes arrived. */
  readonly truncated: () => boolean
  /** The first `min(total, cap)` bytes. */
  readonly bytes: () => Uint8Array
  /**
   * Records that reading the pipe failed (the backend stops reading): the capture counts as truncated, since bytes
   * after the failure were never seen, and `readError` says why.
   */
  readonly fail: (reason: string) => void
  readonly readError: () => string | undefined
}

// The project's lib is ES2022, which has no typings for resizable ArrayBuffers (ES2024; Node 20 has them at run time).
interface ResizableArrayBuffer extends ArrayBuffer {
  readonly maxByteLength: number
  resize(byteLength: number): void
}
const resizableBuffer = (maxByteLength: number): ResizableArrayBuffer =>
  Reflect.construct(ArrayBuffer, [0, { maxByteLength }])

/** Smallest address-space reservation of a capture buffer. */
const MIN_RESERVATION = 1024 * 1024

/**
 * Kept bytes go into a resizable `ArrayBuffer`: the kernel commits pages only as they are written, and `bytes()` is
 * a view, not a second copy (keeping chunks and concatenating them at the end needs twice the captured size at the
 * peak). Its reservation grows with what is kept, four times at a step (a copy each time, so the copies add up to
 * about a third of the final size, and the peak of one is below the final size), never `cap` up front: a 4 GiB cap
 * must not reserve 4 GiB of address space per run (a few concurrent runs exhaust a `ulimit -v`). The first chunk is
 * kept as it came, so the common small output costs no copy at all.
 */
export const makeCapture = (cap: number): Capture => {
  let first: Uint8Array | undefined
  let buffer: ResizableArrayBuffer | undefined
  let keptBytes = 0
  let total = 0
  let readError: string | undefined
  /** A buffer holding the kept bytes with room for `needed`. */
  const reserve = (needed: number): ResizableArrayBuffer => {
    if (buffer !== undefined && buffer.maxByteLength >= needed) return buffer
    const next = resizableBuffer(Math.min(cap, Math.max(MIN_RESERVATION, needed * 4)))
    next.resize(keptBytes)
    const kept = buffer !== undefined ? new Uint8Array(buffer, 0, keptBytes) : first
    if (kept !== undefined) new Uint8Array(next).set(kept)
    first = undefined
    buffer = next
    return next
  }
  return {
    push: (chunk) => {
      total += chunk.length
      const room = cap - keptBytes
      if (room <= 0 || chunk.length === 0) return
      const part = chunk.length <= room ? chunk : chunk.subarray(0, room)
      if (buffer === undefined && first === undefined) {
        // Node hands each pipe read over as its own buffer, so keeping a view does not pin unrelated memory.
        first = part
      } else {
        const target = reserve(keptBytes + part.length)
        target.resize(keptBytes + part.length)
        new Uint8Array(target, keptBytes, part.length).set(part)
      }
      keptBytes += part.length
    },
    total: () => total,
    kept: () => keptBytes,
    truncated: () => total > cap || readError !== undefined,
    bytes: () => buffer !== undefined ? new Uint8Array(buffer, 0, keptBytes) : first ?? new Uint8Array(0),
    fail: (reason) => {
      readError ??= reason
    },
    readError: () => readError
  }
}
