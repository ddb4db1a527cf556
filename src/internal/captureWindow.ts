/**
 * Where a capture keeps its bytes: the first `cap` (`headWindow`), the last `cap` (`TailWindow`) or both ends
 * (`bothWindow`). Each keeps at most `cap` bytes however much arrives, and counts the rest.
 */

/** The bytes a capture keeps, before read errors and the cut are accounted for. */
export interface Window {
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
export const headWindow = (cap: number): Window => {
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

/** True when the chunk is most of its buffer (Node's own pipe reads are), so keeping it pins little else. */
const ownsItsBuffer = (chunk: Uint8Array) => chunk.byteLength * 2 >= chunk.buffer.byteLength

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
export class TailWindow implements Window {
  private segments: Array<Uint8Array> = []
  /** Index of the oldest live segment (dropping from the front of a long array by `shift` copies it). */
  private front = 0
  /** The open block of short chunks, logically after every segment; never larger than the cap. */
  private block: Uint8Array | undefined
  private blockLength = 0
  /** Full blocks handed to the queue, which may be reused once dropped; never one handed out by `bytes()`. */
  private readonly blocks = new WeakSet<ArrayBufferLike>()
  private spare: Uint8Array | undefined
  /** Bytes in the live segments and the block: `min(total, cap)` after each push. */
  private keptBytes = 0
  private totalBytes = 0

  constructor(private readonly cap: number) {}

  push(chunk: Uint8Array): void {
    this.totalBytes += chunk.length
    if (this.cap === 0 || chunk.length === 0) return
    if (chunk.length >= this.cap) {
      // The chunk alone fills the window: everything before it goes.
      const last = chunk.subarray(chunk.length - this.cap)
      this.reset(last.length >= SHARE_MIN && ownsItsBuffer(chunk) ? last : last.slice())
      return
    }
    if (chunk.length >= SHARE_MIN && ownsItsBuffer(chunk)) {
      this.closeBlock()
      this.segments.push(chunk)
    } else {
      this.copyIntoBlocks(chunk)
    }
    this.keptBytes += chunk.length
    this.trim()
  }

  total(): number {
    return this.totalBytes
  }

  kept(): number {
    return this.keptBytes
  }

  bytes(): Uint8Array {
    if (this.keptBytes === 0) return EMPTY
    const only = this.segments[this.front]
    if (this.front === this.segments.length - 1 && this.blockLength === 0 && only !== undefined) {
      // The caller may hold on to it: never reuse it as a block.
      this.blocks.delete(only.buffer)
      return only
    }
    const out = new Uint8Array(this.keptBytes)
    let offset = 0
    for (let i = this.front; i < this.segments.length; i++) {
      const segment = this.segments[i] ?? EMPTY
      out.set(segment, offset)
      offset += segment.length
    }
    if (this.block !== undefined) out.set(this.block.subarray(0, this.blockLength), offset)
    this.reset(out)
    return out
  }

  private reset(segment: Uint8Array): void {
    this.segments = [segment]
    this.front = 0
    this.blockLength = 0
    this.keptBytes = segment.length
  }

  private closeBlock(): void {
    const block = this.block
    if (block === undefined || this.blockLength === 0) return
    // A full block is handed over as it is; a part of one is copied, so the block can be reused and a short
    // segment never pins 64 KiB.
    if (this.blockLength === block.length) {
      this.segments.push(block)
      this.blocks.add(block.buffer)
      this.block = undefined
    } else {
      this.segments.push(block.slice(0, this.blockLength))
    }
    this.blockLength = 0
  }

  private copyIntoBlocks(chunk: Uint8Array): void {
    for (let offset = 0; offset < chunk.length;) {
      if (this.block === undefined) {
        this.block = this.spare ?? new Uint8Array(Math.min(BLOCK, this.cap))
        this.spare = undefined
      }
      const block = this.block
      const take = Math.min(block.length - this.blockLength, chunk.length - offset)
      block.set(take === chunk.length ? chunk : chunk.subarray(offset, offset + take), this.blockLength)
      this.blockLength += take
      offset += take
      if (this.blockLength === block.length) this.closeBlock()
    }
  }

  /** Drops the oldest bytes beyond the cap. The block alone never exceeds it, so a segment is there to drop. */
  private trim(): void {
    while (this.keptBytes > this.cap) {
      const oldest = this.segments[this.front]
      if (oldest === undefined) return
      const excess = this.keptBytes - this.cap
      if (oldest.length <= excess) {
        this.segments[this.front++] = EMPTY
        this.keptBytes -= oldest.length
        if (this.blocks.delete(oldest.buffer)) this.spare = new Uint8Array(oldest.buffer)
      } else {
        this.segments[this.front] = oldest.subarray(excess)
        this.keptBytes -= excess
      }
    }
    if (this.front > 1024 && this.front * 2 > this.segments.length) {
      this.segments = this.segments.slice(this.front)
      this.front = 0
    }
  }
}

/**
 * The first `floor(cap / 2)` bytes and the last `cap - floor(cap / 2)`: bytes past the head part go to a tail
 * window, so until the cap is exceeded the two parts together are the whole stream in order.
 */
export const bothWindow = (cap: number): Window => {
  const headCap = Math.floor(cap / 2)
  const head = headWindow(headCap)
  const tail = new TailWindow(cap - headCap)
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
