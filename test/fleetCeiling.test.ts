/**
 * A worker's policy is a ceiling (`clampToCeiling`, applied by `layerWorker` to every request): what a request asks
 * for is lowered to the worker's caps and timeouts, never raised, and a client cannot choose where the worker writes.
 * The fleet test (test/fleet.test.ts) checks the same on worker processes.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { ceilingOf } from "../src/NativeRunnerCluster.js"
import { type Ceiling, clampToCeiling } from "../src/cluster/worker.js"

const ceiling: Ceiling = { maxStdoutBytes: 1024, maxStderrBytes: 512, timeoutMs: 2_000, killGraceMs: 200 }

describe("the worker's ceiling", () => {
  it("lowers caps, timeouts and grace a request asks for above the worker's, and keeps lower ones", () => {
    expect(clampToCeiling(ceiling, {
      argv: ["true"],
      limits: { maxStdoutBytes: 64 * 1024 * 1024, maxStderrBytes: 100, timeoutMs: 3_600_000 },
      timeoutMs: 3_600_000,
      killGraceMs: 60_000,
      idleTimeoutMs: 500
    })).toEqual({
      argv: ["true"],
      limits: { maxStdoutBytes: 1024, maxStderrBytes: 100, timeoutMs: 2_000 },
      timeoutMs: 2_000,
      killGraceMs: 200,
      idleTimeoutMs: 500
    })
    expect(clampToCeiling(ceiling, { argv: ["true"], timeoutMs: 10 })).toEqual({ argv: ["true"], timeoutMs: 10 })
  })

  it("lowers a request's combined-capture cap (all) to the worker's; a worker without one caps it at stdout + stderr", () => {
    expect(clampToCeiling({ ...ceiling, maxAllBytes: 2048 }, {
      argv: ["true"],
      all: true,
      limits: { maxAllBytes: 4 * 1024 * 1024 * 1024 }
    })).toEqual({ argv: ["true"], all: true, limits: { maxAllBytes: 2048 } })
    expect(clampToCeiling(ceiling, { argv: ["true"], all: true, limits: { maxAllBytes: 1e9 } }))
      .toEqual({ argv: ["true"], all: true, limits: { maxAllBytes: 1536 } })
    expect(clampToCeiling(ceiling, { argv: ["true"], all: true, limits: { maxAllBytes: 100 } }))
      .toEqual({ argv: ["true"], all: true, limits: { maxAllBytes: 100 } })
  })

  it("refuses a client's spill when the worker has no spill directory; with one, the worker's directory is used", () => {
    const refused = clampToCeiling(ceiling, { argv: ["true"], spill: { dir: "/etc" } })
    expect(refused).toMatchObject({ _tag: "InvalidInput", issues: [{ path: "spill" }] })
    expect(clampToCeiling({ ...ceiling, spill: { dir: "/var/spill", maxBytes: 1000 } }, {
      argv: ["true"],
      spill: { dir: "/etc", maxBytes: 5_000_000 }
    })).toEqual({ argv: ["true"], spill: { dir: "/var/spill", maxBytes: 1000 } })
  })

  it("lowers a request's idle timeout to the worker's, and refuses variables the worker sets (its own win)", () => {
    const idle: Ceiling = { ...ceiling, idleTimeoutMs: 60_000, env: { HTTP_PROXY: "http://proxy.internal:3128" } }
    expect(clampToCeiling(idle, { argv: ["true"], idleTimeoutMs: 3_600_000 })).toEqual({ argv: ["true"], idleTimeoutMs: 60_000 })
    expect(clampToCeiling(idle, { argv: ["true"], idleTimeoutMs: 500, env: { MODE: "ci" } }))
      .toEqual({ argv: ["true"], idleTimeoutMs: 500, env: { MODE: "ci" } })
    expect(clampToCeiling(idle, { argv: ["true"], env: { HTTP_PROXY: "http://evil:1", MODE: "ci" } }))
      .toMatchObject({ _tag: "InvalidInput", issues: [{ path: "env.HTTP_PROXY" }] })
  })

  it("without a ceiling (a cluster inside one process) a request is taken as it is", () => {
    const input = { argv: ["true"], spill: { dir: "/tmp" }, timeoutMs: 3_600_000 }
    expect(clampToCeiling(undefined, input)).toBe(input)
  })

  it.effect("ceilingOf: the runner options' caps and timeouts, defaults included", () =>
    Effect.gen(function*() {
      expect(yield* ceilingOf({ maxStdoutBytes: 1024, timeout: "2 seconds" })).toEqual({
        maxStdoutBytes: 1024,
        maxStderrBytes: 1024 * 1024,
        maxAllBytes: 1024 + 1024 * 1024,
        timeoutMs: 2_000,
        killGraceMs: 2_000
      })
      expect(yield* ceilingOf({ idleTimeout: "1 minute", env: { HTTP_PROXY: "http://proxy.internal:3128" } })).toMatchObject({
        idleTimeoutMs: 60_000,
        env: { HTTP_PROXY: "http://proxy.internal:3128" }
      })
    }))
})
