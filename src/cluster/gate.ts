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
  readonly admit: (
    tenant: string,
    requestId: string,
    caps?: TenantCaps | undefined
  ) => Effect.Effect<Admission, FleetError, Scope.Scope>
}

/** A tenant's registered caps: they lower the worker's, never raise them. */
export interface TenantCaps {
  readonly concurrency?: number | undefined
  readonly queue?: number | undefined
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
  /** The caps in force for the line (the worker's, lowered by the tenant's when the line was opened). */
  readonly runningCap: number
  readonly queueCap: number
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

const busy = (line: Line, requestId: string) =>
  Effect.zipRight(
    FleetMetrics.countRequest("busy"),
    Effect.fail(
      new FleetError({
        reason: "Busy",
        requestId,
        message: `tenant ${JSON.stringify(line.tenant)} has ${line.admitted} runs on this worker (cap ${
          line.runningCap
        } running + ${line.queueCap} waiting); nothing ran`
      })
    )
  )

export const makeTenantGate = (settings: GateSettings): Effect.Effect<TenantGate> =>
  Effect.map(Effect.makeSemaphore(settings.concurrency), (worker) => {
    const lines = new Map<string, Line>()
    const lineOf = (tenant: string, caps: TenantCaps | undefined): Line => {
      const existing = lines.get(tenant)
      if (existing !== undefined) return existing
      const lower = (worker: number, own: number | undefined) =>
        own === undefined || !Number.isInteger(own) || own < 0 ? worker : Math.min(worker, own)
      const runningCap = Math.max(1, lower(settings.tenantConcurrency, caps?.concurrency))
      const queueCap = lower(settings.queue, caps?.queue)
      const line = { tenant, permits: Effect.unsafeMakeSemaphore(runningCap), runningCap, queueCap, admitted: 0, running: 0 }
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
      admit: (tenant, requestId, caps) =>
        Effect.suspend(() => {
          const line = lineOf(tenant, caps)
          return line.admitted >= line.runningCap + line.queueCap
            ? busy(line, requestId)
            : Effect.as(enter(line), { slot: slotIn(worker, line) })
        })
    }
  })
