/**
 * `execStream`: the same run as `exec`, with its chunks as events. A slow consumer never slows the run nor changes
 * its result: chunks wait in a bounded buffer (`EVENT_BUFFER` chunks of at most 64 KiB: about 16 MiB), and a chunk
 * that finds it full is dropped from the stream (never from the capture or the spill file) and counted in
 * `Exit.dropped`. `Started` and `Exit` are never dropped. Ending the stream early (take, interruption, a failed
 * consumer) interrupts the run, which kills its process tree like an interrupted `exec`.
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import type { NativeRunnerError } from "../../Errors.js"
import type { ExecEvent, ExecResult } from "../../Exec.js"
import type { RunListener } from "../runner.js"

/** The constructors of `ExecEvent`; `Exec.ExecEvent` re-exports them. */
export const execEvent = Data.taggedEnum<ExecEvent>()

/** Chunks held for a slow consumer before they are dropped. */
export const EVENT_BUFFER = 256

/** Resumes after the I/O callbacks of the current event-loop turn (`setImmediate`). */
const nextTurn: Effect.Effect<void> = Effect.async((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

type Item = ExecEvent | { readonly _tag: "End"; readonly exit: Exit.Exit<ExecResult, NativeRunnerError> }

export const execStreamOf = (
  run: (listener: RunListener) => Effect.Effect<ExecResult, NativeRunnerError>
): Stream.Stream<ExecEvent, NativeRunnerError> =>
  Stream.unwrapScoped(Effect.gen(function*() {
    // One slot more than the chunks may use, so `Started` always fits; `End` waits for room (offer suspends).
    const queue = yield* Queue.bounded<Item>(EVENT_BUFFER + 1)
    const dropped = { chunks: 0, bytes: 0 }
    let chunks = 0
    const listener: RunListener = {
      onStarted: (runId, pid) => void queue.unsafeOffer(execEvent.Started({ runId, pid })),
      onChunk: (stream, bytes) => {
        const event = stream === "stdout" ? execEvent.Stdout({ bytes }) : execEvent.Stderr({ bytes })
        if (chunks < EVENT_BUFFER && queue.unsafeOffer(event)) {
          chunks++
          return
        }
        dropped.chunks++
        dropped.bytes += bytes.length
      }
    }
    yield* Effect.forkScoped(Effect.flatMap(Effect.exit(run(listener)), (exit) => Queue.offer(queue, { _tag: "End", exit })))
    // Whole chunks of events per pull (no effect per event): the stream costs about as much per chunk of output as
    // the capture itself. `End` becomes the last event, or the stream's failure.
    let end: Exit.Exit<ExecResult, NativeRunnerError> | undefined
    let finished = false
    const pull: Effect.Effect<Chunk.Chunk<ExecEvent>, Option.Option<NativeRunnerError>> = Effect.suspend(() => {
      if (finished) return Effect.fail(Option.none())
      if (end !== undefined) {
        finished = true
        return Exit.match(end, {
          onFailure: (cause) => Effect.failCause(Cause.map(cause, Option.some)),
          onSuccess: (result) => Effect.succeed(Chunk.of(execEvent.Exit({ result, dropped: { ...dropped } })))
        })
      }
      // After the first item, one turn of the event loop for what the same I/O phase brings: chunks then come in
      // batches instead of one wake-up each (measured: 1 GiB took one pull per 64 KiB chunk, about 60 µs each).
      const batch = Effect.flatMap(Queue.take(queue), (first) =>
        Effect.zipRight(
          nextTurn,
          Effect.map(Queue.takeUpTo(queue, EVENT_BUFFER), (rest) => Chunk.prepend(rest, first))
        ))
      return Effect.map(batch, (items) => {
        const events: Array<ExecEvent> = []
        for (const item of items) {
          if (item._tag === "End") {
            end = item.exit
            break
          }
          if (item._tag === "Stdout" || item._tag === "Stderr") chunks--
          events.push(item)
        }
        return Chunk.unsafeFromArray(events)
      })
    })
    return Stream.repeatEffectChunkOption(pull)
  }))
