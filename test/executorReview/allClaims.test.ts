/** Found in review (2026-12-04), kept as tests: the combined capture (`all`) through real runs: caps and keeps, timeouts, interruption, execStream, --jsonl. */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { Audit, NativeRunner } from "../../src/index.js"
import { cliStdout } from "../helpers/cliOut.js"

const text = (b: Uint8Array | undefined) => b === undefined ? undefined : new TextDecoder().decode(b)
const sorted = (s: string | undefined) => [...(s ?? "")].sort().join("")

describe("all through real runs", () => {
  for (const spawnHelper of ["always", "off"] as const) {
    for (const keep of ["head", "tail", "both"] as const) {
      it.live(`stdout only: all is stdout's own capture at the same cap (${spawnHelper}, ${keep})`, () =>
        Effect.gen(function*() {
          const r = yield* NativeRunner.exec({ argv: ["seq", "1", "60000"], keep, all: true, limits: { maxAllBytes: 100001, maxStdoutBytes: 100001 } })
          expect(r.all?.length).toBe(100001)
          expect(Buffer.from(r.all!).equals(Buffer.from(r.stdout))).toBe(true)
          expect(r.allOmitted).toStrictEqual(r.stdoutOmitted)
          expect(r.audits[0]?.allKeptBytes).toBe(100001)
        }).pipe(Effect.provide(NativeRunner.layerNode({ spawnHelper }))))
    }
  }

  it.live("a timeout and an interruption keep all consistent (result, audit)", () =>
    Effect.gen(function*() {
      const argv = ["sh", "-c", "printf abc; printf def >&2; sleep 5"]
      const timed = yield* NativeRunner.exec({ argv, all: true, timeout: "400 millis" })
      expect([timed.timedOut, sorted(text(timed.all)), timed.audits[0]?.allKeptBytes]).toStrictEqual([true, "abcdef", 6])
      const fiber = yield* Effect.fork(NativeRunner.exec({ argv, all: true }))
      yield* Effect.sleep("400 millis")
      yield* Fiber.interrupt(fiber)
      const records = yield* Effect.flatMap(Audit.AuditMemory, (m) => m.records)
      const last = records[records.length - 1]
      expect([last?.interrupted, last?.allKeptBytes]).toStrictEqual([true, 6])
    }).pipe(Effect.provide(NativeRunner.layerNode({ killGrace: "100 millis" }).pipe(Layer.provideMerge(Audit.layerMemory)))))

  it.live("execStream's Exit carries all", () =>
    Effect.gen(function*() {
      const events = yield* Stream.runCollect(NativeRunner.execStream({ argv: ["sh", "-c", "printf ab; sleep 0.1; printf cd >&2"], all: true }))
      const exit = [...events].find((e) => e._tag === "Exit")
      expect(exit?._tag === "Exit" ? text(exit.result.all) : "none").toBe("abcd")
    }).pipe(Effect.provide(NativeRunner.layerNode())))

  it.live("the CLI's --jsonl exit event carries all", () =>
    Effect.gen(function*() {
      const out = yield* cliStdout(["run", "--jsonl", "--all", "--keep", "tail", "--max-all", "3", "--", "sh", "-c", "printf abc; sleep 0.1; printf def >&2"])
      const lines = out.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))
      expect(lines[lines.length - 1]).toMatchObject({ event: "exit", all: "def", allOmitted: { offset: 0, bytes: 3 } })
    }))
})
