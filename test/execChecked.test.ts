/** `execChecked` and `checkExit`: a run that did not end with exit 0 as a typed failure, for callers who want execa's default. */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Errors from "../src/Errors.js"
import * as NativeRunner from "../src/NativeRunner.js"
import * as NativeRunnerTest from "../src/NativeRunnerTest.js"

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)

describe("execChecked", () => {
  it.live("exit 0: the result, as exec returns it", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.execChecked({ argv: ["sh", "-c", "echo ok"] })
      expect([result.exitCode, text(result.stdout)]).toStrictEqual([0, "ok\n"])
    }).pipe(Effect.provide(NativeRunner.layerNode())))

  it.live("a non-zero exit: NonZeroExit with the code, the tails and the result; the message names only the program", () =>
    Effect.gen(function*() {
      const failed = yield* Effect.either(NativeRunner.execChecked({
        argv: ["sh", "-c", "head -c 10000 /dev/zero | tr '\\0' o; echo 'secret-token-value' >&2; exit 3", "arg-secret"]
      }))
      expect(Either.isLeft(failed)).toBe(true)
      if (Either.isLeft(failed)) {
        const error = failed.left
        expect(error).toBeInstanceOf(Errors.NonZeroExit)
        if (error._tag !== "NonZeroExit") return
        expect([error.message, error.exitCode, error.signal, error.timedOut]).toStrictEqual(["sh exited with code 3", 3, undefined, false])
        expect([error.stdoutTail.length, text(error.stderrTail)]).toStrictEqual([4096, "secret-token-value\n"])
        expect(error.result.stdoutBytes).toBe(10_000)
        expect(error.message).not.toMatch(/secret/)
      }
    }).pipe(Effect.provide(NativeRunner.layerNode())))

  it.live("a timeout and a signal are failures too, each said as such", () =>
    Effect.gen(function*() {
      const slow = yield* Effect.flip(NativeRunner.execChecked({ argv: ["sleep", "5"], timeout: "200 millis", killGrace: "100 millis" }))
      expect(slow._tag === "NonZeroExit" && [slow.message, slow.timedOut]).toStrictEqual(["sleep timed out (exit 124)", true])
      const killed = yield* Effect.flip(NativeRunner.execChecked({ argv: ["sh", "-c", "kill -9 $$"] }))
      expect(killed._tag === "NonZeroExit" && [killed.message, killed.signal]).toStrictEqual(["sh was killed by SIGKILL (exit 137)", "SIGKILL"])
    }).pipe(Effect.provide(NativeRunner.layerNode())))

  it.effect("checkExit works on any runner's exec, the test layer's included; spawn failures stay what they were", () =>
    Effect.gen(function*() {
      const pushed = yield* Effect.flip(NativeRunner.exec({ argv: ["git", "push"] }).pipe(NativeRunner.checkExit("git")))
      expect(pushed._tag === "NonZeroExit" && [pushed.message, text(pushed.stderrTail)]).toStrictEqual(["git exited with code 1", "! [rejected]\n"])
      const missing = yield* Effect.flip(NativeRunner.execChecked({ argv: ["nope"] }))
      expect(missing._tag).toBe("SpawnError")
    }).pipe(Effect.provide(NativeRunnerTest.layerTest([
      NativeRunnerTest.exact(["git", "push"], { stderr: "! [rejected]\n", exit: 1 }),
      NativeRunnerTest.exact(["nope"], NativeRunnerTest.spawnFails("NotFound"))
    ]))))
})
