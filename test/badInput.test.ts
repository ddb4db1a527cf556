/**
 * Malformed input, table-driven: each case is a valid exec (`sh -c "touch <marker>"`) broken in exactly one way.
 * Each must end in a typed error (`InvalidInput`, or `SpawnError` with the right reason) and spawn nothing.
 *
 * "Nothing spawned" is proven two ways: the marker file must not exist afterwards, and `child_process.spawn` is
 * wrapped to count calls (the platform calls it through the ESM namespace, which `syncBuiltinESMExports` updates).
 * Bad input reaches the runner the way untyped JavaScript would: through `Reflect.apply`, no casts.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import cp from "node:child_process"
import { existsSync, writeFileSync } from "node:fs"
import { syncBuiltinESMExports } from "node:module"
import * as path from "node:path"
import type { NativeRunnerError } from "../src/Errors.js"
import type { ExecResult } from "../src/Exec.js"
import * as NativeRunner from "../src/NativeRunner.js"
import { scratchDir } from "./helpers/tempDirs.js"

const dir = scratchDir("enr-bad-input-")
const aFile = path.join(dir, "a-file")
writeFileSync(aFile, "not a directory")

let spawnCalls = 0
const originalSpawn = cp.spawn
const countingSpawn = function(this: unknown, ...args: Array<unknown>): unknown {
  spawnCalls++
  return Reflect.apply(originalSpawn, this, args)
}
const setSpawn = (value: unknown) => {
  Object.defineProperty(cp, "spawn", { value, writable: true, configurable: true })
  syncBuiltinESMExports()
}
beforeAll(() => setSpawn(countingSpawn))
afterAll(() => setSpawn(originalSpawn))

let markers = 0
const newMarker = () => path.join(dir, `marker-${++markers}`)

type Expected =
  | { readonly _tag: "InvalidInput"; readonly path?: string }
  | { readonly _tag: "SpawnError"; readonly reason: "NotFound" | "PermissionDenied" | "CwdNotFound" | "CwdNotDirectory" | "Unknown" }

interface Case {
  readonly name: string
  /** The exec input, given the marker the valid command would create. */
  readonly input: (marker: string) => unknown
  readonly expected: Expected
  /** Through `toPromiseRunner` instead of the Effect API. */
  readonly viaPromise?: boolean
}

const touch = (marker: string) => ["sh", "-c", `touch '${marker}'`]
const valid = (marker: string) => ({ argv: touch(marker) })
const invalid = (issuePath?: string): Expected =>
  issuePath === undefined ? { _tag: "InvalidInput" } : { _tag: "InvalidInput", path: issuePath }
const withLimits = (limits: Record<string, unknown>) => (m: string) => ({ ...valid(m), limits })

const cases: ReadonlyArray<Case> = [
  // argv
  { name: "empty argv", input: () => ({ argv: [] }), expected: invalid("argv") },
  { name: "empty argv[0]", input: (m) => ({ argv: ["", ...touch(m).slice(1)] }), expected: invalid("argv") },
  { name: "NUL in argv[0]", input: (m) => ({ argv: ["s\0h", ...touch(m).slice(1)] }), expected: invalid("argv.0") },
  { name: "NUL in an argument", input: (m) => ({ argv: ["sh", "-c", `touch '${m}'\0; true`] }), expected: invalid("argv.2") },
  { name: "argv not an array (a string)", input: (m) => ({ argv: touch(m).join(" ") }), expected: invalid("argv") },
  { name: "argv an array-like object", input: (m) => ({ argv: { 0: "sh", 1: "-c", 2: `touch ${m}`, length: 3 } }), expected: invalid("argv") },
  { name: "argv with a number", input: (m) => ({ argv: [...touch(m), 42] }), expected: invalid("argv.3") },
  { name: "argv with null", input: (m) => ({ argv: [...touch(m), null] }), expected: invalid("argv.3") },
  { name: "argv with a hole", input: (m) => ({ argv: ["sh", undefined, "-c", `touch '${m}'`] }), expected: invalid("argv.1") },
  { name: "argv missing", input: () => ({ cwd: dir }), expected: invalid("argv") },
  // the input itself
  { name: "input null", input: () => null, expected: invalid() },
  { name: "input a string", input: (m) => touch(m).join(" "), expected: invalid() },
  // env
  { name: "NUL in an env name", input: (m) => ({ ...valid(m), env: { "A\0B": "1" } }), expected: invalid("env") },
  { name: "NUL in an env value", input: (m) => ({ ...valid(m), env: { A: "x\0y" } }), expected: invalid("env") },
  { name: "'=' in an env name", input: (m) => ({ ...valid(m), env: { "A=B": "1" } }), expected: invalid("env") },
  { name: "empty env name", input: (m) => ({ ...valid(m), env: { "": "1" } }), expected: invalid("env") },
  { name: "env value a number", input: (m) => ({ ...valid(m), env: { A: 1 } }), expected: invalid("env") },
  { name: "env a string", input: (m) => ({ ...valid(m), env: "A=1" }), expected: invalid("env") },
  // cwd (decoding)
  { name: "NUL in cwd", input: (m) => ({ ...valid(m), cwd: `${dir}\0/x` }), expected: invalid("cwd") },
  { name: "empty cwd", input: (m) => ({ ...valid(m), cwd: "" }), expected: invalid("cwd") },
  { name: "cwd a number", input: (m) => ({ ...valid(m), cwd: 5 }), expected: invalid("cwd") },
  // limits
  { name: "negative maxStdoutBytes", input: withLimits({ maxStdoutBytes: -1 }), expected: invalid("limits.maxStdoutBytes") },
  { name: "NaN maxStderrBytes", input: withLimits({ maxStderrBytes: Number.NaN }), expected: invalid("limits.maxStderrBytes") },
  { name: "Infinity maxStdoutBytes", input: withLimits({ maxStdoutBytes: Infinity }), expected: invalid("limits.maxStdoutBytes") },
  { name: "huge maxStdoutBytes (2^53)", input: withLimits({ maxStdoutBytes: 2 ** 53 }), expected: invalid("limits.maxStdoutBytes") },
  { name: "fractional maxStderrBytes", input: withLimits({ maxStderrBytes: 1.5 }), expected: invalid("limits.maxStderrBytes") },
  { name: "maxStdoutBytes a string", input: withLimits({ maxStdoutBytes: "1024" }), expected: invalid("limits.maxStdoutBytes") },
  { name: "timeoutMs 0", input: withLimits({ timeoutMs: 0 }), expected: invalid("limits.timeoutMs") },
  { name: "negative timeoutMs", input: withLimits({ timeoutMs: -100 }), expected: invalid("limits.timeoutMs") },
  { name: "NaN timeoutMs", input: withLimits({ timeoutMs: Number.NaN }), expected: invalid("limits.timeoutMs") },
  { name: "Infinity timeoutMs", input: withLimits({ timeoutMs: Infinity }), expected: invalid("limits.timeoutMs") },
  { name: "timeoutMs beyond a Node timer (2^31)", input: withLimits({ timeoutMs: 2 ** 31 }), expected: invalid("limits.timeoutMs") },
  { name: "fractional timeoutMs", input: withLimits({ timeoutMs: 1.5 }), expected: invalid("limits.timeoutMs") },
  { name: "limits a number", input: (m) => ({ ...valid(m), limits: 5 }), expected: invalid("limits") },
  // stdin
  { name: "stdin a string", input: (m) => ({ ...valid(m), stdin: "hello" }), expected: invalid("stdin") },
  { name: "stdin an array of numbers", input: (m) => ({ ...valid(m), stdin: [104, 105] }), expected: invalid("stdin") },
  { name: "stdin a number", input: (m) => ({ ...valid(m), stdin: 42 }), expected: invalid("stdin") },
  { name: "stdin a Uint16Array", input: (m) => ({ ...valid(m), stdin: new Uint16Array(2) }), expected: invalid("stdin") },
  // durations
  { name: "timeout not a duration", input: (m) => ({ ...valid(m), timeout: "banana" }), expected: invalid("timeout") },
  { name: "timeout 0", input: (m) => ({ ...valid(m), timeout: 0 }), expected: invalid("timeout") },
  { name: "negative timeout", input: (m) => ({ ...valid(m), timeout: -5 }), expected: invalid("timeout") },
  { name: "negative timeout string", input: (m) => ({ ...valid(m), timeout: "-5 millis" }), expected: invalid("timeout") },
  { name: "infinite timeout", input: (m) => ({ ...valid(m), timeout: Infinity }), expected: invalid("timeout") },
  { name: "timeout an object", input: (m) => ({ ...valid(m), timeout: { millis: 5 } }), expected: invalid("timeout") },
  { name: "infinite killGrace", input: (m) => ({ ...valid(m), killGrace: "Infinity" }), expected: invalid("killGrace") },
  { name: "negative killGrace", input: (m) => ({ ...valid(m), killGrace: -5 }), expected: invalid("killGrace") },
  { name: "negative killGrace string", input: (m) => ({ ...valid(m), killGrace: "-5 millis" }), expected: invalid("killGrace") },
  { name: "killGrace not a duration", input: (m) => ({ ...valid(m), killGrace: "1 fortnight" }), expected: invalid("killGrace") },
  // unknown fields, through the Promise bridge (as a tool written against the seed's contract would send them)
  { name: "unknown field (typo of a limit)", input: (m) => ({ ...valid(m), timeoutMS: 5 }), expected: invalid("timeoutMS"), viaPromise: true },
  { name: "unknown field inside limits", input: withLimits({ maxBytes: 10 }), expected: invalid("limits.maxBytes"), viaPromise: true },
  { name: "own __proto__ field", input: (m) => JSON.parse(`{"argv":${JSON.stringify(touch(m))},"__proto__":{"cwd":"/"}}`), expected: invalid("__proto__"), viaPromise: true },
  { name: "NUL in argv, via Promise", input: (m) => ({ argv: ["sh", "-c", `touch '${m}'\0`] }), expected: invalid("argv.2"), viaPromise: true },
  // decoded fine, refused before spawning
  { name: "relative cwd that does not exist", input: (m) => ({ ...valid(m), cwd: "no/such/dir" }), expected: { _tag: "SpawnError", reason: "CwdNotFound" } },
  { name: "absolute cwd that does not exist", input: (m) => ({ ...valid(m), cwd: path.join(dir, "missing") }), expected: { _tag: "SpawnError", reason: "CwdNotFound" } },
  { name: "cwd that is a file", input: (m) => ({ ...valid(m), cwd: aFile }), expected: { _tag: "SpawnError", reason: "CwdNotDirectory" } },
  { name: "cwd that is a file, via Promise", input: (m) => ({ ...valid(m), cwd: aFile }), expected: { _tag: "SpawnError", reason: "CwdNotDirectory" }, viaPromise: true },
  // the program itself cannot be started (spawn is attempted, no process comes of it)
  { name: "program not found", input: (m) => ({ argv: ["/nonexistent/sh", "-c", `touch '${m}'`] }), expected: { _tag: "SpawnError", reason: "NotFound" } },
  { name: "program is a directory", input: (m) => ({ argv: [dir, "-c", `touch '${m}'`] }), expected: { _tag: "SpawnError", reason: "PermissionDenied" } },
  // `Duration.decode` turns NaN into zero: a NaN grace would silently mean "SIGKILL at once".
  { name: "NaN killGrace", input: (m) => ({ ...valid(m), killGrace: Number.NaN }), expected: invalid("killGrace") },
  { name: "NaN in an hrtime killGrace", input: (m) => ({ ...valid(m), killGrace: [Number.NaN, 0] }), expected: invalid("killGrace") },
  // Node's spawn throws E2BIG synchronously (not as an "error" event) inside the platform's Effect.async.
  { name: "argument beyond the kernel's limit", input: (m) => ({ argv: [...touch(m), "x".repeat(200_000)] }), expected: { _tag: "SpawnError", reason: "Unknown" } },
  { name: "env value beyond the kernel's limit", input: (m) => ({ ...valid(m), env: { BIG: "x".repeat(200_000) } }), expected: { _tag: "SpawnError", reason: "Unknown" } }
]

// Spawning in this process (no spawn helper), so the wrapped `child_process.spawn` sees every spawn.
const runtime = ManagedRuntime.make(NativeRunner.layerNode({ spawnHelper: "off" }))
// One exec first: after its first spawn a layer that spawns directly starts its host-death watcher (one more spawn,
// once), which the counts below must not mistake for a retry.
beforeAll(() => runtime.runPromise(NativeRunner.exec({ argv: ["true"] })))
const promiseRunner = NativeRunner.toPromiseRunner(NativeRunner.layerNode({ spawnHelper: "off" }))
beforeAll(() => promiseRunner.exec({ argv: ["true"] }))
afterAll(async () => {
  await runtime.dispose()
  await promiseRunner.dispose()
})

/** Runs one input as untyped code would; the typed error or the result, as data. Defects reject. */
const attempt = async (kase: Case, marker: string): Promise<Either.Either<ExecResult, unknown>> => {
  const input = kase.input(marker)
  if (kase.viaPromise === true) {
    const pending: Promise<ExecResult> = Reflect.apply(promiseRunner.exec, promiseRunner, [input])
    return pending.then(Either.right, Either.left)
  }
  const exec: Effect.Effect<ExecResult, NativeRunnerError, NativeRunner.NativeRunner> = Reflect.apply(
    NativeRunner.exec,
    undefined,
    [input]
  )
  return runtime.runPromise(Effect.either(exec))
}

const fieldOf = (error: unknown, field: string): unknown =>
  typeof error === "object" && error !== null ? Reflect.get(error, field) : undefined

const check = async (kase: Case) => {
  const marker = newMarker()
  const callsBefore = spawnCalls
  const outcome = await attempt(kase, marker)
  // A spawned `sh -c touch` could still be starting: give it time to show itself before looking for the marker.
  await new Promise((resolve) => setTimeout(resolve, 50))
  expect(existsSync(marker)).toBe(false)
  expect(Either.isLeft(outcome)).toBe(true)
  if (Either.isRight(outcome)) return
  const error = outcome.left
  expect(fieldOf(error, "_tag")).toBe(kase.expected._tag)
  if (kase.expected._tag === "InvalidInput") {
    // Refused while decoding: the spawner was never reached.
    expect(spawnCalls).toBe(callsBefore)
    if (kase.expected.path !== undefined) {
      const issues = fieldOf(error, "issues")
      const paths = Array.isArray(issues) ? issues.map((issue) => fieldOf(issue, "path")) : []
      expect(paths).toContain(kase.expected.path)
    }
  } else {
    expect(fieldOf(error, "reason")).toBe(kase.expected.reason)
    // At most the one failing spawn() call (Node reports a bad program or cwd from the forked child before exec),
    // never a retry; the marker above proves the command itself never ran.
    expect(spawnCalls - callsBefore).toBeLessThanOrEqual(1)
  }
}

const CANARY = "sk-canary-0b9d4e"
const CANARY_NUMBER = 73_123_457

/** No rendering of the error (message, issues, String, JSON, stack) holds a canary. */
const expectNoCanary = (error: unknown) => {
  const issues = fieldOf(error, "issues")
  expect(Array.isArray(issues) && issues.length > 0).toBe(true)
  for (const text of [fieldOf(error, "message"), issues, error, fieldOf(error, "stack")].flatMap((part) => [
    String(part),
    JSON.stringify(part) ?? ""
  ])) {
    expect(text).not.toContain(CANARY)
    expect(text).not.toContain(String(CANARY_NUMBER))
  }
}

// Unit-level cases with the exact messages are in Exec.test.ts; these go through the runner, both APIs.
const secretCases: ReadonlyArray<Case> = [
  { name: "secret env value beside a number", input: (m) => ({ ...valid(m), env: { OPENAI_API_KEY: CANARY, PORT: CANARY_NUMBER } }), expected: invalid("env") },
  { name: "secret env value with a NUL byte", input: (m) => ({ ...valid(m), env: { OPENAI_API_KEY: `${CANARY}\0` } }), expected: invalid("env") },
  { name: "stdin a secret string", input: (m) => ({ ...valid(m), stdin: CANARY }), expected: invalid("stdin") },
  { name: "secret argument with a NUL byte", input: (m) => ({ argv: [...touch(m), `--token=${CANARY}\0`] }), expected: invalid("argv.3") },
  { name: "unknown field holding a secret", input: (m) => ({ ...valid(m), apiKey: CANARY }), expected: invalid("apiKey"), viaPromise: true },
  { name: "unknown limit holding a secret", input: withLimits({ token: CANARY }), expected: invalid("limits.token") },
  { name: "a number where a string belongs", input: (m) => ({ argv: [...touch(m), CANARY_NUMBER] }), expected: invalid("argv.3"), viaPromise: true },
  { name: "nested limits holding secrets", input: withLimits({ timeoutMs: CANARY, maxStdoutBytes: { v: CANARY }, maxStderrBytes: CANARY_NUMBER + 0.5 }), expected: invalid("limits.timeoutMs") },
  { name: "timeout a secret string", input: (m) => ({ ...valid(m), timeout: CANARY }), expected: invalid("timeout") }
]

describe("InvalidInput never carries the values of the input", () => {
  it.each(secretCases)("$name", async (kase) => {
    await check(kase)
    const outcome = await attempt(kase, newMarker())
    expect(Either.isLeft(outcome)).toBe(true)
    if (Either.isLeft(outcome)) expectNoCanary(outcome.left)
  })
})

describe("malformed exec input gets a typed error and spawns nothing", () => {
  it("has at least 30 cases", () => {
    expect(cases.length).toBeGreaterThanOrEqual(30)
  })

  it("the valid command really creates its marker (so a missing marker means something)", async () => {
    const marker = newMarker()
    const callsBefore = spawnCalls
    const result = await runtime.runPromise(NativeRunner.exec({ argv: touch(marker) }))
    expect(result.exitCode).toBe(0)
    expect(existsSync(marker)).toBe(true)
    expect(spawnCalls).toBe(callsBefore + 1)
  })

  it.each(cases)("$name", (kase) => check(kase))
})

describe("bad layer options fail the layer with InvalidInput", () => {
  const badOptions: ReadonlyArray<readonly [string, unknown]> = [
    ["negative maxConcurrent", { maxConcurrent: -1 }],
    ["zero maxConcurrent", { maxConcurrent: 0 }],
    ["fractional maxConcurrent", { maxConcurrent: 1.5 }],
    ["NaN maxConcurrent", { maxConcurrent: Number.NaN }],
    ["negative maxStdoutBytes", { maxStdoutBytes: -1 }],
    ["huge maxStderrBytes", { maxStderrBytes: 2 ** 40 }],
    ["timeout 0", { timeout: 0 }],
    ["NaN killGrace", { killGrace: Number.NaN }],
    ["NaN drainTimeout", { drainTimeout: Number.NaN }],
    ["redactArgv not a function", { redactArgv: "yes" }],
    ["timeout not a duration", { timeout: "soon" }],
    ["relative cwd", { cwd: "relative/dir" }],
    ["unknown inheritEnv", { inheritEnv: "some" }],
    ["'=' in an env name", { env: { "A=B": "1" } }],
    ["empty env name", { env: { "": "1" } }],
    ["negative killGrace", { killGrace: -1 }],
    ["negative drainTimeout", { drainTimeout: "-1 seconds" }]
  ]

  const build = (options: unknown) => {
    const layer: Layer.Layer<NativeRunner.NativeRunner, NativeRunnerError> = Reflect.apply(
      NativeRunner.layerNode,
      undefined,
      [options]
    )
    return Effect.runPromise(Effect.either(Effect.scoped(Layer.build(layer))))
  }

  it.each(badOptions)("%s", async (_name, options) => {
    const built = await build(options)
    expect(Either.isLeft(built) && built.left._tag).toBe("InvalidInput")
  })

  it("good options build (control)", async () => {
    const built = await build({ maxConcurrent: 4, timeout: "5 seconds", cwd: dir })
    expect(Either.isRight(built)).toBe(true)
  })

  // Layer options are often built from configuration that holds secrets; the error must not carry them.
  const secretOptions: ReadonlyArray<readonly [string, unknown]> = [
    ["a secret env value beside a number", { env: { OPENAI_API_KEY: CANARY, PORT: CANARY_NUMBER } }],
    ["a secret env value with a NUL byte", { env: { OPENAI_API_KEY: `${CANARY}\0` } }],
    ["timeout a secret string", { timeout: CANARY }],
    ["cwd a relative secret", { cwd: CANARY }],
    ["inheritEnv a secret", { inheritEnv: CANARY }],
    ["maxConcurrent a secret number", { maxConcurrent: CANARY_NUMBER + 0.5 }],
    ["a sandbox policy holding secrets", { sandbox: { policy: { workspace: CANARY, env: { TOKEN: CANARY_NUMBER } } } }],
    ["resource limits holding secrets", { resourceLimits: { maxProcesses: CANARY, maxOpenFiles: CANARY_NUMBER + 0.5 } }]
  ]

  it.each(secretOptions)("%s: InvalidInput without the value", async (_name, options) => {
    const built = await build(options)
    expect(Either.isLeft(built) && built.left._tag).toBe("InvalidInput")
    if (Either.isLeft(built)) expectNoCanary(built.left)
  })

})
