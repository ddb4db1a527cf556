/**
 * `RunningProcess.output` for a backend whose pipes are `Stream`s (the `CommandExecutor` backend, the test layer's
 * fake processes): each stream read to its end into its capture, a read error recorded in the capture.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type { Capture } from "./capture.js"

/** Reads a stream to its end into `capture`, pulling chunk by chunk (cheaper per run than `Stream.runForEachChunk`). */
const drainStream = (stream: Stream.Stream<Uint8Array, unknown>, capture: Capture): Effect.Effect<void> =>
  Effect.scoped(Effect.flatMap(Stream.toPull(stream), (pull) => {
    const loop: Effect.Effect<void> = Effect.matchEffect(pull, {
      // None: the end of the stream. Some(error): a read error, which ends the capture early and is recorded in it;
      // how the process ended is still reported from its exit status.
      onFailure: (error) =>
        Option.isSome(error)
          ? Effect.sync(() => capture.fail(error.value instanceof Error ? error.value.message : String(error.value)))
          : Effect.void,
      onSuccess: (chunk) => {
        for (const bytes of chunk) capture.push(bytes)
        return loop
      }
    })
    return loop
  }))

/** `RunningProcess.output` for a backend whose pipes are `Stream`s: both drained concurrently. */
export const drainStreams = (
  stdout: Stream.Stream<Uint8Array, unknown>,
  stderr: Stream.Stream<Uint8Array, unknown>
) =>
(stdoutCapture: Capture, stderrCapture: Capture): Effect.Effect<void> =>
  Effect.zipWith(drainStream(stdout, stdoutCapture), drainStream(stderr, stderrCapture), () => undefined, {
    concurrent: true
  })
