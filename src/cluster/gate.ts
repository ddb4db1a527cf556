/**
 * Admission on a worker: a per-tenant cap on runs in flight, a worker-wide cap, and a bounded number of runs waiting
 * per tenant. One more than that fails at once with `FleetError` "Busy": back-pressure the caller sees, never an
 * unbounded queue.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { FleetError } from "../Errors.js"
import * as FleetMetrics from "./metrics.js"

export interface Admission {
  /** Waits for a run slot (tenant and worker), held until the scope closes. */
  readonly slot: Effect.Effect<void, never, Scope.Scope>
}

export interface TenantGate {
  /** Takes a place in the tenant's line on this worker (until the scope closes), or fails with "Busy". */
  readonly admit: (tenant: string, requestId: string) => Effect.Effect<Admission, FleetError, Scope.Scope>
}

export interface GateSettings {
  readonly concurrency: number
  readonly tenantConcurrency: number
  readonly queue: number
}

/** One tenant's line on this worker. */
interface Line {
  readonly tenant: string
  readonly permits: Effect.Semaphore
  /** Admitted runs of the tenant: running plus waiting. */
  admitted: number
  running: number
}

const report = (line: Line) =>
  FleetMetrics.setTenant(line.tenant, { running: line.running, waiting: line.admitted - line.running })

/** A slot in the tenant's permits and the worker's, held in the scope. */
const slotIn = (worker: Effect.Semaphore, line: Line): Effect.Effect<void, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.zipRight(line.permits.take(1), worker.take(1)).pipe(
      Effect.zipRight(Effect.suspend(() => {
        line.running += 1
        return report(line)
      }))
    ),
    () =>
      Effect.zipRight(worker.release(1), line.permits.release(1)).pipe(
        Effect.zipRight(Effect.suspend(() => {
          line.running -= 1
          return report(line)
        }))
      )
  ).pipe(Effect.asVoid)

const busy = (line: Line, settings: GateSettings, requestId: string) =>
  Effect.zipRight(
    FleetMetrics.countRequest("busy"),
    Effect.fail(
      new FleetError({
        reason: "Busy",
        requestId,
        message: `tenant ${JSON.stringify(line.tenant)} has ${line.admitted} runs on this worker (cap ${
          settings.tenantConcurrency
        } running + ${settings.queue} waiting); nothing ran`
      })
    )
  )

export const makeTenantGate = (settings: GateSettings): Effect.Effect<TenantGate> =>
  Effect.map(Effect.makeSemaphore(settings.concurrency), (worker) => {
    const lines = new Map<string, Line>()
    const lineOf = (tenant: string): Line => {
      const existing = lines.get(tenant)
      if (existing !== undefined) return existing
      const line = { tenant, permits: Effect.unsafeMakeSemaphore(settings.tenantConcurrency), admitted: 0, running: 0 }
      lines.set(tenant, line)
      return line
    }
    const enter = (line: Line) =>
      Effect.acquireRelease(
        Effect.suspend(() => {
          line.admitted += 1
          return report(line)
        }),
        () =>
          Effect.suspend(() => {
            line.admitted -= 1
            // A tenant with nothing admitted is forgotten, so the map holds only tenants with work here.
            if (line.admitted === 0) lines.delete(line.tenant)
            return report(line)
          })
      )
    return {
      admit: (tenant, requestId) =>
        Effect.suspend(() => {
          const line = lineOf(tenant)
          return line.admitted >= settings.tenantConcurrency + settings.queue
            ? busy(line, settings, requestId)
            : Effect.as(enter(line), { slot: slotIn(worker, line) })
        })
    }
  })
