/**
 * `NativeRunner.layerConfig`: the live layer's options from `Config` (the `NATIVE_RUNNER_*` variables), each checked as
 * it is read with the layer's own Schemas, a bad value a `ConfigError` naming its variable.
 */
import { describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import { chmodSync, chownSync, mkdtempSync, rmSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as NativeRunner from "../src/NativeRunner.js"
import { sandboxPreflight } from "./helpers/bin.js"

const { usable, inCI } = await sandboxPreflight("layerConfig sandbox test")

/** The layer built under a ConfigProvider of `variables` only (the host's own environment is not read). */
const withVariables = (variables: Record<string, string>) =>
  Layer.provide(NativeRunner.layerConfig(), Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(variables)))))

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)

describe("layerConfig", () => {
  it.live("sizes, durations and choices from the variables reach every exec", () =>
    Effect.gen(function*() {
      const capped = yield* NativeRunner.exec({ argv: ["sh", "-c", "printf 0123456789"] })
      expect([text(capped.stdout), capped.truncatedStdout]).toStrictEqual(["6789", true])
      const slow = yield* NativeRunner.exec({ argv: ["sleep", "5"] })
      expect([slow.exitCode, slow.timedOut]).toStrictEqual([124, true])
      expect(slow.durationMs).toBeLessThan(3_000)
    }).pipe(Effect.provide(withVariables({
      NATIVE_RUNNER_MAX_STDOUT: "4",
      NATIVE_RUNNER_KEEP: "tail",
      NATIVE_RUNNER_TIMEOUT: "300 millis",
      NATIVE_RUNNER_KILL_GRACE: "100",
      NATIVE_RUNNER_SPAWN_HELPER: "off"
    }))))

  it.live("NATIVE_RUNNER_ALL and NATIVE_RUNNER_MAX_ALL turn on the combined capture and cap it", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.exec({ argv: ["sh", "-c", "printf abc; sleep 0.2; printf def >&2"] })
      expect([result.all === undefined ? undefined : text(result.all), result.allOmitted]).toStrictEqual(["abcd", { offset: 4, bytes: 2 }])
    }).pipe(Effect.provide(withVariables({ NATIVE_RUNNER_ALL: "true", NATIVE_RUNNER_MAX_ALL: "4" }))))

  it.live("none set: the defaults (1 MiB caps, 60 s timeout)", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.exec({ argv: ["sh", "-c", "head -c 2000000 /dev/zero"] })
      expect([result.stdout.length, result.stdoutBytes]).toStrictEqual([1024 * 1024, 2_000_000])
    }).pipe(Effect.provide(withVariables({}))))

  it.live.each([
    ["NATIVE_RUNNER_MAX_STDOUT", "lots"],
    ["NATIVE_RUNNER_MAX_STDOUT", "-1"],
    ["NATIVE_RUNNER_TIMEOUT", "soon"],
    ["NATIVE_RUNNER_TIMEOUT", "0 seconds"],
    ["NATIVE_RUNNER_KEEP", "middle"],
    ["NATIVE_RUNNER_ALL", "yes"],
    ["NATIVE_RUNNER_MAX_ALL", "5 apples"],
    ["NATIVE_RUNNER_MAX_CONCURRENT", "0"],
    ["NATIVE_RUNNER_SPILL_DIR", "relative/dir"],
    ["NATIVE_RUNNER_SANDBOX_NETWORK", "host"]
  ] as const)("%s=%s: a ConfigError naming the variable, no layer", ([name, value]) =>
    Effect.gen(function*() {
      const built = yield* Effect.either(Effect.scoped(Layer.build(withVariables({ [name]: value }))))
      expect(Either.isLeft(built)).toBe(true)
      if (Either.isLeft(built)) {
        const error = built.left
        expect("_op" in error && error._op === "InvalidData" ? error.path : String(error)).toStrictEqual([name])
        expect(String(error)).toContain(name)
      }
    }))

  it.live.runIf(usable || inCI)("NATIVE_RUNNER_SANDBOX_WORKSPACE sandboxes every exec in that workspace", () => {
    // A workspace the sandbox user can write, in a parent it cannot (as `native-runner workspace new` makes one).
    const parent = mkdtempSync(path.join(os.tmpdir(), "enr-layer-config-"))
    chmodSync(parent, 0o755)
    const workspace = mkdtempSync(path.join(parent, "ws-"))
    if (process.getuid?.() === 0) chownSync(workspace, 65534, 65534)
    const uid = process.getuid?.() === 0 ? 65534 : process.getuid?.()
    return NativeRunner.exec({ argv: ["sh", "-c", "pwd; id -u"] }).pipe(
      Effect.map((result) => expect(text(result.stdout)).toBe(`/workspace\n${uid}\n`)),
      Effect.provide(withVariables({ NATIVE_RUNNER_SANDBOX_WORKSPACE: workspace })),
      Effect.ensuring(Effect.sync(() => rmSync(parent, { recursive: true, force: true })))
    )
  }, 30_000)
})
