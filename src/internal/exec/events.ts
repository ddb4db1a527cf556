/**
 * `execStream`: the same run as `exec`, with its chunks as events. A slow consumer never slows the run nor changes
 * its result: chunks wait in a bounded buffer (`EVENT_BUFFER` chunks of at most 64 KiB: about 16 MiB), and a chunk
 * that finds it full is dropped from the stream (never from the capture or the spill file) and counted in
 * `Exit.dropped`. `Started` and `Exit` are never dropped. Ending the stream early (take, interruption, a failed
 * consumer) interrupts the run, which kills its process tree like an interrupted `exec`.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import type { NativeRunnerError } from "../../Errors.js"
import { ExecEvent, type ExecResult } from "../../Exec.js"
import type { RunListener } from "../runner.js"

/** Chunks held for a slow consumer before they are dropped. */
export const EVENT_BUFFER = 256

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
      onStarted: (runId, pid) => void queue.unsafeOffer(ExecEvent.Started({ runId, pid })),
      onChunk: (stream, bytes) => {
        const event = stream === "stdout" ? ExecEvent.Stdout({ bytes }) : ExecEvent.Stderr({ bytes })
        if (chunks < EVENT_BUFFER && queue.unsafeOffer(event)) {
          chunks++
          return
        }
        dropped.chunks++
        dropped.bytes += bytes.length
      }
    }
    yield* Effect.forkScoped(Effect.flatMap(Effect.exit(run(listener)), (exit) => Queue.offer(queue, { _tag: "End", exit })))
    return Stream.fromQueue(queue).pipe(
      Stream.tap((item) => Effect.sync(() => {
        if (item._tag === "Stdout" || item._tag === "Stderr") chunks--
      })),
      Stream.takeUntil((item) => item._tag === "End"),
      Stream.mapEffect((item): Effect.Effect<ExecEvent, NativeRunnerError> =>
        item._tag !== "End"
          ? Effect.succeed(item)
          : Exit.match(item.exit, {
            onFailure: Effect.failCause,
            onSuccess: (result) => Effect.succeed(ExecEvent.Exit({ result, dropped: { ...dropped } }))
          })
      )
    )
  }))
