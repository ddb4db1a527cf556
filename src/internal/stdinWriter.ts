/**
 * Writes a `Stream` of bytes into a child's stdin (a pipe, or the helper's stdin connection) with backpressure: the
 * next chunk is pulled only once the last one left Node's buffer (`write` returned true, or "drain"), so what waits in
 * memory is one chunk and the kernel's pipe. Shared by the Node spawner and the spawn helper's host side.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
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
 * A stdin stream that dies is a bug of its own: said in the log, and the child's stdin ends there as for a failure.
 * The live writer and the test layer's collection both end their pull with it.
 */
export const logStdinDefect = (defect: unknown): Effect.Effect<void> =>
  Effect.logError("effect-native-runner: the stdin stream died; the child's stdin ends here", defect)

/**
 * Pulls `stream` into `writable` and ends it at the stream's end (or failure: the child reads EOF there). EPIPE and
 * resets are the child having stopped reading, never errors. Interrupted (the run ended), `forkStdinWriter` has
 * destroyed the writable first.
 */
const writeStdin = (writable: Writable, stream: Stream.Stream<Uint8Array, unknown>): Effect.Effect<void> => {
  writable.on("error", () => {})
  return Stream.runForEach(stream, (chunk) => writeChunk(writable, chunk)).pipe(
    Effect.catchAll(() => Effect.void),
    Effect.catchAllDefect(logStdinDefect),
    Effect.ensuring(Effect.sync(() => {
      if (!writable.destroyed) writable.end()
    }))
  )
}

/**
 * Starts `writeStdin` for one run without making the run wait for it: when the run's scope closes, the child's stdin
 * is destroyed and the writer interrupted in the background. A stream whose pull never returns (a silent source) would
 * otherwise hold the run's end until it produced something: interrupting it waits for the pull's own finalizer.
 * `writable` is where to write, once it is there (the spawn helper's stdin connection comes a little later).
 */
export const forkStdinWriter = (
  writable: Effect.Effect<Writable>,
  stream: Stream.Stream<Uint8Array, unknown>
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const held: { writable: Writable | undefined } = { writable: undefined }
    const fiber = yield* Effect.forkDaemon(Effect.interruptible(Effect.flatMap(writable, (target) => {
      held.writable = target
      return writeStdin(target, stream)
    })))
    yield* Effect.addFinalizer(() =>
      Effect.zipRight(
        Effect.sync(() => held.writable?.destroy()),
        Fiber.interruptFork(fiber)
      )
    )
  })

/**
 * Our own stdin as a stream, read only as the run pulls it, with `read()`: a pull that is given up leaves nothing
 * pending on our stdin (an async iterator's pending `next()` would take the next bytes, meant for a later run, and
 * hold the run's end until they came), and what was not read stays in our stdin's buffer. A read error (a socket
 * reset) fails the stream, which ends the child's stdin.
 */
export const ourStdin: Stream.Stream<Uint8Array, Error> = Stream.repeatEffectOption(
  Effect.async<Uint8Array, Option.Option<Error>>((resume) => {
    const input = process.stdin
    const cleanup = () => {
      input.off("readable", onReadable)
      input.off("end", onEnd)
      input.off("error", onError)
    }
    const tryRead = (): boolean => {
      const chunk: unknown = input.read()
      if (chunk !== null) {
        cleanup()
        resume(Effect.succeed(chunk instanceof Uint8Array ? chunk : new TextEncoder().encode(String(chunk))))
        return true
      }
      if (input.readableEnded) {
        cleanup()
        resume(Effect.fail(Option.none()))
        return true
      }
      return false
    }
    const onReadable = () => void tryRead()
    const onEnd = () => {
      cleanup()
      resume(Effect.fail(Option.none()))
    }
    const onError = (error: unknown) => {
      cleanup()
      resume(Effect.fail(Option.some(error instanceof Error ? error : new Error(String(error)))))
    }
    if (tryRead()) return
    input.on("readable", onReadable)
    input.once("end", onEnd)
    input.once("error", onError)
    return Effect.sync(cleanup)
  })
)
