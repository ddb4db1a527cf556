/**
 * A worker's client endpoint: HTTPS (TLS 1.3, the worker's fleet certificate) where a client with a tenant credential
 * and no database URL hands a run to the fleet. The credential is checked before the body is read; the tenant is the
 * credential's, never a field of the request; the worker sends the run through its own cluster, so any worker's
 * endpoint reaches every worker.
 *
 * Wire (JSON; bytes base64, as the entity's Schemas):
 * - `POST /v1/exec` `{ requestId?, delivery?, spread?, input }` -> 200 `{ result }` or `{ error }` (a typed failure of
 *   the run: the same errors as a local exec, plus `FleetError`);
 * - `POST /v1/exec-stream` (same body) -> 200 NDJSON, one `{ event }` per line, or a last `{ error }`;
 * - `POST /v1/cancel` `{ requestId }` -> interrupts that request of the same tenant and answers once it has settled;
 * - 401 `{ error }` (FleetError "Unauthenticated") for a missing, unknown, wrong or revoked credential; 400 for a body
 *   that is not a request; 413 past the body cap.
 */
import type { Sharding } from "@effect/cluster/Sharding"
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type * as Scope from "effect/Scope"
import type { IncomingMessage, ServerResponse } from "node:http"
import * as https from "node:https"
import { FleetError } from "../Errors.js"
import type { NativeRunner } from "../NativeRunner.js"
import { currentRequestId, makeFleetRunners } from "./client.js"
import type { FleetTls } from "./pki.js"
import { fromWire, WireError, WireEvent, WireInput, WireResult } from "./protocol.js"
import { bearerToken } from "./secrets.js"
import { authenticate, type Tenant } from "./tenants.js"

/** The largest request body (stdin travels in it, as base64). */
export const MAX_BODY_BYTES = 16 * 1024 * 1024

/** Connections the client endpoint holds open at once; more are refused by the kernel's accept and closed. */
export const MAX_CONNECTIONS = 512

/**
 * Request bytes in flight on this endpoint, from the body's arrival to the request's answer (its stdin lives that
 * long, several times over while decoded and passed on): at most one full-size request per tenant, two in all. A
 * request past the budget is answered `Busy` (429) before its body is read.
 */
export const TENANT_BODY_BUDGET = MAX_BODY_BYTES
export const TOTAL_BODY_BUDGET = 2 * MAX_BODY_BYTES
/** Requests up to this size count against their tenant's budget only, so large ones cannot shut out small ones. */
const SMALL_BODY_BYTES = 1024 * 1024

/** Reserves request bytes per tenant and in all; `take` is false when either budget would be exceeded. */
const makeBodyBudget = () => {
  const perTenant = new Map<string, number>()
  let total = 0
  return {
    take: (tenant: string, bytes: number): boolean => {
      const mine = perTenant.get(tenant) ?? 0
      const counted = bytes > SMALL_BODY_BYTES ? bytes : 0
      if (mine + bytes > TENANT_BODY_BUDGET || total + counted > TOTAL_BODY_BUDGET) return false
      perTenant.set(tenant, mine + bytes)
      total += counted
      return true
    },
    release: (tenant: string, bytes: number): void => {
      const left = (perTenant.get(tenant) ?? 0) - bytes
      if (left <= 0) perTenant.delete(tenant)
      else perTenant.set(tenant, left)
      total -= bytes > SMALL_BODY_BYTES ? bytes : 0
    }
  }
}

/** How long a connection that has not authenticated a request may stay silent. */
const UNAUTHENTICATED_IDLE_MS = 10_000

/** What a client sends: the run, and how it is delivered. The tenant is not here: it is the credential's. */
export const EndpointRequest = Schema.Struct({
  requestId: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200)), { exact: true }),
  delivery: Schema.optionalWith(Schema.Literal("at-most-once", "at-least-once"), { exact: true }),
  spread: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 64)), { exact: true }),
  input: WireInput
})
export type EndpointRequest = typeof EndpointRequest.Encoded

const CancelRequest = Schema.Struct({ requestId: Schema.String })

const encodeError = Schema.encodeSync(WireError)
const encodeResult = Schema.encodeSync(WireResult)
const encodeEvent = Schema.encodeSync(WireEvent)
const decodeRequest = Schema.decodeUnknownEither(Schema.parseJson(EndpointRequest))
const decodeCancel = Schema.decodeUnknownEither(Schema.parseJson(CancelRequest))

const json = (res: ServerResponse, status: number, body: unknown) => {
  if (res.headersSent) return
  const text = JSON.stringify(body)
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  res.end(text)
}

const refuse = (res: ServerResponse, status: number, message: string) =>
  json(res, status, { error: encodeError(new FleetError({ reason: "Unauthenticated", message })) })

/** The body, up to `MAX_BODY_BYTES`; `undefined` when it was larger (the request is answered 413 and dropped). */
const readBody = (req: IncomingMessage) =>
  new Promise<string | undefined>((resolve, reject) => {
    const chunks: Array<Buffer> = []
    let size = 0
    req.on("data", (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_BODY_BYTES) {
        resolve(undefined)
        req.destroy()
        return
      }
      chunks.push(chunk)
    })
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    req.on("error", reject)
  })


/**
 * Serves the client endpoint on `listen` until the scope closes. Needs the cluster (`Sharding`) to hand runs to and
 * the database to check credentials against.
 */
export const serveClients = (
  listen: { readonly host: string; readonly port: number },
  material: FleetTls,
  grace: Duration.DurationInput
): Effect.Effect<void, FleetError, Scope.Scope | Sharding | SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<SqlClient.SqlClient>()
    const runners = yield* makeFleetRunners
    const cache = new Map<string, NativeRunner["Type"]>()
    const runnerFor = (tenant: Tenant, request: typeof EndpointRequest.Type) => {
      const settings = {
        tenant: tenant.name,
        spread: request.spread ?? 16,
        delivery: request.delivery ?? "at-most-once",
        caps: { concurrency: tenant.concurrency, queue: tenant.queue }
      } as const
      const key = JSON.stringify(settings)
      const existing = cache.get(key)
      if (existing !== undefined) return existing
      const made = runners(settings)
      // Keys are bounded by the registered tenants (x 64 spreads x 2 deliveries); a change of caps makes a new one.
      if (cache.size > 4096) cache.clear()
      cache.set(key, made)
      return made
    }
    // Requests in flight by tenant and request id, for /v1/cancel.
    const inFlight = new Map<string, Fiber.RuntimeFiber<unknown, unknown>>()
    // Every request's fiber, for the drain.
    const running = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
    const flightKey = (tenant: string, requestId: string) => `${tenant}\u0000${requestId}`

    const run = (tenant: Tenant, request: typeof EndpointRequest.Type, res: ServerResponse, stream: boolean) => {
      const runner = runnerFor(tenant, request)
      const input = fromWire(request.input)
      const withId = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        request.requestId === undefined ? effect : Effect.locally(effect, currentRequestId, Option.some(request.requestId))
      const program: Effect.Effect<void> = stream
        ? Effect.suspend(() => {
          res.writeHead(200, { "content-type": "application/x-ndjson" })
          return runner.execStream(input).pipe(
            Stream.runForEach((event) => Effect.sync(() => res.write(JSON.stringify({ event: encodeEvent(event) }) + "\n"))),
            Effect.matchEffect({
              onSuccess: () => Effect.sync(() => res.end()),
              onFailure: (error) => Effect.sync(() => res.end(JSON.stringify({ error: encodeError(error) }) + "\n"))
            })
          )
        })
        : runner.exec(input).pipe(Effect.matchEffect({
          onSuccess: (result) => Effect.sync(() => json(res, 200, { result: encodeResult(result) })),
          onFailure: (error) => Effect.sync(() => json(res, 200, { error: encodeError(error) }))
        }))
      const fiber = Runtime.runFork(runtime)(withId(program))
      const key = request.requestId === undefined ? undefined : flightKey(tenant.name, request.requestId)
      if (key !== undefined) inFlight.set(key, fiber)
      running.add(fiber)
      fiber.addObserver(() => {
        running.delete(fiber)
        if (key !== undefined && inFlight.get(key) === fiber) inFlight.delete(key)
      })
      // The client went away before the answer: the run is interrupted (its worker kills the tree).
      res.on("close", () => {
        if (!res.writableFinished) Runtime.runFork(runtime)(Fiber.interrupt(fiber))
      })
    }

    const budget = makeBodyBudget()
    const handle = async (req: IncomingMessage, res: ServerResponse) => {
      const route = req.method === "POST" ? req.url : undefined
      if (route !== "/v1/exec" && route !== "/v1/exec-stream" && route !== "/v1/cancel") {
        // Nothing is said to an unauthenticated caller beyond "not here".
        return json(res, 404, { error: "not found" })
      }
      const token = bearerToken(req.headers.authorization)
      if (token === undefined) return refuse(res, 401, "no credential (Authorization: Bearer ...)")
      const tenant = await Runtime.runPromiseExit(runtime)(authenticate(token))
      // Authenticated: the request may wait for its run in silence (the run has its own timeout).
      if (Exit.isSuccess(tenant)) req.socket.setTimeout(0)
      if (Exit.isFailure(tenant)) {
        const storage = JSON.stringify(tenant.cause).includes("\"Storage\"")
        return storage
          ? json(res, 503, { error: encodeError(new FleetError({ reason: "Storage", message: "the fleet's database is unreachable" })) })
          : refuse(res, 401, "the credential was refused")
      }
      // The body's bytes are reserved before it is read, for as long as the request lasts: what a client declares
      // (the parser delivers no more), or the whole limit when it does not say.
      const declared = Number(req.headers["content-length"])
      const cost = Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, MAX_BODY_BYTES + 1) : MAX_BODY_BYTES
      if (!budget.take(tenant.value.name, cost)) {
        return json(res, 429, {
          error: encodeError(new FleetError({
            reason: "Busy",
            message: `too many request bytes in flight on this worker's endpoint (at most ${TENANT_BODY_BUDGET} per tenant, ` +
              `${TOTAL_BODY_BUDGET} in all, stdin included); nothing ran, retry later`
          }))
        })
      }
      res.once("close", () => budget.release(tenant.value.name, cost))
      const body = await readBody(req)
      if (body === undefined) return json(res, 413, { error: `the request is larger than ${MAX_BODY_BYTES} bytes` })
      if (route === "/v1/cancel") {
        const cancel = decodeCancel(body)
        if (cancel._tag === "Left") return json(res, 400, { error: "expected { requestId }" })
        const fiber = inFlight.get(flightKey(tenant.value.name, cancel.right.requestId))
        if (fiber === undefined) return json(res, 200, { cancelled: false })
        await Runtime.runPromise(runtime)(Fiber.interrupt(fiber))
        return json(res, 200, { cancelled: true })
      }
      const request = decodeRequest(body)
      if (request._tag === "Left") return json(res, 400, { error: `not a run request: ${request.left.message.slice(0, 500)}` })
      run(tenant.value, request.right, res, route === "/v1/exec-stream")
    }

    const server = https.createServer({
      cert: material.cert,
      key: material.key,
      minVersion: "TLSv1.3",
      // A caller that connects and says nothing holds nothing for long.
      handshakeTimeout: 5_000,
      headersTimeout: 10_000,
      requestTimeout: 60_000,
      connectionsCheckingInterval: 1_000,
      keepAliveTimeout: 5_000
    }, (req, res) => {
      handle(req, res).catch(() => json(res, 500, { error: "internal error" }))
    })
    server.on("tlsClientError", (_error, socket) => socket.destroy())
    // A bound on open connections, so idle ones cannot take every file descriptor of the worker.
    server.maxConnections = MAX_CONNECTIONS
    // headersTimeout does not cover a connection that never starts a request (Node 20: one that sent nothing stayed
    // open indefinitely): until it is authenticated, 10 s without a byte closes it.
    server.setTimeout(UNAUTHENTICATED_IDLE_MS, (socket) => socket.destroy())
    yield* Effect.acquireRelease(
      Effect.async<void, FleetError>((resume) => {
        server.once("error", (error) =>
          resume(Effect.fail(new FleetError({ reason: "Unavailable", message: `the client endpoint could not listen on ${listen.host}:${listen.port}: ${error.message}` }))))
        server.listen(listen.port, listen.host, () => resume(Effect.void))
      }),
      () =>
        Effect.gen(function*() {
          // No new connections; idle keep-alive ones go now, requests in flight get the grace, then are cut (their
          // runs interrupted).
          server.close()
          server.closeIdleConnections()
          yield* Fiber.awaitAll([...running]).pipe(Effect.timeout(grace), Effect.ignore)
          server.closeAllConnections()
        })
    )
  })
