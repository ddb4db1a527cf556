/** Topic "environment": the inherit modes ("core", "all", "none"), secrets never inherited, explicit env wins. */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type { SuiteContext } from "./context.js"
import { SUITE_HOST_ENV } from "./fixture.js"

/** The variables "core" inherits, as documented on `NativeRunner.Options.inheritEnv`; spelled out as the contract. */
const CORE_ENV = ["PATH", "HOME", "LANG", "TERM", "TZ", "TMPDIR", "USER", "SHELL"] as const
const SECRET_LOOKING = /KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION/i

const parseEnv = (bytes: Uint8Array): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const record of new TextDecoder().decode(bytes).split("\u0000")) {
    if (record === "") continue
    const eq = record.indexOf("=")
    env[record.slice(0, eq)] = record.slice(eq + 1)
  }
  return env
}

const coreMode = <E>({ commands, run, test }: SuiteContext<E>, hostValue: (name: string) => string | undefined) =>
  test("env")("\"core\" (the default) inherits only the core variables, never secrets; explicit env wins", () =>
    Effect.gen(function*() {
      requireHostEnv(hostValue)
      const result = yield* run(
        { argv: commands.env, env: { NR_BOTH: "input", NR_INPUT: "input", NR_INPUT_TOKEN: "explicit" } },
        { env: { NR_LAYER: "layer", NR_BOTH: "layer" } }
      )
      const expected: Record<string, string> = {}
      for (const name of CORE_ENV) {
        const value = hostValue(name)
        if (value !== undefined) expected[name] = value
      }
      Object.assign(expected, { NR_LAYER: "layer", NR_BOTH: "input", NR_INPUT: "input", NR_INPUT_TOKEN: "explicit" })
      expect(parseEnv(result.stdout)).toEqual(expected)
    }))

const allMode = <E>({ commands, run, test }: SuiteContext<E>, hostValue: (name: string) => string | undefined) =>
  test("env")("\"all\" inherits the host env except secret-looking names", () =>
    Effect.gen(function*() {
      requireHostEnv(hostValue)
      const result = yield* run({ argv: commands.env, env: { NR_INPUT: "input" } }, { inheritEnv: "all" })
      const child = parseEnv(result.stdout)
      expect(child["NR_SUITE_EXTRA"]).toBe(SUITE_HOST_ENV["NR_SUITE_EXTRA"])
      expect(child["PATH"]).toBe(hostValue("PATH"))
      expect(child["NR_INPUT"]).toBe("input")
      expect(Object.keys(child).filter((n) => SECRET_LOOKING.test(n))).toEqual([])
      // Nothing invented: every variable is the host's (same value) or the explicit one.
      for (const [key, value] of Object.entries(child)) {
        if (key !== "NR_INPUT") expect({ [key]: value }).toEqual({ [key]: hostValue(key) })
      }
    }))

const noneMode = <E>({ commands, run, test }: SuiteContext<E>, hostValue: (name: string) => string | undefined) =>
  test("env")("\"none\" passes only the explicit variables", () =>
    Effect.gen(function*() {
      const path = hostValue("PATH") ?? "/usr/bin:/bin"
      const result = yield* run({ argv: commands.env, env: { NR_INPUT: "input" } }, {
        inheritEnv: "none",
        env: { PATH: path }
      })
      expect(parseEnv(result.stdout)).toEqual({ PATH: path, NR_INPUT: "input" })
    }))

const requireHostEnv = (hostValue: (name: string) => string | undefined) => {
  for (const [key, value] of Object.entries(SUITE_HOST_ENV)) {
    const message = "the fixture's host env must include SUITE_HOST_ENV"
    expect({ [key]: hostValue(key) }, message).toEqual({ [key]: value })
  }
}

export const registerEnvironment = <E>(ctx: SuiteContext<E>): void => {
  describe("environment", () => {
    const hostValue = (name: string) => ctx.fixture.hostEnv[name]
    coreMode(ctx, hostValue)
    allMode(ctx, hostValue)
    noneMode(ctx, hostValue)
  })
}
