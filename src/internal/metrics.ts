/** The runner's metrics, made once; `Metrics.ts` re-exports each with its documentation. */
import type * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import type { Outcome } from "../Metrics.js"

export const execs = Metric.counter("native_runner_execs_total", { description: "Execs by outcome" })

export const duration = Metric.histogram(
  "native_runner_exec_duration_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 18 }),
  "Wall time of execs in milliseconds"
)

export const bytesCaptured = Metric.counter("native_runner_bytes_captured_total", {
  description: "Output bytes kept in results"
})

export const bytesDropped = Metric.counter("native_runner_bytes_dropped_total", {
  description: "Output bytes drained past the caps and dropped"
})

export const inFlight = Metric.gauge("native_runner_in_flight", { description: "Processes running now" })

// One tagged counter per outcome, made once: `Metric.tagged` per exec would build and hash a new key every time.
const countAs = (outcome: Outcome): Effect.Effect<void> => Metric.increment(Metric.tagged(execs, "outcome", outcome))
const execsByOutcome: Readonly<Record<Outcome, Effect.Effect<void>>> = {
  ok: countAs("ok"),
  non_zero: countAs("non_zero"),
  timeout: countAs("timeout"),
  signal: countAs("signal"),
  interrupted: countAs("interrupted"),
  spawn_error: countAs("spawn_error"),
  invalid_input: countAs("invalid_input")
}

export const recordOutcome = (outcome: Outcome): Effect.Effect<void> => execsByOutcome[outcome]
