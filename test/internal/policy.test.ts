/**
 * The live layer's policy (src/internal/policy.ts): what it says when runs cannot be contained. Where a host can make
 * no run cgroup and runs are not sandboxed, a process that leaves its group outlives its run; the first exec says so.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import { makePolicy, NO_CONTAINMENT_WARNING } from "../../src/internal/policy.js"
import { makeRunCgroups } from "../../src/internal/runCgroup.js"
import * as NativeRunner from "../../src/NativeRunner.js"

const warningsLogger = () => {
  const warnings: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    if (logLevel._tag === "Warning") warnings.push(String(message))
  })
  return [warnings, Logger.replace(Logger.defaultLogger, logger)] as const
}

const command = { argv: ["true"], cwd: "/", env: {} } as const

describe("no cgroup and no sandbox", () => {
  it.live("our spawner without run cgroups: one warning, at the first exec, however many follow", () =>
    Effect.gen(function*() {
      const [warnings, logger] = warningsLogger()
      const policy = yield* makePolicy({}, { canSandbox: true, runCgroups: undefined })
      expect(warnings).toEqual([])
      for (let i = 0; i < 3; i++) yield* Effect.scoped(policy.prepare(command)).pipe(Effect.provide(logger))
      expect(warnings).toEqual([NO_CONTAINMENT_WARNING])
    }))

  it.live("over a CommandExecutor (no cgroups to have), and with run cgroups, nothing is said", () =>
    Effect.gen(function*() {
      const [warnings, logger] = warningsLogger()
      const executor = yield* makePolicy({}, { canSandbox: false, runCgroups: undefined })
      yield* Effect.scoped(executor.prepare(command)).pipe(Effect.provide(logger))
      const cgroups = yield* Effect.scoped(Effect.gen(function*() {
        const made = yield* makeRunCgroups
        if (made === undefined) return "no run cgroups on this host"
        const policy = yield* makePolicy({}, { canSandbox: true, runCgroups: made })
        yield* Effect.scoped(policy.prepare(command)).pipe(Effect.provide(logger))
        return "run cgroups"
      }))
      // CI runs as root, where run cgroups are made: the quiet case with cgroups must be the one checked there.
      if (process.env["CI"] === "true") expect(cgroups).toBe("run cgroups")
      expect(warnings).toEqual([])
    }))

  it.live("a live layer as root (CI) makes run cgroups, so its exec says nothing", () =>
    Effect.gen(function*() {
      const [warnings, logger] = warningsLogger()
      const result = yield* NativeRunner.exec({ argv: ["true"] }).pipe(
        Effect.provide(NativeRunner.layerNode({ spawnHelper: "off" })),
        Effect.provide(logger)
      )
      expect(result.exitCode).toBe(0)
      // (Not root, a host may or may not have a delegated cgroup v2 subtree: the first test covers the warning.)
      if (process.getuid?.() === 0) expect(warnings).toEqual([])
    }))
})
