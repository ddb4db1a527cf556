/**
 * The behaviour suite against the fleet client over an in-memory cluster: every exec goes through the entity, its
 * wire Schemas (bytes as base64, durations as milliseconds), the claim store and a worker's live runner.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import type { NativeRunnerError } from "../src/Errors.js"
import * as NativeRunner from "../src/NativeRunner.js"
import * as NativeRunnerCluster from "../src/NativeRunnerCluster.js"
import { runnerBehaviourSuite, SUITE_HOST_ENV, type Timing } from "../src/testing.js"
import { liveCommands } from "./helpers/liveCommands.js"

Object.assign(process.env, SUITE_HOST_ENV)

const timing: Timing = { timeout: "400 millis", killGrace: "300 millis", slack: "5 seconds", startup: "750 millis", idle: "300 millis" }

runnerBehaviourSuite("NativeRunnerCluster.layerMemory (remote execs over an in-memory cluster)", {
  layer: (options) => NativeRunnerCluster.layerMemory(NativeRunner.layerNode(options)),
  commands: liveCommands,
  hostEnv: process.env,
  clock: "live",
  timing
})

describe("NativeRunnerCluster: what only the fleet does (in-memory cluster, live processes)", () => {
  const marker = () => path.join(dir, `marker-${Math.random().toString(36).slice(2)}`)
  const lines = (file: string) => (existsSync(file) ? readFileSync(file, "utf8").split("\n").filter((l) => l !== "") : [])
  const reasonOf = (exit: Exit.Exit<unknown, NativeRunnerError>) =>
    Exit.isSuccess(exit)
      ? "success"
      : Option.getOrUndefined(Option.map(Cause.failureOption(exit.cause), (e) => e._tag === "FleetError" ? e.reason : e._tag))
  let dir = ""
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), "enr-cluster-"))
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it.live("all crosses the wire: a remote exec asked for it gets all and allOmitted, byte-exact, and the audit's size", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.exec({
        argv: ["sh", "-c", "printf 'out '; sleep 0.2; printf 'err ' >&2; sleep 0.2; printf tail"],
        all: true,
        limits: { maxAllBytes: 10 }
      })
      expect([new TextDecoder().decode(result.all), result.allOmitted, result.audits[0]?.allKeptBytes])
        .toStrictEqual(["out err ta", { offset: 10, bytes: 2 }, 10])
    }).pipe(Effect.provide(NativeRunnerCluster.layerMemory(NativeRunner.layerNode()))))

  it.live("a full line fails at once with FleetError Busy; the refused run never starts", () => {
    const started = marker()
    const run = NativeRunner.exec({ argv: ["sh", "-c", `echo x >> ${started}; sleep 0.5`] })
    return Effect.gen(function*() {
      const exits = yield* Effect.all([Effect.exit(run), Effect.exit(Effect.delay(run, "100 millis"))], { concurrency: 2 })
      expect(exits.map(reasonOf)).toEqual(["success", "Busy"])
      expect(lines(started)).toHaveLength(1)
    }).pipe(Effect.provide(NativeRunnerCluster.layerMemory(NativeRunner.layerNode(), {
      worker: { concurrency: 4, tenantConcurrency: 1, queue: 0 }
    })))
  })

  it.live("the per-tenant cap queues runs (up to the queue) one after another", () => {
    const log = marker()
    const run = NativeRunner.exec({ argv: ["sh", "-c", `echo start >> ${log}; sleep 0.2; echo end >> ${log}`] })
    return Effect.gen(function*() {
      yield* Effect.all([run, run, run], { concurrency: 3 })
      expect(lines(log)).toEqual(["start", "end", "start", "end", "start", "end"])
    }).pipe(Effect.provide(NativeRunnerCluster.layerMemory(NativeRunner.layerNode(), {
      worker: { concurrency: 4, tenantConcurrency: 1, queue: 2 }
    })))
  })

  it.live("an interrupted run is lost: at-most-once never runs its id again, at-least-once does", () => {
    const attempt = (delivery: "at-most-once" | "at-least-once") => {
      const ran = marker()
      const once = NativeRunnerCluster.withRequestId(
        `interrupted-${delivery}`,
        NativeRunner.exec({ argv: ["sh", "-c", `echo ran >> ${ran}; sleep 0.6; echo done`] })
      )
      return Effect.gen(function*() {
        const first = yield* Effect.exit(Effect.timeout(once, "250 millis"))
        expect(Exit.isFailure(first)).toBe(true)
        const second = yield* Effect.exit(once)
        return { second: reasonOf(second), ran: lines(ran).length }
      }).pipe(Effect.provide(NativeRunnerCluster.layerMemory(NativeRunner.layerNode(), { client: { delivery } })))
    }
    return Effect.gen(function*() {
      expect(yield* attempt("at-most-once")).toEqual({ second: "WorkerLost", ran: 1 })
      expect(yield* attempt("at-least-once")).toEqual({ second: "success", ran: 2 })
    })
  })

  it.live("the worker's span joins the client's trace", () => {
    const spans: Array<Tracer.Span> = []
    return Effect.gen(function*() {
      const native = yield* Effect.tracer
      const recording = Tracer.make({
        span: (...args) => {
          const span = native.span(...args)
          spans.push(span)
          return span
        },
        context: native.context
      })
      yield* NativeRunner.exec({ argv: ["true"] }).pipe(
        Effect.withSpan("caller"),
        Effect.provide(NativeRunnerCluster.layerMemory(NativeRunner.layerNode())),
        Effect.withTracer(recording)
      )
      const caller = spans.find((s) => s.name === "caller")
      const worker = spans.find((s) => s.name === "NativeRunnerCluster.worker.exec")
      expect(caller).toBeDefined()
      expect(worker?.traceId).toBe(caller?.traceId)
    })
  })

  it.live("the result names the worker that ran it", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.exec({ argv: ["true"] })
      expect(result.worker).toBe(`memory-${process.pid}`)
    }).pipe(Effect.provide(NativeRunnerCluster.layerMemory(NativeRunner.layerNode()))))
  it.live("misspelt client or worker options fail with InvalidInput naming the key", () =>
    Effect.gen(function*() {
      const client = yield* Effect.flip(Layer.build(
        NativeRunnerCluster.layerMemory(NativeRunner.layerNode(), { client: { tenat: "x" } as NativeRunnerCluster.ClientOptions })
      ))
      expect(client._tag).toBe("InvalidInput")
      expect(JSON.stringify(client)).toContain("tenat")
      const worker = yield* Effect.flip(Layer.build(
        NativeRunnerCluster.layerMemory(NativeRunner.layerNode(), { worker: { concurency: 2 } as NativeRunnerCluster.WorkerOptions })
      ))
      expect(worker._tag).toBe("InvalidInput")
      expect(JSON.stringify(worker)).toContain("concurency")
    }).pipe(Effect.scoped))
})
