/**
 * A worker's health and metrics over HTTP: `GET /health` (JSON: worker id and status; open) and `GET /metrics` (every
 * Effect metric of the process in Prometheus text format, the fleet's and the runner's; only with the fleet's metrics
 * token as a bearer token, since the metrics name tenants).
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as MetricPair from "effect/MetricPair"
import * as MetricState from "effect/MetricState"
import type * as Scope from "effect/Scope"
import { createServer, type Server } from "node:http"
import { bearerToken, matchesHash } from "./secrets.js"

const escapeLabel = (value: string): string => value.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")

const labels = (pair: MetricPair.MetricPair.Untyped, extra: ReadonlyArray<readonly [string, string]> = []): string => {
  const all = [...pair.metricKey.tags.map((t) => [t.key, t.value] as const), ...extra]
  return all.length === 0 ? "" : `{${all.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`
}

/**
 * Effect's metric snapshot as Prometheus text exposition (0.0.4): the pairs grouped by metric name (a snapshot lists
 * one family's series apart), each family's HELP and TYPE once before all its samples, a histogram's buckets
 * cumulative with one `le="+Inf"` (Effect's boundaries already end in Infinity) equal to `_count`.
 */
export const prometheusText = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, Array<MetricPair.MetricPair.Untyped>>()
  for (const pair of pairs) {
    const family = families.get(pair.metricKey.name)
    if (family === undefined) families.set(pair.metricKey.name, [pair])
    else family.push(pair)
  }
  const lines: Array<string> = []
  for (const [name, members] of families) {
    const first = members[0]!
    const help = first.metricKey.description._tag === "Some" ? first.metricKey.description.value : undefined
    const state = first.metricState
    const type = MetricState.isCounterState(state)
      ? "counter"
      : MetricState.isGaugeState(state)
      ? "gauge"
      : MetricState.isHistogramState(state)
      ? "histogram"
      : undefined
    // Frequencies and summaries have no exposition here (none of ours is one).
    if (type === undefined) continue
    if (help !== undefined) lines.push(`# HELP ${name} ${help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`)
    lines.push(`# TYPE ${name} ${type}`)
    for (const pair of members) {
      const member = pair.metricState
      if (MetricState.isCounterState(member) && type === "counter") {
        lines.push(`${name}${labels(pair)} ${String(member.count)}`)
      } else if (MetricState.isGaugeState(member) && type === "gauge") {
        lines.push(`${name}${labels(pair)} ${String(member.value)}`)
      } else if (MetricState.isHistogramState(member) && type === "histogram") {
        for (const [bound, count] of member.buckets) {
          if (Number.isFinite(bound)) lines.push(`${name}_bucket${labels(pair, [["le", String(bound)]])} ${count}`)
        }
        lines.push(`${name}_bucket${labels(pair, [["le", "+Inf"]])} ${member.count}`)
        lines.push(`${name}_sum${labels(pair)} ${member.sum}`)
        lines.push(`${name}_count${labels(pair)} ${member.count}`)
      }
    }
  }
  return lines.join("\n") + "\n"
}

export interface HealthState {
  readonly workerId: string
  readonly draining: () => boolean
  /** False until the worker's runner and endpoints are up (503 "starting"). */
  readonly ready: () => boolean
  /**
   * SHA-256 of the bearer token `GET /metrics` asks for (the fleet directory's `metrics.token`): the metrics name
   * tenants and their load. Undefined: every `/metrics` request is refused.
   */
  readonly metricsTokenHash: Buffer | undefined
}

/** Whether `authorization` is `Bearer <token>` with the token whose SHA-256 is `expected`. */
const bearerMatches = (authorization: string | undefined, expected: Buffer | undefined): boolean => {
  const token = bearerToken(authorization)
  return expected !== undefined && token !== undefined && matchesHash(token, expected)
}

/** Serves health and metrics on `host:port` until the scope closes; returns the bound port. */
export const serveHealth = (
  listen: { readonly host: string; readonly port: number },
  state: HealthState
): Effect.Effect<number, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<Server & { boundPort: number }, Error>((resume) => {
      const server = createServer((request, response) => {
        if (request.method === "GET" && request.url === "/metrics") {
          if (!bearerMatches(request.headers.authorization, state.metricsTokenHash)) {
            response.writeHead(401, { "content-type": "text/plain", "www-authenticate": "Bearer" }).end(
              state.metricsTokenHash === undefined
                ? "no metrics.token in this worker's fleet directory: /metrics is closed\n"
                : "/metrics needs Authorization: Bearer <the fleet directory's metrics.token>\n"
            )
            return
          }
          const text = prometheusText(Metric.unsafeSnapshot())
          response.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(text)
        } else if (request.method === "GET" && request.url === "/health") {
          const status = state.draining() ? "draining" : state.ready() ? "ok" : "starting"
          response.writeHead(status === "ok" ? 200 : 503, { "content-type": "application/json" })
            .end(JSON.stringify({ workerId: state.workerId, status }) + "\n")
        } else {
          response.writeHead(404).end()
        }
      })
      server.once("error", (error) => resume(Effect.fail(error)))
      server.listen(listen.port, listen.host, () => {
        const address = server.address()
        const boundPort = typeof address === "object" && address !== null ? address.port : listen.port
        resume(Effect.succeed(Object.assign(server, { boundPort })))
      })
    }),
    (server) => Effect.async<void>((resume) => {
      server.close(() => resume(Effect.void))
      server.closeAllConnections()
    })
  ).pipe(Effect.map((server) => server.boundPort))
