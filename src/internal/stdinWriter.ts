/**
 * Writes a `Stream` of bytes into a child's stdin (a pipe, or the helper's stdin connection) with backpressure: the
 * next chunk is pulled only once the last one left Node's buffer (`write` returned true, or "drain"), so what waits in
 * memory is one chunk and the kernel's pipe. Shared by the Node spawner and the spawn helper's host side.
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { Writable } from "node:stream"

/** The child stopped reading (exited, closed its stdin): the pull stops there. */
class Gone {
  readonly _tag = "Gone"
}

const writeChunk = (writable: Writable, chunk: Uint8Array): Effect.Effect<void, Gone> =>
  Effect.async<void, Gone>((resume) => {
    if (writable.destroyed || writable.writableEnded) return resume(Effect.fail(new Gone()))
    if (chunk.length === 0 || writable.write(chunk)) return resume(Effect.void)
    const onDrain = () => {
      writable.off("close", onClose)
      resume(Effect.void)
    }
    const onClose = () => {
      writable.off("drain", onDrain)
      resume(Effect.fail(new Gone()))
    }
    writable.once("drain", onDrain)
    writable.once("close", onClose)
    return Effect.sync(() => {
      writable.off("drain", onDrain)
      writable.off("close", onClose)
    })
  })

/**
 * Pulls `stream` into `writable` and ends it at the stream's end (or failure: the child reads EOF there). EPIPE and
 * resets are the child having stopped reading, never errors; interrupted (the run ended), the writable is destroyed.
 */
export const writeStdin = (writable: Writable, stream: Stream.Stream<Uint8Array, unknown>): Effect.Effect<void> => {
  writable.on("error", () => {})
  return Stream.runForEach(stream, (chunk) => writeChunk(writable, chunk)).pipe(
    Effect.catchAll(() => Effect.void),
    Effect.ensuring(Effect.sync(() => {
      if (!writable.destroyed) writable.end()
    })),
    Effect.onInterrupt(() => Effect.sync(() => writable.destroy()))
  )
}

/**
 * Our own stdin as a stream, read only as the run pulls it. Ending early leaves it open (`destroyOnReturn: false`):
 * the host's stdin is not ours to close. A read error (a socket reset) fails the stream, which ends the child's stdin.
 */
export const ourStdin: Stream.Stream<Uint8Array, Error> = Stream.suspend(() =>
  Stream.fromAsyncIterable(
    process.stdin.iterator({ destroyOnReturn: false }),
    (error) => error instanceof Error ? error : new Error(String(error))
  ).pipe(Stream.map((chunk: unknown) => chunk instanceof Uint8Array ? chunk : new TextEncoder().encode(String(chunk))))
)
