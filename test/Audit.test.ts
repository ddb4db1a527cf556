import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { Audit, NativeRunner } from "../src/index.js"
import { scratchDir } from "./helpers/tempDirs.js"

const AuditLine = Schema.Struct({
  kind: Schema.Literal("native.exec"),
  runId: Schema.String,
  startedAt: Schema.String,
  timestamp: Schema.String,
  cmd: Schema.String,
  argv: Schema.Array(Schema.String),
  cwd: Schema.String,
  durationMs: Schema.Number,
  timedOut: Schema.Boolean,
  signal: Schema.optional(Schema.String),
  exitCode: Schema.Number,
  stdoutBytes: Schema.Number,
  stderrBytes: Schema.Number,
  truncatedStdout: Schema.Boolean,
  truncatedStderr: Schema.Boolean,
  interrupted: Schema.Boolean,
  sandbox: Schema.String
})
const decodeLine = Schema.decodeUnknownSync(Schema.parseJson(AuditLine), { onExcessProperty: "error" })

const jsonlRunner = (file: string) =>
  NativeRunner.layerNode({ maxConcurrent: 16, killGrace: "200 millis" }).pipe(
    Layer.provide(Audit.layerJsonl(file))
  )

describe("Audit.layerJsonl", () => {
  it.live("writes one valid line per exec from 200 concurrent execs, with no env values or output", () => {
    const file = path.join(scratchDir("enr-audit-"), "audit.jsonl")
    return Effect.gen(function*() {
      yield* Effect.forEach(
        Array.from({ length: 200 }, (_, i) => i),
        (i) => NativeRunner.exec({ argv: ["echo", `run-${i}`], env: { PRIVATE_VALUE: "never-in-audit" } }),
        { concurrency: "unbounded" }
      )
      const lines = readFileSync(file, "utf8").trimEnd().split("\n")
      expect(lines).toHaveLength(200)
      const records = lines.map((line) => decodeLine(line))
      expect(new Set(records.map((r) => r.argv[1])).size).toBe(200)
      expect(new Set(records.map((r) => r.runId)).size).toBe(200)
      const raw = readFileSync(file, "utf8")
      expect(raw).not.toContain("never-in-audit")
      expect(raw).not.toContain("run-0\\n")
    }).pipe(Effect.provide(jsonlRunner(file)))
  }, { timeout: 60_000 })

  it.live("creates a new file readable by its owner only (0600)", () => {
    const file = path.join(scratchDir("enr-audit-"), "new.jsonl")
    return Effect.gen(function*() {
      yield* NativeRunner.exec({ argv: ["true"] })
      expect(statSync(file).mode & 0o777).toBe(0o600)
      expect(Audit.AUDIT_FILE_MODE).toBe(0o600)
    }).pipe(Effect.provide(jsonlRunner(file)))
  })

  it.live("an existing file keeps its mode (0644 stays 0644) and is appended to", () => {
    const file = path.join(scratchDir("enr-audit-"), "existing.jsonl")
    writeFileSync(file, "")
    chmodSync(file, 0o644)
    return Effect.gen(function*() {
      yield* NativeRunner.exec({ argv: ["true"] })
      expect(statSync(file).mode & 0o777).toBe(0o644)
      expect(readFileSync(file, "utf8").trimEnd().split("\n")).toHaveLength(1)
    }).pipe(Effect.provide(jsonlRunner(file)))
  })

  it.live("still writes the line of an interrupted exec", () => {
    const file = path.join(scratchDir("enr-audit-"), "audit.jsonl")
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(NativeRunner.exec({ argv: ["sleep", "30"] }))
      yield* Effect.sleep("300 millis")
      yield* Fiber.interrupt(fiber)
      const lines = readFileSync(file, "utf8").trimEnd().split("\n")
      expect(lines).toHaveLength(1)
      const record = decodeLine(lines[0])
      expect(record.interrupted).toBe(true)
      expect(record.cmd).toBe("sleep")
      expect(record.signal).toBe("SIGTERM")
      expect(record.exitCode).toBe(143)
    }).pipe(Effect.provide(jsonlRunner(file)))
  })
})

describe("tracing", () => {
  it.live("each exec is a NativeRunner.exec span with its outcome as attributes", () =>
    Effect.gen(function*() {
      const base = yield* Effect.tracer
      const spans: Array<Tracer.Span> = []
      const recording = Tracer.make({
        span: (...args) => {
          const span = base.span(...args)
          spans.push(span)
          return span
        },
        context: (f, fiber) => base.context(f, fiber)
      })
      yield* NativeRunner.exec({ argv: ["sh", "-c", "exit 3"] }).pipe(Effect.withTracer(recording))
      const span = spans.find((s) => s.name === "NativeRunner.exec")
      expect(span).toBeDefined()
      expect(span?.attributes.get("exec.cmd")).toBe("sh")
      expect(span?.attributes.get("exec.exit_code")).toBe(3)
      expect(span?.attributes.get("exec.timed_out")).toBe(false)
      expect(span?.attributes.get("exec.sandbox")).toBe("none")
    }).pipe(Effect.provide(NativeRunner.layerNode())))
})
