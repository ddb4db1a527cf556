/**
 * Decoding exec input (`Exec.decodeInput`) and the `InvalidInput` it fails with. Input can hold secrets (env values,
 * stdin, argv), and errors end up in logs: every message names the field and what it expected, never the value.
 * Pure: nothing is spawned here (the same inputs through the runner and its layers are in badInput.test.ts).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import { decodeInput, MAX_TIMEOUT_MS, toInvalidInput } from "../src/Exec.js"
import type { InvalidInput } from "../src/Errors.js"
import * as Sandbox from "../src/Sandbox.js"

const CANARY = "sk-canary-5f1e2d"
const CANARY_NUMBER = 73_123_457
const argv = ["true"]

/** Every way an error can be shown: none of them may hold a canary. */
const renderings = (error: InvalidInput): ReadonlyArray<string> => [
  error.message,
  JSON.stringify(error.issues),
  String(error),
  JSON.stringify(error),
  String(error.stack)
]

const refused = (input: unknown): InvalidInput => {
  const decoded = Effect.runSync(Effect.either(decodeInput(input)))
  if (Either.isRight(decoded)) throw new Error("the input was accepted")
  return decoded.left
}

type Issues = ReadonlyArray<{ readonly path: string; readonly message: string }>

const secretCases: ReadonlyArray<readonly [string, unknown, Issues]> = [
  [
    "a secret env value beside a number",
    { argv, env: { OPENAI_API_KEY: CANARY, PORT: CANARY_NUMBER } },
    [{ path: "env", message: "environment variable \"PORT\" must be a string" }]
  ],
  [
    "a secret env value with a NUL byte",
    { argv, env: { OPENAI_API_KEY: `${CANARY}\0` } },
    [{ path: "env", message: "environment variable \"OPENAI_API_KEY\" must not contain a NUL byte" }]
  ],
  [
    "env as a KEY=VALUE string",
    { argv, env: `OPENAI_API_KEY=${CANARY}` },
    [{ path: "env", message: "expected an object of string environment variables" }]
  ],
  ["stdin a secret string", { argv, stdin: CANARY }, [{ path: "stdin", message: "expected a Uint8Array or a Stream of Uint8Array" }]],
  [
    "an argument with a secret and a NUL byte",
    { argv: ["curl", "-H", `Authorization: Bearer ${CANARY}\0`] },
    [{ path: "argv.2", message: "must not contain a NUL byte" }]
  ],
  [
    "unknown fields holding secrets",
    { argv, apiKey: CANARY, limits: { token: CANARY } },
    [{ path: "apiKey", message: "is not a known field" }, { path: "limits.token", message: "is not a known field" }]
  ],
  [
    "a number where a string belongs",
    { argv: ["echo", CANARY_NUMBER], cwd: CANARY_NUMBER },
    [{ path: "argv.1", message: "expected a string" }, { path: "cwd", message: "expected a string" }]
  ],
  [
    "nested limits holding secrets",
    { argv, limits: { timeoutMs: CANARY, maxStdoutBytes: { value: CANARY }, maxStderrBytes: CANARY_NUMBER + 0.5 } },
    [
      { path: "limits.maxStdoutBytes", message: "expected a number" },
      { path: "limits.maxStderrBytes", message: "must be a whole number of bytes from 0 to 4294967296" },
      { path: "limits.timeoutMs", message: "expected a number" }
    ]
  ],
  [
    "durations holding secrets",
    { argv, timeout: CANARY, killGrace: [CANARY, 0] },
    [
      { path: "timeout", message: "expected a Duration.DurationInput such as \"500 millis\" or Duration.seconds(2)" },
      { path: "killGrace", message: "expected a Duration.DurationInput such as \"500 millis\" or Duration.seconds(2)" }
    ]
  ],
  ["the input a secret string", CANARY, [{ path: "", message: "expected an object" }]],
  ["argv a secret string", { argv: `curl -u admin:${CANARY}` }, [{ path: "argv", message: "expected an array" }]],
  [
    "empty argv beside a secret env",
    { argv: [], env: { TOKEN: CANARY } },
    [{ path: "argv", message: "must not be empty" }]
  ]
]

describe("InvalidInput never carries input values", () => {
  it.each(secretCases)("%s: names the field and what it expected", (_name, input, issues) => {
    const error = refused(input)
    expect(error.issues).toStrictEqual(issues)
    for (const text of renderings(error)) {
      expect(text).not.toContain(CANARY)
      expect(text).not.toContain(String(CANARY_NUMBER))
    }
  })

  it("the message is the issues, each as 'path: message'", () => {
    expect(refused({ argv: ["echo", 1], env: { PORT: 8080 } }).message).toBe(
      "invalid exec input: argv.1: expected a string; env: environment variable \"PORT\" must be a string"
    )
    expect(refused(null).message).toBe("invalid exec input: expected an object")
  })

  it("layer-option schemas too: records, unions of literals, refinements with their own messages", () => {
    // Shaped like the runner's options: `toInvalidInput` is shared by every schema the package decodes.
    const Options = Schema.Struct({
      inheritEnv: Schema.optional(Schema.Literal("none", "core", "all")),
      policy: Schema.optional(Sandbox.Policy)
    })
    const error = Effect.runSync(Effect.flip(
      Schema.decodeUnknown(Options, { errors: "all", onExcessProperty: "error" })({
        inheritEnv: CANARY,
        policy: { workspace: CANARY, env: { TOKEN: CANARY_NUMBER }, user: { uid: CANARY_NUMBER + 0.5, gid: 0 } },
        secret: CANARY
      }).pipe(Effect.mapError(toInvalidInput("invalid runner options")))
    ))
    expect(error.issues).toStrictEqual([
      { path: "secret", message: "is not a known field" },
      { path: "inheritEnv", message: "expected one of \"none\", \"core\", \"all\"" },
      { path: "policy.workspace", message: "must be an absolute path without NUL bytes" },
      { path: "policy.env.TOKEN", message: "expected a string" },
      { path: "policy.user.uid", message: "expected an integer" },
      { path: "policy.user.gid", message: "gid must be a whole number from 1 to 4294967294 (never root)" }
    ])
    for (const text of renderings(error)) {
      expect(text).not.toContain(CANARY)
      expect(text).not.toContain(String(CANARY_NUMBER))
    }
  })
})

describe("limits.timeoutMs", () => {
  it.each([1.5, 0.5, MAX_TIMEOUT_MS - 0.5])("refuses the fractional %d", (timeoutMs) => {
    expect(refused({ argv, limits: { timeoutMs } }).issues).toStrictEqual([
      { path: "limits.timeoutMs", message: `must be a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS}` }
    ])
  })

  it.each([1, 1500, MAX_TIMEOUT_MS])("accepts the whole %d", (timeoutMs) => {
    const decoded = Effect.runSync(decodeInput({ argv, limits: { timeoutMs } }))
    expect(decoded.limits).toStrictEqual({ timeoutMs })
  })
})
