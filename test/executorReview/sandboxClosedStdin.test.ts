/**
 * Found in review (2026-12-04), kept as tests: unsandboxed, a child that closes its stdin ends the pull within ms of
 * `exec 0<&-`; sandboxed, bwrap (pid 1 of the sandbox) keeps its own copy of the child's stdin, so the pull waits
 * until the run ends (README, Options, `stdin`). What holds there: the pull stays blocked on one chunk, and ends with
 * the run.
 */
import { afterAll, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { NativeRunner } from "../../src/index.js"
import { makeTestWorkspace } from "../helpers/workspace.js"

const { ws, remove } = makeTestWorkspace("enr-review3-")
const mib = new Uint8Array(1 << 20)
afterAll(remove)

for (const spawnHelper of ["always", "off"] as const) {
  it.live(`sandboxed (spawnHelper: ${spawnHelper}): a child that closes its stdin: the pull stays blocked on a chunk or two, and ends with the run`, () =>
    Effect.gen(function*() {
      const started = Date.now()
      let pullEndedAfter = -1
      let pulled = 0
      const endless = Stream.repeatEffect(Effect.sync(() => (pulled++, mib))).pipe(
        Stream.ensuring(Effect.sync(() => (pullEndedAfter = Date.now() - started)))
      )
      const result = yield* NativeRunner.exec({ argv: ["sh", "-c", "exec 0<&-; sleep 1"], stdin: endless })
      expect(result.exitCode).toBe(0)
      expect(pulled).toBeLessThan(8)
      yield* Effect.sleep("200 millis")
      expect(pullEndedAfter).toBeGreaterThanOrEqual(900)
    }).pipe(Effect.provide(NativeRunner.layerNode({ spawnHelper, sandbox: { policy: { workspace: ws } } }))), 20_000)
}
