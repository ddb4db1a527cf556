/** Topic "audit": one record per exec (also for one that could not start), never env values or output. */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { existsSync } from "node:fs"
import { join } from "node:path"
import * as NativeRunner from "../NativeRunner.js"
import { utf8 } from "./bytes.js"
import type { SuiteContext } from "./context.js"

const oneRecordPerExec = <E>(ctx: SuiteContext<E>) =>
  ctx.test()("one record per exec, equal to result.audits[0]; no env values and no output in it", () =>
    Effect.gen(function*() {
      const output = utf8("audit-output-7f3a")
      const argv = ctx.commands.write([["stdout", output]])
      const first = yield* NativeRunner.exec({
        argv,
        env: { NR_INPUT_VALUE: "input-value-9c2e" }
      })
      const second = yield* NativeRunner.exec({ argv: ctx.commands.exit(3) })
      const audits = yield* ctx.records
      expect(audits).toHaveLength(2)
      expect(audits[0]).toEqual(first.audits[0])
      expect(audits[1]).toEqual(second.audits[0])
      expect(first.audits).toHaveLength(1)
      expect(audits[0]?.runId).not.toBe(audits[1]?.runId)
      expect(audits[0]).toMatchObject({
        kind: "native.exec",
        cmd: argv[0],
        argv: [...argv],
        cwd: ctx.dir(),
        exitCode: 0,
        timedOut: false,
        interrupted: false,
        stdoutBytes: output.length,
        stderrBytes: 0,
        truncatedStdout: false,
        truncatedStderr: false
      })
      expect(audits[1]).toMatchObject({ exitCode: 3, cmd: ctx.commands.exit(3)[0] })
      const serialized = JSON.stringify(audits)
      for (const secret of ["layer-value-4d1b", "input-value-9c2e", "audit-output-7f3a", "host-secret-value"]) {
        expect(serialized).not.toContain(secret)
      }
      for (const record of audits) expect(Object.keys(record)).not.toContain("env")
    }).pipe(Effect.provide(ctx.withAudit({ cwd: ctx.dir(), env: { NR_LAYER_VALUE: "layer-value-4d1b" } }))))

const auditedSpawnFailure = <E>(ctx: SuiteContext<E>) =>
  ctx.test()("an exec that could not start is audited too: spawnError set, exit 126, nothing ran", () =>
    Effect.gen(function*() {
      const touched = ctx.marker()
      const missing = join(ctx.dir(), "missing")
      const argv = ctx.commands.touch(touched)
      const error = yield* Effect.flip(NativeRunner.exec({ argv, cwd: missing }))
      expect(error).toMatchObject({ _tag: "SpawnError", reason: "CwdNotFound" })
      expect(yield* ctx.records).toEqual([expect.objectContaining({
        kind: "native.exec",
        cmd: argv[0],
        argv: [...argv],
        cwd: missing,
        exitCode: 126,
        spawnError: "CwdNotFound",
        stdoutBytes: 0,
        timedOut: false,
        interrupted: false
      })])
      expect(existsSync(touched)).toBe(false)
    }).pipe(Effect.provide(ctx.withAudit({ cwd: ctx.dir() }))))

export const registerAudit = <E>(ctx: SuiteContext<E>): void => {
  describe("audit", () => {
    oneRecordPerExec(ctx)
    auditedSpawnFailure(ctx)
  })
}
