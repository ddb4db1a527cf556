/**
 * Bounded, byte-exact capture of one output stream. The cap keeps the head, the tail or both ends of the stream;
 * everything else is only counted, so memory is bounded by the cap however much the child writes, while the pipe is
 * still drained.
 */
import type { Keep } from "../Exec.js"

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

/** The bytes a capture keeps, before read errors and the cut are accounted for. */
interface Window {
  readonly push: (chunk: Uint8Array) => void
  readonly total: () => number
  readonly kept: () => number
  readonly bytes: () => Uint8Array
}

const EMPTY = new Uint8Array(0)

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
const headWindow = (cap: number): Window => {
  let first: Uint8Array | undefined
  let buffer: ResizableArrayBuffer | undefined
  let keptBytes = 0
  let total = 0
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
    bytes: () => buffer !== undefined ? new Uint8Array(buffer, 0, keptBytes) : first ?? EMPTY
  }
}

/** Chunks at least this long are kept as they came; shorter ones are copied into blocks. */
const SHARE_MIN = 16 * 1024
/** Size of a block collecting short chunks. */
const BLOCK = 64 * 1024

/**
 * The last `cap` bytes, as a queue of segments trimmed at the front as bytes arrive. Long chunks (Node's pipe reads
 * own their buffer) are kept without a copy: 1 GiB through a 1 MiB tail in 64 KiB chunks costs about what the head
 * costs (a ring buffer copies every byte: 35 ms more per GiB here). Short chunks are copied into 64 KiB blocks, so
 * the queue holds at most about `2 * cap / SHARE_MIN` segments (1-byte chunks would otherwise cost ~100 bytes of
 * bookkeeping per byte kept), and a chunk that is a small view of a larger buffer is copied, not pinned. A block
 * that falls off the front is reused for the next one (allocating a fresh 64 KiB block per 64 KiB of 4 KiB chunks
 * tripled the time per GiB). Memory is the cap plus one chunk (the front segment, partly dropped) plus two blocks.
 * `bytes()` assembles the queue once and keeps the result as its only segment.
 */
const tailWindow = (cap: number): Window => {
  let segments: Array<Uint8Array> = []
  /** Index of the oldest live segment (dropping from the front of a long array by `shift` copies it). */
  let front = 0
  /** The open block of short chunks, logically after every segment; never larger than the cap. */
  let block: Uint8Array | undefined
  let blockLength = 0
  /** Full blocks handed to the queue, which may be reused once dropped; never one handed out by `bytes()`. */
  const blocks = new WeakSet<ArrayBufferLike>()
  let spare: Uint8Array | undefined
  /** Bytes in the live segments and the block: `min(total, cap)` after each push. */
  let keptBytes = 0
  let total = 0

  const ownsItsBuffer = (chunk: Uint8Array) => chunk.byteLength * 2 >= chunk.buffer.byteLength
  const reset = (segment: Uint8Array) => {
    segments = [segment]
    front = 0
    blockLength = 0
    keptBytes = segment.length
  }
  const closeBlock = () => {
    if (block === undefined || blockLength === 0) return
    // A full block is handed over as it is; a part of one is copied, so the block can be reused and a short
    // segment never pins 64 KiB.
    if (blockLength === block.length) {
      segments.push(block)
      blocks.add(block.buffer)
      block = undefined
    } else {
      segments.push(block.slice(0, blockLength))
    }
    blockLength = 0
  }
  const copyIntoBlocks = (chunk: Uint8Array) => {
    for (let offset = 0; offset < chunk.length;) {
      if (block === undefined) {
        block = spare ?? new Uint8Array(Math.min(BLOCK, cap))
        spare = undefined
      }
      const take = Math.min(block.length - blockLength, chunk.length - offset)
      block.set(take === chunk.length ? chunk : chunk.subarray(offset, offset + take), blockLength)
      blockLength += take
      offset += take
      if (blockLength === block.length) closeBlock()
    }
  }
  /** Drops the oldest bytes beyond the cap. The block alone never exceeds it, so a segment is there to drop. */
  const trim = () => {
    while (keptBytes > cap) {
      const oldest = segments[front]
      if (oldest === undefined) return
      const excess = keptBytes - cap
      if (oldest.length <= excess) {
        segments[front++] = EMPTY
        keptBytes -= oldest.length
        if (blocks.delete(oldest.buffer)) spare = new Uint8Array(oldest.buffer)
      } else {
        segments[front] = oldest.subarray(excess)
        keptBytes -= excess
      }
    }
    if (front > 1024 && front * 2 > segments.length) {
      segments = segments.slice(front)
      front = 0
    }
  }
  return {
    push: (chunk) => {
      total += chunk.length
      if (cap === 0 || chunk.length === 0) return
      if (chunk.length >= cap) {
        // The chunk alone fills the window: everything before it goes.
        const last = chunk.subarray(chunk.length - cap)
        reset(last.length >= SHARE_MIN && ownsItsBuffer(chunk) ? last : last.slice())
        return
      }
      if (chunk.length >= SHARE_MIN && ownsItsBuffer(chunk)) {
        closeBlock()
        segments.push(chunk)
      } else {
        copyIntoBlocks(chunk)
      }
      keptBytes += chunk.length
      trim()
    },
    total: () => total,
    kept: () => keptBytes,
    bytes: () => {
      if (keptBytes === 0) return EMPTY
      const only = segments[front]
      if (front === segments.length - 1 && blockLength === 0 && only !== undefined) {
        // The caller may hold on to it: never reuse it as a block.
        blocks.delete(only.buffer)
        return only
      }
      const out = new Uint8Array(keptBytes)
      let offset = 0
      for (let i = front; i < segments.length; i++) {
        const segment = segments[i] ?? EMPTY
        out.set(segment, offset)
        offset += segment.length
      }
      if (block !== undefined) out.set(block.subarray(0, blockLength), offset)
      reset(out)
      return out
    }
  }
}

/**
 * The first `floor(cap / 2)` bytes and the last `cap - floor(cap / 2)`: bytes past the head part go to a tail
 * window, so until the cap is exceeded the two parts together are the whole stream in order.
 */
const bothWindow = (cap: number): Window => {
  const headCap = Math.floor(cap / 2)
  const head = headWindow(headCap)
  const tail = tailWindow(cap - headCap)
  let assembled: { readonly total: number; readonly bytes: Uint8Array } | undefined
  const total = () => head.total() + tail.total()
  return {
    push: (chunk) => {
      const room = headCap - head.total()
      if (room > 0) {
        head.push(chunk.length <= room ? chunk : chunk.subarray(0, room))
        if (chunk.length <= room) return
        tail.push(chunk.subarray(room))
      } else {
        tail.push(chunk)
      }
    },
    total,
    kept: () => head.kept() + tail.kept(),
    bytes: () => {
      if (tail.kept() === 0) return head.bytes()
      if (head.kept() === 0) return tail.bytes()
      if (assembled?.total !== total()) {
        const [first, last] = [head.bytes(), tail.bytes()]
        const bytes = new Uint8Array(first.length + last.length)
        bytes.set(first)
        bytes.set(last, first.length)
        assembled = { total: total(), bytes }
      }
      return assembled.bytes
    }
  }
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
  const window = keep === "head" ? headWindow(cap) : keep === "tail" ? tailWindow(cap) : bothWindow(cap)
  const cutAt = keep === "head" ? cap : keep === "tail" ? 0 : Math.floor(cap / 2)
  let readError: string | undefined
  return {
    push: window.push,
    total: window.total,
    kept: window.kept,
    truncated: () => window.total() > cap || readError !== undefined,
    bytes: window.bytes,
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
