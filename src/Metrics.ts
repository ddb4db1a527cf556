/**
 * The runner's metrics, with `effect/Metric`: they reach any exporter wired to Effect's metric registry
 * (e.g. `@effect/opentelemetry`). Names follow Prometheus conventions.
 */
import * as internal from "./internal/metrics.js"

/** How an exec ended, as the `outcome` tag of `execs`. */
export type Outcome = "ok" | "non_zero" | "timeout" | "signal" | "interrupted" | "spawn_error" | "invalid_input"

/** Execs by outcome. */
export const execs = internal.execs

/** Wall time of execs that ran, in milliseconds. */
export const duration = internal.duration

/** Output bytes kept in results (stdout + stderr). */
export const bytesCaptured = internal.bytesCaptured

/** Output bytes drained past the caps and dropped. */
export const bytesDropped = internal.bytesDropped

/** Processes running right now. */
export const inFlight = internal.inFlight

/** Counts one exec under its outcome. */
export const recordOutcome = internal.recordOutcome
