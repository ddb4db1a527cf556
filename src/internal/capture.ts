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
}

// The project's lib is ES2022, which has no typings for resizable ArrayBuffers (ES2024; Node 20 has them at run time).
interface ResizableArrayBuffer extends ArrayBuffer {
  resize(byteLength: number): void
}
const resizableBuffer = (maxByteLength: number): ResizableArrayBuffer =>
  Reflect.construct(ArrayBuffer, [0, { maxByteLength }])

/**
 * Kept bytes go into one resizable `ArrayBuffer` whose maximum is the cap: the kernel commits pages only as they are
 * written, nothing is copied when it grows, and `bytes()` is a view, not a second copy (keeping chunks and
 * concatenating them at the end needs twice the captured size at the peak). The first chunk is kept as it came, so
 * the common small output costs no copy at all.
 */
export const makeCapture = (cap: number): Capture => {
  let first: Uint8Array | undefined
  let buffer: ResizableArrayBuffer | undefined
  let keptBytes = 0
  let total = 0
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
        if (buffer === undefined) {
          buffer = resizableBuffer(cap)
          buffer.resize(keptBytes)
          if (first !== undefined) new Uint8Array(buffer).set(first)
          first = undefined
        }
        buffer.resize(keptBytes + part.length)
        new Uint8Array(buffer, keptBytes, part.length).set(part)
      }
      keptBytes += part.length
    },
    total: () => total,
    kept: () => keptBytes,
    truncated: () => total > cap,
    bytes: () => buffer !== undefined ? new Uint8Array(buffer, 0, keptBytes) : first ?? new Uint8Array(0)
  }
}
