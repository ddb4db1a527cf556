/**
 * Topic "streaming": `execStream` is the same run as `exec`, seen as it happens: `Started`, the chunks in order,
 * `Exit` with exec's result. Ending the stream early kills the run; a slow consumer loses events, never result bytes.
 */
import { describe, expect } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { existsSync } from "node:fs"
import { join } from "node:path"
import type { ExecEvent, ExecInput, ExecResult } from "../Exec.js"
import * as NativeRunner from "../NativeRunner.js"
import { concat, expectBytes, pattern, utf8 } from "./bytes.js"
import { realDelay, type SuiteContext } from "./context.js"
import { signalNumber } from "./signals.js"

type Started = Extract<ExecEvent, { readonly _tag: "Started" }>
type Ended = Extract<ExecEvent, { readonly _tag: "Exit" }>

const collect = (input: ExecInput) =>
  Effect.map(Stream.runCollect(NativeRunner.execStream(input)), Chunk.toReadonlyArray)

/** Every byte the chunk events of `tag` carried, in order. */
const bytesOf = (events: ReadonlyArray<ExecEvent>, tag: "Stdout" | "Stderr"): Uint8Array =>
  concat(...events.flatMap((event) => (event._tag === tag ? [event.bytes] : [])))

/** The tags in order, a run of equal tags counted once (how a pipe splits a write is not the runner's to say). */
const shape = (events: ReadonlyArray<ExecEvent>): ReadonlyArray<string> =>
  events.map((event) => event._tag).filter((tag, i, tags) => i === 0 || tags[i - 1] !== tag)

/** Checks `Started` is first and `Exit` last, each once, and returns them. */
const framed = (events: ReadonlyArray<ExecEvent>): { readonly started: Started; readonly exit: Ended } => {
  const [first] = events
  const last = events.at(-1)
  expect([first?._tag, last?._tag]).toEqual(["Started", "Exit"])
  expect(events.filter((event) => event._tag === "Started" || event._tag === "Exit")).toHaveLength(2)
  if (first?._tag !== "Started" || last?._tag !== "Exit") throw new Error("the stream is not framed by Started and Exit")
  expect(Number.isSafeInteger(first.pid) && first.pid > 0).toBe(true)
  expect(first.runId).toBe(last.result.audits[0]?.runId)
  return { started: first, exit: last }
}

/** A result without what differs between two runs of one command (time, run id) and without its bytes. */
const comparable = (result: ExecResult) => {
  const { audits, durationMs: _duration, stderr: _stderr, stdout: _stdout, ...rest } = result
  return { ...rest, audits: audits.map(({ durationMs: _d, runId: _r, startedAt: _s, ...audit }) => audit) }
}

/** Same command through `exec` and `execStream`: the same result, and the same audit once each. */
const sameAsExec = <E>(ctx: SuiteContext<E>) =>
  ctx.test("streaming")("Started, then every chunk byte-exact, then Exit with exactly exec's result and audit", () =>
    Effect.gen(function*() {
      const out1 = pattern(3000, 1)
      const err1 = Uint8Array.of(0x80, 0x00, 0xc3, 0x28)
      const out2 = pattern(700, 2)
      const input: ExecInput = {
        argv: ctx.commands.write([["stdout", out1], ["stderr", err1], ["stdout", out2]]),
        limits: { maxStdoutBytes: 1000 }
      }
      const viaExec = yield* NativeRunner.exec(input)
      const events = yield* collect(input)
      const { exit } = framed(events)
      // The chunks carry every byte; the cap applies to the result only.
      expectBytes(bytesOf(events, "Stdout"), concat(out1, out2))
      expectBytes(bytesOf(events, "Stderr"), err1)
      expect(exit.dropped).toEqual({ chunks: 0, bytes: 0 })
      expectBytes(exit.result.stdout, viaExec.stdout)
      expectBytes(exit.result.stderr, viaExec.stderr)
      expect(comparable(exit.result)).toEqual(comparable(viaExec))
      expect(exit.result).toMatchObject({ exitCode: 0, stdoutBytes: 3700, truncatedStdout: true, stderrBytes: 4 })
      const audits = yield* ctx.records
      expect(audits).toEqual([viaExec.audits[0], exit.result.audits[0]])
    }).pipe(Effect.provide(ctx.withAudit({}))))

const asTheyHappen = <E>(ctx: SuiteContext<E>) =>
  ctx.test("streaming", "paced")("chunks arrive as the process writes them, in order across both streams", () =>
    Effect.gen(function*() {
      const { I, S, idle } = ctx
      const argv = ctx.paced([
        ["stdout", utf8("A")],
        ["sleep", idle],
        ["stderr", utf8("B")],
        ["sleep", idle],
        ["stdout", utf8("C")]
      ])
      const stamped = yield* ctx.elapse(
        Stream.runCollect(NativeRunner.execStream({ argv }).pipe(
          Stream.mapEffect((event) => Effect.map(Clock.currentTimeMillis, (at) => ({ event, at })))
        )),
        Duration.millis(2 * I + S)
      ).pipe(Effect.map(Chunk.toReadonlyArray))
      const events = stamped.map(({ event }) => event)
      framed(events)
      expect(shape(events)).toEqual(["Started", "Stdout", "Stderr", "Stdout", "Exit"])
      expectBytes(bytesOf(events, "Stdout"), utf8("AC"))
      expectBytes(bytesOf(events, "Stderr"), utf8("B"))
      // "A" was seen while the process still ran (two pauses before it ended); live, one pause absorbs a stall.
      const firstAt = stamped.find(({ event }) => event._tag === "Stdout")?.at ?? Number.NaN
      const exitAt = stamped.at(-1)?.at ?? Number.NaN
      expect(exitAt - firstAt).toBeGreaterThanOrEqual(ctx.live ? I : 2 * I)
    }).pipe(Effect.provide(ctx.fixture.layer({}))))

const endingEarlyKills = <E>(ctx: SuiteContext<E>) =>
  ctx.test(["streaming", "interruption"])(
    "ending the stream early (take) kills the process before the stream returns, audited as interrupted",
    () =>
      Effect.gen(function*() {
        const { G, S, startup } = ctx
        const argv = ctx.commands.hang("x", { ignoreTerm: false })
        const taken = NativeRunner.execStream({ argv, timeout: "1 hour", killGrace: ctx.grace }).pipe(Stream.take(2))
        const events = Chunk.toReadonlyArray(yield* Stream.runCollect(taken))
        expect(events.map((event) => event._tag)).toEqual(["Started", "Stdout"])
        expectBytes(bytesOf(events, "Stdout"), utf8("x"))
        const audits = yield* ctx.records
        expect(audits).toHaveLength(1)
        expect(audits[0]).toMatchObject({
          interrupted: true,
          timedOut: false,
          signal: "SIGTERM",
          exitCode: 128 + signalNumber("SIGTERM")
        })
        const [started] = events
        expect(started?._tag === "Started" ? started.runId : undefined).toBe(audits[0]?.runId)
        expect(audits[0]?.durationMs ?? -1).toBeLessThanOrEqual(startup + G + S)
      }).pipe(Effect.provide(ctx.withAudit({})))
  )

/** Far more 64 KiB chunks than the runner's event buffer (256) holds. */
const FLOOD = 64 * 1024 * 1024
/** Real time the slow consumer spends on each event: 256 events take a second, a pipe fills them far faster. */
const SLOW_EVENT_MS = 4

const slowConsumer = <E>(ctx: SuiteContext<E>) =>
  ctx.test("streaming")("a slow consumer changes nothing in the result; Exit.dropped counts every byte it missed", () =>
    Effect.gen(function*() {
      const argv = ctx.commands.zeros(FLOOD)
      const viaExec = yield* NativeRunner.exec({ argv })
      const events = yield* NativeRunner.execStream({ argv }).pipe(
        Stream.mapEffect((event) => Effect.as(realDelay(SLOW_EVENT_MS), event)),
        Stream.runCollect,
        Effect.map(Chunk.toReadonlyArray)
      )
      const { exit } = framed(events)
      expectBytes(exit.result.stdout, viaExec.stdout)
      expect(comparable(exit.result)).toEqual(comparable(viaExec))
      expect(exit.result).toMatchObject({ exitCode: 0, stdoutBytes: FLOOD, stderrBytes: 0 })
      const chunks = events.flatMap((event) => (event._tag === "Stdout" || event._tag === "Stderr" ? [event.bytes] : []))
      const streamed = chunks.reduce((n, bytes) => n + bytes.length, 0)
      expect(exit.dropped.chunks).toBeGreaterThan(0)
      expect(streamed + exit.dropped.bytes).toBe(exit.result.stdoutBytes + exit.result.stderrBytes)
      // Chunks are at most 64 KiB, dropped ones too.
      expect(Math.max(...chunks.map((bytes) => bytes.length))).toBeLessThanOrEqual(65536)
      expect(exit.dropped.bytes).toBeLessThanOrEqual(exit.dropped.chunks * 65536)
    }).pipe(Effect.provide(ctx.fixture.layer({}))))

const failsBeforeStarting = <E>(ctx: SuiteContext<E>) =>
  ctx.test("streaming")("bad input or a failed spawn fails the stream with exec's typed error, before any event", () =>
    Effect.gen(function*() {
      const seen: Array<ExecEvent> = []
      const drain = (input: ExecInput) =>
        Effect.flip(Stream.runForEach(NativeRunner.execStream(input), (event) => Effect.sync(() => seen.push(event))))
      const touched = ctx.marker()
      const invalid = yield* drain({ argv: [] })
      expect(invalid._tag).toBe("InvalidInput")
      const missing = join(ctx.dir(), "missing")
      const spawn = yield* drain({ argv: ctx.commands.touch(touched), cwd: missing })
      expect(spawn).toMatchObject({ _tag: "SpawnError", reason: "CwdNotFound", cwd: missing })
      expect(seen).toEqual([])
      expect(existsSync(touched)).toBe(false)
    }).pipe(Effect.provide(ctx.fixture.layer({}))))

export const registerStreaming = <E>(ctx: SuiteContext<E>): void => {
  describe("streaming", () => {
    sameAsExec(ctx)
    asTheyHappen(ctx)
    endingEarlyKills(ctx)
    slowConsumer(ctx)
    failsBeforeStarting(ctx)
  })
}
