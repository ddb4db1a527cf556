/**
 * The live layer against real processes: the behaviours that only a real OS shows (process groups, pipes, memory,
 * environment, concurrency), beside the shared behaviour suite.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { readFileSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Audit, Metrics, NativeRunner } from "../src/index.js"
import { InvalidInput, SpawnError } from "../src/Errors.js"
import { isAlive } from "./helpers/escape.js"
import { scratchDir } from "./helpers/tempDirs.js"

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
const scratch = () => scratchDir("enr-live-")


/** Waits (really) until `pid` is gone, up to `ms`; returns whether it went. */
const gone = (pid: number, ms = 3000) =>
  Effect.promise(async () => {
    const deadline = Date.now() + ms
    while (Date.now() < deadline) {
      if (!isAlive(pid)) return true
      await new Promise((r) => setTimeout(r, 20))
    }
    return !isAlive(pid)
  })

const scratchRoot = scratch()
const NodeContextLayer = NodeContext.layer
const Live = NativeRunner.layerNode({ killGrace: "300 millis" })

describe("live NativeRunner", () => {
  layer(Live, { excludeTestServices: true })((it) => {
    it.effect("captures stdout and stderr completely and concurrently", () =>
      Effect.gen(function*() {
        // 300 KB on each stream, interleaved: neither pipe may fill and block the other.
        const result = yield* NativeRunner.exec({
          argv: ["sh", "-c", "for i in $(seq 1 3000); do echo out-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; echo err-$i >&2; done"]
        })
        expect(result.exitCode).toBe(0)
        const out = text(result.stdout).split("\n")
        expect(out[0]).toMatch(/^out-1-/)
        expect(out[2999]).toMatch(/^out-3000-/)
        expect(text(result.stderr).split("\n")[2999]).toBe("err-3000")
        expect(result.stdoutBytes).toBe(result.stdout.length)
        expect(result.truncatedStdout).toBe(false)
      }))

    it.effect("keeps exactly the first maxStdoutBytes bytes of binary output", () =>
      Effect.gen(function*() {
        const dir = scratch()
        const data = new Uint8Array(200_000).map((_, i) => (i * 7919 + (i >> 8)) % 256)
        writeFileSync(path.join(dir, "blob"), data)
        const result = yield* NativeRunner.exec({
          argv: ["cat", "blob"],
          cwd: dir,
          limits: { maxStdoutBytes: 100_003 }
        })
        expect(result.truncatedStdout).toBe(true)
        expect(result.stdoutBytes).toBe(200_000)
        expect(Buffer.from(result.stdout).equals(Buffer.from(data.subarray(0, 100_003)))).toBe(true)
      }))

    it.effect("drains past the cap without breaking the child's pipe (no EPIPE/SIGPIPE)", () =>
      Effect.gen(function*() {
        const result = yield* NativeRunner.exec({
          argv: ["sh", "-c", "head -c 20000000 /dev/zero; echo \"writer=$?\" >&2"],
          limits: { maxStdoutBytes: 1000 }
        })
        expect(result.exitCode).toBe(0)
        expect(text(result.stderr)).toBe("writer=0\n")
        expect(result.stdout.length).toBe(1000)
        expect(result.stdoutBytes).toBe(20_000_000)
      }))

    it.effect("bounds memory by the cap however much the child writes", () =>
      Effect.gen(function*() {
        const size = 512 * 1024 * 1024
        global.gc?.()
        const base = process.memoryUsage().rss
        let peak = base
        const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10)
        const result = yield* NativeRunner.exec({
          argv: ["head", "-c", String(size), "/dev/zero"],
          limits: { maxStdoutBytes: 1024 * 1024 }
        }).pipe(Effect.ensuring(Effect.sync(() => clearInterval(timer))))
        expect(result.stdoutBytes).toBe(size)
        expect(result.stdout.length).toBe(1024 * 1024)
        // Keeping the output would grow by 512 MiB; V8 collects pipe buffers lazily, so allow tens of MiB.
        expect(peak - base).toBeLessThan(96 * 1024 * 1024)
      }), { timeout: 120_000 })

    it.effect("gives the child EOF at once without stdin, and writes stdin then closes it", () =>
      Effect.gen(function*() {
        const none = yield* NativeRunner.exec({ argv: ["cat"], timeout: "10 seconds" })
        expect(none.timedOut).toBe(false)
        expect(none.stdout.length).toBe(0)
        const some = yield* NativeRunner.exec({ argv: ["wc", "-c"], stdin: new Uint8Array(3_000_000).fill(65) })
        expect(text(some.stdout).trim()).toBe("3000000")
      }))

    it.effect("treats a child that exits without reading its stdin as a normal run", () =>
      Effect.gen(function*() {
        const result = yield* NativeRunner.exec({ argv: ["true"], stdin: new Uint8Array(8_000_000) })
        expect(result.exitCode).toBe(0)
      }))

    it.effect("kills the whole process group on timeout, grandchildren ignoring SIGTERM included", () =>
      Effect.gen(function*() {
        const started = Date.now()
        const result = yield* NativeRunner.exec({
          argv: ["sh", "-c", "trap '' TERM; sleep 1000 & echo $!; sleep 1000"],
          timeout: "300 millis",
          killGrace: "300 millis"
        })
        const elapsed = Date.now() - started
        expect(result.timedOut).toBe(true)
        expect(result.exitCode).toBe(124)
        expect(result.signal).toBe("SIGKILL")
        expect(result.audits[0]?.signal).toBe("SIGKILL")
        const grandchild = Number(text(result.stdout).trim())
        expect(grandchild).toBeGreaterThan(0)
        expect(yield* gone(grandchild)).toBe(true)
        // timeout + grace, plus a generous margin for a loaded machine.
        expect(elapsed).toBeLessThan(600 + 5000)
      }))

    it.effect("kills leftover members of the group after a normal exit", () =>
      Effect.gen(function*() {
        const result = yield* NativeRunner.exec({ argv: ["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"] })
        expect(result.exitCode).toBe(0)
        const background = Number(text(result.stdout).trim())
        expect(yield* gone(background)).toBe(true)
      }))

    it.effect("kills the tree when the calling fiber is interrupted", () =>
      Effect.gen(function*() {
        const dir = scratch()
        const pidFile = path.join(dir, "pids")
        const fiber = yield* Effect.fork(NativeRunner.exec({
          argv: ["sh", "-c", `trap '' TERM; sleep 1000 & echo $$ $! > ${pidFile}; wait`],
          timeout: "60 seconds"
        }))
        yield* Effect.promise(async () => {
          for (let i = 0; i < 500; i++) {
            try {
              if (readFileSync(pidFile, "utf8").trim().split(" ").length === 2) return
            } catch {
              // not written yet
            }
            await new Promise((r) => setTimeout(r, 10))
          }
        })
        const pids = readFileSync(pidFile, "utf8").trim().split(" ").map(Number)
        const started = Date.now()
        const exit = yield* Fiber.interrupt(fiber)
        expect(Exit.isInterrupted(exit)).toBe(true)
        // The interrupt returns only after TERM -> grace (300 ms) -> KILL has run.
        expect(Date.now() - started).toBeLessThan(300 + 5000)
        for (const pid of pids) expect(yield* gone(pid)).toBe(true)
      }))

    it.effect("reports death by signal as 128+n with the signal's name", () =>
      Effect.gen(function*() {
        const term = yield* NativeRunner.exec({ argv: ["sh", "-c", "kill -TERM $$"] })
        expect(term.exitCode).toBe(143)
        expect(term.signal).toBe("SIGTERM")
        expect(term.timedOut).toBe(false)
        const segv = yield* NativeRunner.exec({ argv: ["sh", "-c", "kill -SEGV $$"] })
        expect(segv.exitCode).toBe(139)
        expect(segv.audits[0]?.signal).toBe("SIGSEGV")
      }))

    it.effect("maps spawn failures to SpawnError reasons", () =>
      Effect.gen(function*() {
        const missing = yield* Effect.flip(NativeRunner.exec({ argv: ["definitely-not-a-command-xyz"] }))
        expect(missing).toBeInstanceOf(SpawnError)
        expect(missing._tag === "SpawnError" && missing.reason).toBe("NotFound")
        const dir = scratch()
        writeFileSync(path.join(dir, "script"), "#!/bin/sh\necho hi\n", { mode: 0o644 })
        const denied = yield* Effect.flip(NativeRunner.exec({ argv: [path.join(dir, "script")] }))
        expect(denied._tag === "SpawnError" && denied.reason).toBe("PermissionDenied")
        const noCwd = yield* Effect.flip(NativeRunner.exec({ argv: ["true"], cwd: path.join(dir, "missing") }))
        expect(noCwd._tag === "SpawnError" && noCwd.reason).toBe("CwdNotFound")
        const fileCwd = yield* Effect.flip(NativeRunner.exec({ argv: ["true"], cwd: path.join(dir, "script") }))
        expect(fileCwd._tag === "SpawnError" && fileCwd.reason).toBe("CwdNotDirectory")
      }))

    it.effect("rejects bad input with InvalidInput before spawning", () =>
      Effect.gen(function*() {
        const dir = scratch()
        const marker = path.join(dir, "spawned")
        const error = yield* Effect.flip(NativeRunner.exec({
          argv: ["sh", "-c", `touch ${marker}`],
          env: { "BAD=NAME": "x" }
        }))
        expect(error).toBeInstanceOf(InvalidInput)
        expect(error.message).toContain("must not contain '='")
        const negative = yield* Effect.flip(NativeRunner.exec({
          argv: ["sh", "-c", `touch ${marker}`],
          limits: { maxStdoutBytes: -1 }
        }))
        expect(negative._tag).toBe("InvalidInput")
        yield* Effect.sleep("100 millis")
        expect(() => readFileSync(marker)).toThrow()
      }))
  })

  describe("cwd", () => {
    it.live("defaults to the layer's cwd and resolves relative cwds against it", () =>
      Effect.gen(function*() {
        const dir = scratchRoot
        const sub = path.join(dir, "sub")
        yield* Effect.promise(() => import("node:fs/promises").then((fs) => fs.mkdir(sub)))
        const runner = yield* NativeRunner.NativeRunner
        const here = yield* runner.exec({ argv: ["pwd"] })
        expect(text(here.stdout).trim()).toBe(dir)
        const relative = yield* runner.exec({ argv: ["pwd"], cwd: "sub" })
        expect(text(relative.stdout).trim()).toBe(sub)
        expect(relative.audits[0]?.cwd).toBe(sub)
      }).pipe(Effect.provide(NativeRunner.layerNode({ cwd: scratchRoot }))))
  })

  describe("env", () => {
    it.live("inherits only a secret-free core by default; the input's env wins", () =>
      Effect.gen(function*() {
        process.env["ENR_TEST_PLAIN"] = "plain"
        process.env["ENR_TEST_API_KEY"] = "hunter2"
        const runner = yield* NativeRunner.NativeRunner
        const core = yield* runner.exec({ argv: ["env"], env: { HOME: "/custom-home", EXTRA: "1" } })
        const vars = text(core.stdout)
        expect(vars).toContain("HOME=/custom-home\n")
        expect(vars).toContain("EXTRA=1\n")
        expect(vars).toContain(`PATH=${process.env["PATH"]}\n`)
        expect(vars).not.toContain("ENR_TEST_PLAIN")
        expect(vars).not.toContain("hunter2")
        expect(JSON.stringify(core.audits)).not.toContain("/custom-home")
      }).pipe(Effect.provide(NativeRunner.layerNode())))

    it.live("inheritEnv all passes everything but secret-looking names; none passes nothing", () =>
      Effect.gen(function*() {
        process.env["ENR_TEST_PLAIN"] = "plain"
        process.env["ENR_TEST_SESSION_ID"] = "s3cr3t"
        const all = yield* NativeRunner.make({ inheritEnv: "all" })
        const vars = text((yield* all.exec({ argv: ["env"] })).stdout)
        expect(vars).toContain("ENR_TEST_PLAIN=plain\n")
        expect(vars).not.toContain("s3cr3t")
        const none = yield* NativeRunner.make({ inheritEnv: "none", env: { ONLY: "this" } })
        expect(text((yield* none.exec({ argv: ["/usr/bin/env"] })).stdout)).toBe("ONLY=this\n")
      }).pipe(Effect.provide(NodeContextLayer)))
  })

  it.live("caps the number of processes running at once", () =>
    Effect.gen(function*() {
      const dir = scratch()
      const log = path.join(dir, "log")
      const runner = yield* NativeRunner.make({ maxConcurrent: 2 })
      yield* Effect.forEach(
        Array.from({ length: 6 }, (_, i) => i),
        () => runner.exec({ argv: ["sh", "-c", `echo start >> ${log}; sleep 0.2; echo end >> ${log}`] }),
        { concurrency: "unbounded" }
      )
      let running = 0
      let most = 0
      for (const line of readFileSync(log, "utf8").trim().split("\n")) {
        running += line === "start" ? 1 : -1
        most = Math.max(most, running)
      }
      expect(most).toBe(2)
    }).pipe(Effect.provide(NodeContextLayer)))

  it.live("publishes one audit record per exec to the Audit service, without env values", () =>
    Effect.gen(function*() {
      yield* NativeRunner.exec({ argv: ["echo", "one"], env: { SECRET_THING: "value-never-logged" } })
      yield* NativeRunner.exec({ argv: ["sh", "-c", "exit 4"] })
      const records = yield* Effect.flatMap(Audit.AuditMemory, (m) => m.records)
      expect(records.map((r) => [r.kind, r.cmd, r.exitCode])).toEqual([["native.exec", "echo", 0], [
        "native.exec",
        "sh",
        4
      ]])
      expect(JSON.stringify(records)).not.toContain("value-never-logged")
    }).pipe(Effect.provide(NativeRunner.layerNode().pipe(Layer.provideMerge(Audit.layerMemory)))))

  it.live("audits an exec whose program could not be started, with the reason and nothing run", () =>
    Effect.gen(function*() {
      const notFound = yield* Effect.flip(NativeRunner.exec({ argv: ["/nonexistent/program", "--token", "x"] }))
      const badCwd = yield* Effect.flip(NativeRunner.exec({ argv: ["true"], cwd: "/nonexistent/dir" }))
      expect([notFound._tag, badCwd._tag]).toEqual(["SpawnError", "SpawnError"])
      const records = yield* Effect.flatMap(Audit.AuditMemory, (m) => m.records)
      expect(records.map((r) => [r.cmd, r.exitCode, r.spawnError, r.stdoutBytes, r.timedOut, r.interrupted])).toEqual([
        ["/nonexistent/program", 127, "NotFound", 0, false, false],
        ["true", 126, "CwdNotFound", 0, false, false]
      ])
      expect(records[0]?.argv).toEqual(["/nonexistent/program", "--token", "x"])
      expect(records[1]?.cwd).toBe("/nonexistent/dir")
      expect(new Set(records.map((r) => r.runId)).size).toBe(2)
    }).pipe(Effect.provide(NativeRunner.layerNode().pipe(Layer.provideMerge(Audit.layerMemory)))))

  it.live("redacts argv in audits with the redaction hook", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.exec({ argv: ["echo", "--password", "pw1", "--token=tk2", "plain"] })
      expect(text(result.stdout)).toBe("--password pw1 --token=tk2 plain\n")
      expect(result.audits[0]?.argv).toEqual(["echo", "--password", "***", "--token=***", "plain"])
    }).pipe(Effect.provide(NativeRunner.layerNode({ redactArgv: Audit.redactAfter(["--password", "--token"]) }))))

  it.live("fails the layer with InvalidInput on bad options", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(NativeRunner.make({ maxConcurrent: 0, timeout: -5 }))
      expect(error._tag).toBe("InvalidInput")
      expect(error.message).toContain("maxConcurrent")
      expect(error.message).toContain("timeout")
    }).pipe(Effect.provide(NodeContextLayer)))

  it.live("counts execs by outcome, bytes kept and dropped, and in-flight processes", () =>
    Effect.gen(function*() {
      const count = (outcome: Metrics.Outcome) =>
        Effect.map(Metric.value(Metric.tagged(Metrics.execs, "outcome", outcome)), (s) => s.count)
      const before = yield* Effect.all([count("ok"), count("non_zero"), count("timeout"), count("spawn_error")])
      const droppedBefore = (yield* Metric.value(Metrics.bytesDropped)).count
      yield* NativeRunner.exec({ argv: ["head", "-c", "5000", "/dev/zero"], limits: { maxStdoutBytes: 1000 } })
      yield* NativeRunner.exec({ argv: ["sh", "-c", "exit 2"] })
      yield* NativeRunner.exec({ argv: ["sleep", "5"], timeout: "100 millis", killGrace: "100 millis" })
      yield* Effect.flip(NativeRunner.exec({ argv: ["definitely-not-a-command-xyz"] }))
      const after = yield* Effect.all([count("ok"), count("non_zero"), count("timeout"), count("spawn_error")])
      expect(after.map((n, i) => n - (before[i] ?? 0))).toEqual([1, 1, 1, 1])
      expect((yield* Metric.value(Metrics.bytesDropped)).count - droppedBefore).toBe(4000)
      expect((yield* Metric.value(Metrics.inFlight)).value).toBe(0)
    }).pipe(Effect.provide(NativeRunner.layerNode())))

  describe("Promise bridge", () => {
    it("satisfies the seed's NativeRunner and rejects with the typed error", async () => {
      const runner = NativeRunner.toPromiseRunner(NativeRunner.layerNode())
      try {
        const seedRunner: import("../src/types.js").NativeRunner = runner
        const result = await seedRunner.exec({ argv: ["echo", "hi"], limits: { timeoutMs: 5000 } })
        expect(result.exitCode).toBe(0)
        expect(text(result.stdout)).toBe("hi\n")
        expect(result.audits?.[0]?.kind).toBe("native.exec")
        await expect(runner.exec({ argv: [] })).rejects.toBeInstanceOf(InvalidInput)
        await expect(runner.exec({ argv: ["definitely-not-a-command-xyz"] })).rejects.toBeInstanceOf(SpawnError)
        const timedOut = await runner.exec({ argv: ["sleep", "10"], limits: { timeoutMs: 200 } })
        expect([timedOut.exitCode, timedOut.timedOut]).toEqual([124, true])
      } finally {
        await runner.dispose()
      }
    })
  })

  it.live("measures durations with the clock and honours Duration inputs", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.exec({ argv: ["sleep", "0.2"], timeout: Duration.seconds(10) })
      expect(result.durationMs).toBeGreaterThanOrEqual(180)
      expect(result.audits[0]?.durationMs).toBe(result.durationMs)
    }).pipe(Effect.provide(Live)))
})
