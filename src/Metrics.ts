/**
 * The runner's metrics, with `effect/Metric`: they reach any exporter wired to Effect's metric registry
 * (e.g. `@effect/opentelemetry`). Names follow Prometheus conventions.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"

/** How an exec ended, as the `outcome` tag of `execs`. */
export type Outcome = "ok" | "non_zero" | "timeout" | "signal" | "interrupted" | "spawn_error" | "invalid_input"

/** Execs by outcome. */
export const execs = Metric.counter("native_runner_execs_total", { description: "Execs by outcome" })

/** Wall time of execs that ran, in milliseconds. */
export const duration = Metric.histogram(
  "native_runner_exec_duration_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 18 }),
  "Wall time of execs in milliseconds"
)

/** Output bytes kept in results (stdout + stderr). */
export const bytesCaptured = Metric.counter("native_runner_bytes_captured_total", {
  description: "Output bytes kept in results"
})

/** Output bytes drained past the caps and dropped. */
export const bytesDropped = Metric.counter("native_runner_bytes_dropped_total", {
  description: "Output bytes drained past the caps and dropped"
})

/** Processes running right now. */
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

/** Counts one exec under its outcome. */
export const recordOutcome = (outcome: Outcome): Effect.Effect<void> => execsByOutcome[outcome]
