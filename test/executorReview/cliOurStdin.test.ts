/**
 * Our own stdin streamed to a sandboxed command (`ourStdin`): the CLI's `run --sandbox bwrap` and
 * `layerCommandExecutor`'s sandboxed `Command.stdin("inherit")`. An open stdin with nothing on it must not hold a
 * finished run, and a second run in the same process must read what comes after the first, as it does unsandboxed.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { builtBin, sandboxPreflight } from "../helpers/bin.js"
import { makeTestWorkspace } from "../helpers/workspace.js"

const { bin: BIN } = builtBin("enr-review3-cli-")
const { usable, inCI } = await sandboxPreflight("review3 sandboxed stdin tests")
const TSX = fileURLToPath(new URL("../../node_modules/.bin/tsx", import.meta.url))
const FIXTURE = fileURLToPath(new URL("./fixtures/twoInheritRuns.ts", import.meta.url))

const run = (program: string, args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(program, args, { stdio: ["pipe", "pipe", "inherit"] })
      let out = ""
      child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()))
      const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)))
      return { child, out: () => out, exited }
    }),
    ({ child }) => Effect.sync(() => child.kill("SIGKILL"))
  )

describe("ourStdin in a sandbox", () => {
  it.live.runIf(usable || inCI)("run --sandbox bwrap -- true, our stdin open and silent: the CLI exits at once", () =>
    Effect.gen(function*() {
      const { ws, remove } = makeTestWorkspace("enr-review3-")
      yield* Effect.addFinalizer(() => Effect.sync(remove))
      const cli = yield* run(process.execPath, [BIN, "run", "--sandbox", "bwrap", "--workspace", ws, "--timeout", "2s", "--", "true"])
      // Nothing is written and stdin stays open; `true` never reads it.
      const code = yield* Effect.promise(() => cli.exited).pipe(Effect.timeoutOption("6 seconds"))
      expect(code._tag === "Some" ? code.value : "still running after 6 s").toBe(0)
    }).pipe(Effect.scoped), 30_000)

  it.live.runIf(usable || inCI)("layerCommandExecutor, two sandboxed `head -c 3` reading stdin in turn: the second gets the next bytes", () =>
    Effect.gen(function*() {
      const { ws, remove } = makeTestWorkspace("enr-review3-")
      yield* Effect.addFinalizer(() => Effect.sync(remove))
      const host = yield* run(TSX, [FIXTURE, ws])
      host.child.stdin!.write("abc")
      yield* Effect.sleep("3 seconds")
      host.child.stdin!.end("def")
      yield* Effect.promise(() => host.exited)
      // Unsandboxed (the descriptor itself) this prints {"first":"abc","second":"def"}.
      expect(JSON.parse(host.out())).toStrictEqual({ first: "abc", second: "def" })
    }).pipe(Effect.scoped), 30_000)
})
