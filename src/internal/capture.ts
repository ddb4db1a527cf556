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

export const makeCapture = (cap: number): Capture => {
  const kept: Array<Uint8Array> = []
  let keptBytes = 0
  let total = 0
  return {
    push: (chunk) => {
      total += chunk.length
      const room = cap - keptBytes
      if (room <= 0 || chunk.length === 0) return
      // Node hands each pipe read over as its own buffer, so keeping views does not pin unrelated memory.
      const part = chunk.length <= room ? chunk : chunk.subarray(0, room)
      kept.push(part)
      keptBytes += part.length
    },
    total: () => total,
    kept: () => keptBytes,
    truncated: () => total > cap,
    bytes: () => {
      if (kept.length === 1 && kept[0] !== undefined) return kept[0]
      const out = new Uint8Array(keptBytes)
      let offset = 0
      for (const part of kept) {
        out.set(part, offset)
        offset += part.length
      }
      return out
    }
  }
}
