/**
 * A fleet client with no database credentials and no fleet certificate: it holds a tenant's credentials file (token
 * and the fleet's CA) and talks HTTPS to one worker's client endpoint (`endpoint.ts`), which hands the run to the
 * cluster. The CA is pinned (the system's CAs are not trusted) and the worker's certificate must name the host
 * dialled. An interrupted exec asks the endpoint to cancel the run and returns once the worker has settled it.
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import type { IncomingMessage } from "node:http"
import * as https from "node:https"
import { isIP } from "node:net"
import { FleetError, type NativeRunnerError } from "../Errors.js"
import { decodeInput, type ExecInput } from "../Exec.js"
import { NativeRunner } from "../NativeRunner.js"
import { currentRequestId } from "./client.js"
import { eventFromWire, resultFromWire, toWire, WireError, WireEvent, WireInput, WireResult } from "./protocol.js"
import type { Credentials } from "./tenants.js"

/** Where and how a client sends its runs. */
export interface HttpClientSettings {
  readonly url: URL
  readonly credentials: Credentials
  readonly spread: number
  readonly delivery: "at-most-once" | "at-least-once"
}

/** How long an interrupted exec waits for the endpoint to settle the run before it returns anyway. */
const CANCEL_BOUND_MS = 15_000

const encodeInput = Schema.encodeSync(WireInput)
const decodeResult = Schema.decodeUnknownEither(WireResult)
const decodeError = Schema.decodeUnknownEither(WireError)
const decodeEvent = Schema.decodeUnknownEither(WireEvent)

const unavailable = (message: string) => new FleetError({ reason: "Unavailable", message })

/** A parsed `https://HOST:PORT` endpoint URL, or why not. */
export const parseEndpointUrl = (text: string): URL | string => {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return `not a URL (https://HOST:PORT)`
  }
  if (url.protocol !== "https:") return `expected an https:// URL of a worker's client endpoint, got ${url.protocol}`
  if (url.username !== "" || url.password !== "") return "the URL must not carry a user or password; the credentials file does"
  return url
}

/** What a non-200 answer means for the caller. */
const failureOf = (status: number, body: string): FleetError => {
  let parsed: unknown
  try {
    parsed = JSON.parse(body)
  } catch {
    parsed = undefined
  }
  const wire = typeof parsed === "object" && parsed !== null && "error" in parsed ? decodeError(parsed.error) : undefined
  if (wire !== undefined && wire._tag === "Right" && wire.right._tag === "FleetError") return wire.right
  return unavailable(`the worker's endpoint answered ${status}: ${body.slice(0, 300)}`)
}

/** The client runner over HTTPS. */
export const make = (settings: HttpClientSettings): Effect.Effect<NativeRunner["Type"], never, import("effect/Scope").Scope> =>
  Effect.gen(function*() {
    const host = settings.url.hostname.replace(/^\[|\]$/g, "")
    const port = settings.url.port === "" ? 443 : Number(settings.url.port)
    const agent = new https.Agent({
      keepAlive: true,
      ca: settings.credentials.ca,
      minVersion: "TLSv1.3",
      ...(isIP(host) === 0 ? { servername: host } : {})
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => agent.destroy()))
    const post = (path: string, body: string, onResponse: (res: IncomingMessage) => void, onError: (error: Error) => void) => {
      const req = https.request({
        agent,
        host,
        port,
        path,
        method: "POST",
        headers: {
          authorization: `Bearer ${Redacted.value(settings.credentials.token)}`,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body)
        }
      }, onResponse)
      req.on("error", onError)
      req.end(body)
      return req
    }
    const collect = (res: IncomingMessage) =>
      new Promise<string>((resolve, reject) => {
        const chunks: Array<Buffer> = []
        res.on("data", (chunk: Buffer) => chunks.push(chunk))
        res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
        res.on("error", reject)
      })
    /** Asks the endpoint to interrupt `requestId` and waits (bounded) for it to say the run has settled. */
    const cancel = (requestId: string) =>
      Effect.async<void>((resume) => {
        const timer = setTimeout(() => resume(Effect.void), CANCEL_BOUND_MS)
        const done = () => {
          clearTimeout(timer)
          resume(Effect.void)
        }
        post("/v1/cancel", JSON.stringify({ requestId }), (res) => {
          res.resume()
          res.on("end", done)
          res.on("error", done)
        }, done)
      })
    const prepare = (input: ExecInput) =>
      Effect.gen(function*() {
        const decoded = yield* decodeInput(input)
        const requestId = Option.getOrElse(yield* FiberRef.get(currentRequestId), () => randomUUID())
        const body = JSON.stringify({
          requestId,
          delivery: settings.delivery,
          spread: settings.spread,
          input: encodeInput(yield* toWire(decoded))
        })
        return { requestId, body }
      })
    const connectFailure = (error: Error) =>
      unavailable(`the worker's endpoint ${settings.url.host} could not be reached: ${error.message}`)

    return NativeRunner.of({
      exec: (input) =>
        Effect.flatMap(prepare(input), ({ requestId, body }) =>
          Effect.async<import("../Exec.js").ExecResult, NativeRunnerError>((resume) => {
            let finished = false
            const req = post("/v1/exec", body, (res) => {
              collect(res).then((text) => {
                finished = true
                if (res.statusCode !== 200) return resume(Effect.fail(failureOf(res.statusCode ?? 0, text)))
                const parsed = JSON.parse(text) as { result?: unknown; error?: unknown }
                if (parsed.result !== undefined) {
                  const result = decodeResult(parsed.result)
                  return resume(result._tag === "Right"
                    ? Effect.succeed(resultFromWire(result.right))
                    : Effect.fail(unavailable("the worker's answer could not be read")))
                }
                const error = decodeError(parsed.error)
                resume(Effect.fail(error._tag === "Right" ? error.right : unavailable("the worker's answer could not be read")))
              }, (error: Error) => {
                finished = true
                resume(Effect.fail(connectFailure(error)))
              })
            }, (error) => {
              finished = true
              resume(Effect.fail(connectFailure(error)))
            })
            return Effect.suspend(() =>
              finished ? Effect.void : Effect.ensuring(cancel(requestId), Effect.sync(() => req.destroy()))
            )
          })
        ).pipe(Effect.withSpan("NativeRunnerCluster.exec", { attributes: { tenant: settings.credentials.tenant } })),
      execStream: (input) =>
        Stream.unwrap(Effect.map(prepare(input), ({ requestId, body }) =>
          Stream.async<import("../Exec.js").ExecEvent, NativeRunnerError>((emit) => {
            let finished = false
            let pending = ""
            const line = (text: string) => {
              if (text === "") return
              const parsed = JSON.parse(text) as { event?: unknown; error?: unknown }
              if (parsed.event !== undefined) {
                const event = decodeEvent(parsed.event)
                if (event._tag === "Right") void emit.single(eventFromWire(event.right))
                else void emit.fail(unavailable("the worker's answer could not be read"))
                return
              }
              const error = decodeError(parsed.error)
              finished = true
              void emit.fail(error._tag === "Right" ? error.right : unavailable("the worker's answer could not be read"))
            }
            const req = post("/v1/exec-stream", body, (res) => {
              if (res.statusCode !== 200) {
                void collect(res).then((text) => {
                  finished = true
                  void emit.fail(failureOf(res.statusCode ?? 0, text))
                })
                return
              }
              res.on("data", (chunk: Buffer) => {
                pending += chunk.toString("utf8")
                let newline = pending.indexOf("\n")
                while (newline >= 0) {
                  line(pending.slice(0, newline))
                  pending = pending.slice(newline + 1)
                  newline = pending.indexOf("\n")
                }
              })
              res.on("end", () => {
                line(pending)
                finished = true
                void emit.end()
              })
              res.on("error", (error) => {
                finished = true
                void emit.fail(connectFailure(error))
              })
            }, (error) => {
              finished = true
              void emit.fail(connectFailure(error))
            })
            return Effect.suspend(() =>
              finished ? Effect.void : Effect.ensuring(cancel(requestId), Effect.sync(() => req.destroy()))
            )
          })))
    })
  })

/** The client as a layer. */
export const layer = (settings: HttpClientSettings): Layer.Layer<NativeRunner> => Layer.scoped(NativeRunner, make(settings))
