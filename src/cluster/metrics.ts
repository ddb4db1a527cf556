/**
 * The fleet's own metrics, beside the runner's (`Metrics`): what a worker holds per tenant and how requests ended.
 * Served in Prometheus text format by the worker's health endpoint.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"

/** How a fleet request was answered on the worker. */
export type RequestOutcome = "ran" | "repeat" | "lost" | "busy" | "rerun"

export const requests = Metric.counter("native_runner_fleet_requests_total", {
  description: "Fleet requests by how the worker answered them"
})
export const running = Metric.gauge("native_runner_fleet_running", { description: "Runs in flight per tenant" })
export const waiting = Metric.gauge("native_runner_fleet_queue_depth", { description: "Runs waiting for a slot per tenant" })

export const countRequest = (outcome: RequestOutcome): Effect.Effect<void> =>
  Metric.increment(Metric.tagged(requests, "outcome", outcome))

export const setTenant = (tenant: string, now: { readonly running: number; readonly waiting: number }): Effect.Effect<void> =>
  Effect.zipRight(
    Metric.set(Metric.tagged(running, "tenant", tenant), now.running),
    Metric.set(Metric.tagged(waiting, "tenant", tenant), now.waiting)
  )
