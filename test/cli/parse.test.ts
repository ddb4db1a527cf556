/**
 * The CLI's pure pieces: value parsers, the `--` rule, runner options, output encoding, notices, exit codes and the
 * doctor's verdict. No process is spawned here.
 */
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as fc from "effect/FastCheck"
import * as Cli from "../../src/cli/Cli.js"
import { InvalidInput, SandboxUnavailable, SpawnError } from "../../src/Errors.js"
import { ExecEvent, type ExecResult, Keep, MAX_TIMEOUT_MS } from "../../src/Exec.js"
import { makeCapture } from "../../src/internal/capture.js"
import * as Sandbox from "../../src/Sandbox.js"

describe("parseSize", () => {
  it.each([
    ["1000", 1000],
    ["0", 0],
    ["64KiB", 65_536],
    ["64k", 65_536],
    ["1MiB", 1_048_576],
    ["1M", 1_048_576],
    ["2MB", 2_000_000],
    ["2kb", 2000],
    ["1.5K", 1536],
    ["1GiB", 1024 ** 3],
    ["10B", 10]
  ])("%s is %d bytes", (text, bytes) => {
    expect(Cli.parseSize(text)).toStrictEqual(Either.right(bytes))
  })

  it.each(["12x", "", "-1", "KiB", "1.3K", "1e3", "0x10", "1 MiBs"])("refuses %j", (text) => {
    expect(Either.isLeft(Cli.parseSize(text))).toBe(true)
  })
})

describe("parseDuration", () => {
  it.each([
    ["500ms", 500],
    ["10s", 10_000],
    ["1.5s", 1500],
    ["2m", 120_000],
    ["1h", 3_600_000],
    ["0ms", 0],
    // As timeout(1): a bare number is seconds.
    ["2", 2000],
    ["1.5", 1500],
    ["0", 0],
    // Parts add up.
    ["1m30s", 90_000],
    ["1h2m3s", 3_723_000],
    ["1s500ms", 1500],
    ["1d", 86_400_000]
  ])("%s is %d ms", (text, millis) => {
    expect(Cli.parseDuration(text)).toStrictEqual(Either.right(millis))
  })

  it("says what it takes", () => {
    expect(Cli.parseDuration("soon")).toStrictEqual(Either.left("bad duration 'soon' (use e.g. 10 (seconds), 500ms, 1m30s, 2h)"))
  })

  it.each(["abc", "-1s", "0.5ms", "10 sec", "1w", "", "1m 30s", "m30s", "1.5.2s", "0.0001"])("refuses %j", (text) => {
    expect(Either.isLeft(Cli.parseDuration(text))).toBe(true)
  })

  it("formats back in the largest unit that divides", () => {
    expect([500, 1500, 10_000, 120_000, 3_600_000, 0].map(Cli.formatMillis)).toStrictEqual([
      "500ms",
      "1500ms",
      "10s",
      "2m",
      "1h",
      "0ms"
    ])
  })
})

describe("parseEnvPair", () => {
  it("splits at the first '='; the value may be empty or hold '='", () => {
    expect(Cli.parseEnvPair("A=1")).toStrictEqual(Either.right(["A", "1"]))
    expect(Cli.parseEnvPair("A=")).toStrictEqual(Either.right(["A", ""]))
    expect(Cli.parseEnvPair("A=b=c")).toStrictEqual(Either.right(["A", "b=c"]))
    expect(Either.isLeft(Cli.parseEnvPair("A"))).toBe(true)
    expect(Either.isLeft(Cli.parseEnvPair("=1"))).toBe(true)
  })

  it("never quotes a bad value back: it may be a secret typed without its name", () => {
    expect(Cli.parseEnvPair("sk-canary-41")).toStrictEqual(Either.left("missing '=' (use KEY=VALUE)"))
    expect(Cli.parseEnvPair("=sk-canary-41")).toStrictEqual(Either.left("empty name before '=' (use KEY=VALUE)"))
  })
})

describe("parseSandboxUser", () => {
  it.each([
    ["65534:65534", { uid: 65534, gid: 65534 }],
    ["1000:100", { uid: 1000, gid: 100 }],
    ["1:1", { uid: 1, gid: 1 }],
    ["4294967294:4294967294", { uid: 4_294_967_294, gid: 4_294_967_294 }]
  ])("%s", (text, user) => {
    expect(Cli.parseSandboxUser(text)).toStrictEqual(Either.right(user))
  })

  it.each(["0:0", "0:1000", "1000:0", "4294967295:1", "1000", "1000:", ":1000", "a:b", "-1:5", "1.5:2", "1000:1000:1", ""])(
    "refuses %j",
    (text) => {
      expect(Either.isLeft(Cli.parseSandboxUser(text))).toBe(true)
      expect(Either.isLeft(Cli.parseSandboxIdentity(text))).toBe(true)
    }
  )

  it("takes workspace-owner as a sandbox identity for run, never as a user to prepare for", () => {
    expect(Cli.parseSandboxIdentity("workspace-owner")).toStrictEqual(Either.right("workspace-owner"))
    expect(Cli.parseSandboxIdentity("1000:1000")).toStrictEqual(Either.right({ uid: 1000, gid: 1000 }))
    expect(Either.isLeft(Cli.parseSandboxUser("workspace-owner"))).toBe(true)
  })
})

describe("checkForcedArgv (the '--' rule)", () => {
  it("accepts argv that is exactly what follows the first '--'", () => {
    expect(Cli.checkForcedArgv(["run", "--json", "--", "sh", "-c", "x", "--"], ["sh", "-c", "x", "--"]))
      .toStrictEqual(Either.right(undefined))
  })

  it.each([
    [["run", "sh", "-c", "echo hi"], ["sh", "-c", "echo hi"], "missing '--' before the command (e.g. native-runner run -- sh -c 'echo hi')"],
    [["run", "--bogus", "--", "ls"], ["--bogus", "ls"], "unknown option '--bogus'"],
    [["run", "--jsn=1", "--", "ls"], ["--jsn=1", "ls"], "unknown option '--jsn=1'"],
    [["run", "ls", "--", "ls"], ["ls", "ls"], "unexpected argument 'ls' before '--' (the command goes after '--')"],
    [["run", "--json", "--json", "--", "ls"], ["--json", "ls"], "'--json' given more than once"],
    [["run", "--no-seccomp", "--no-seccomp", "--", "ls"], ["--no-seccomp", "ls"], "'--no-seccomp' given more than once"],
    [
      ["run", "--redact-after=--token", "--", "ls"],
      ["--redact-after=--token", "ls"],
      "write '--redact-after --token' (with a space) instead of '--redact-after=--token'"
    ],
    [["run", "--timeout", "--", "ls"], ["--timeout", "ls"], "'--timeout' is missing its value or given more than once"],
    [["run", "--env=A=1", "--", "ls"], ["--env=A=1", "ls"], "write '--env A=1' (with a space) instead of '--env=A=1'"]
  ])("%j is refused", (raw, parsed, reason) => {
    expect(Cli.checkForcedArgv(raw, parsed)).toStrictEqual(Either.left(reason))
  })

  it("shell-quotes only what needs it", () => {
    expect(["a", "a b", "it's", "--x=1", ""].map(Cli.shellQuote)).toStrictEqual(["a", "'a b'", "'it'\\''s'", "--x=1", "''"])
  })
})

const request = (overrides: Partial<Cli.RunRequest> = {}): Cli.RunRequest => ({
  argv: ["true"],
  json: false,
  jsonl: false,
  all: false,
  env: {},
  inheritEnv: "core",
  redactAfter: [],
  limits: {},
  sandbox: { backend: "none" },
  ...overrides
})

/** Parses `run` arguments with the real command definition, up to the `RunRequest` (nothing runs). */
const parseRun = (args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const parsed = yield* Ref.make<Either.Either<Cli.RunRequest, Cli.UsageError> | undefined>(undefined)
    const command = Command.withHandler(Cli.runCommand, (config) =>
      Ref.set(parsed, Cli.toRunRequest(config, ["run", ...args], "/home/me")))
    // Run on its own, the command's name is implied: the arguments start after it.
    yield* Command.run(command, { name: "native-runner", version: Cli.VERSION })(["node", "bin", ...args])
    const request = yield* Ref.get(parsed)
    return request === undefined ? yield* Effect.dieMessage("the handler did not run") : request
  }).pipe(Effect.provide(NodeContext.layer))

/** Runs `Cli.main` for bad usage only (it fails before anything runs); returns the exit code and stderr lines. */
const mainOf = (args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const err: Array<string> = []
    const stdio = Layer.succeed(Cli.Stdio, {
      stdout: () => Effect.void,
      stderr: (data) => Effect.sync(() => void err.push(typeof data === "string" ? data : new TextDecoder().decode(data))),
      stdin: Effect.succeed(new Uint8Array()),
      stdoutIsTerminal: false,
      stdinKind: "recorded",
      sharedSink: false
    })
    const code = yield* Cli.main(args).pipe(Effect.provide([stdio, NodeContext.layer]))
    return { code, err: err.join("").split("\n").filter((line) => line !== "") }
  })

describe("toRunRequest", () => {
  it.live("every flag lands in the request; paths are absolute; sandbox flags form the policy", () =>
    Effect.gen(function*() {
      const request = yield* parseRun([
        "--sandbox", "bwrap", "--workspace", "ws", "--network", "host", "--max-procs", "64", "--max-memory", "512MiB",
        "--max-file-size", "10MB", "--max-cpu", "2m", "--max-open-files", "256", "--timeout", "1.5s",
        "--kill-grace", "0ms", "--max-stdout", "64KiB", "--max-stderr", "1000", "--env", "A=1", "--env", "B=",
        "--inherit-env", "all", "--cwd", "sub", "--audit-log", "/var/log/a.jsonl", "--stdin-file", "-", "--json",
        "--redact-after", "--token", "--redact-after", "-p", "--sandbox-user", "1000:1001", "--no-seccomp",
        "--idle-timeout", "30s", "--keep", "both", "--spill-dir", "spills", "--spill-max", "1GiB", "--all",
        "--max-all", "8KiB", "--", "make", "-j4", "--json"
      ])
      expect(request).toStrictEqual(Either.right({
        argv: ["make", "-j4", "--json"],
        json: true,
        jsonl: false,
        all: true,
        maxAllBytes: 8192,
        env: { A: "1", B: "" },
        inheritEnv: "all",
        timeoutMs: 1500,
        killGraceMs: 0,
        idleTimeoutMs: 30_000,
        maxStdoutBytes: 65_536,
        maxStderrBytes: 1000,
        keep: "both",
        spill: { dir: "/home/me/spills", maxBytes: 1024 ** 3 },
        cwd: "/home/me/sub",
        stdinFile: "-",
        auditLog: "/var/log/a.jsonl",
        redactAfter: ["--token", "-p"],
        limits: {
          maxProcesses: 64,
          maxMemoryBytes: 512 * 1024 ** 2,
          maxFileSizeBytes: 10_000_000,
          maxCpuSeconds: 120,
          maxOpenFiles: 256
        },
        sandbox: {
          backend: "bwrap",
          workspace: "/home/me/ws",
          network: "host",
          user: { uid: 1000, gid: 1001 },
          seccomp: false
        }
      }))
    }))

  it.live("defaults: core env, no sandbox, no limits; a bwrap sandbox: our cwd, no network, no host env", () =>
    Effect.gen(function*() {
      const plain = yield* parseRun(["--", "true"])
      expect(plain).toMatchObject(Either.right({
        argv: ["true"],
        json: false,
        env: {},
        inheritEnv: "core",
        redactAfter: [],
        limits: {},
        sandbox: { backend: "none" }
      }))
      const bwrap = yield* parseRun(["--sandbox", "bwrap", "--", "true"])
      expect(Either.map(bwrap, ({ inheritEnv, limits, sandbox }) => ({ inheritEnv, limits, sandbox }))).toStrictEqual(
        Either.right({ inheritEnv: "none", limits: {}, sandbox: { backend: "bwrap", workspace: "/home/me", network: "none" } })
      )
      const asked = yield* parseRun(["--sandbox", "bwrap", "--inherit-env", "core", "--", "true"])
      expect(Either.map(asked, (request) => request.inheritEnv)).toStrictEqual(Either.right("core"))
    }))

  it.live("resource limits apply without a sandbox; only the given ones are set", () =>
    Effect.gen(function*() {
      const request = yield* parseRun(["--max-procs", "8", "--max-file-size", "100KiB", "--", "true"])
      expect(Either.map(request, ({ limits, sandbox }) => ({ limits, sandbox }))).toStrictEqual(Either.right({
        limits: { maxProcesses: 8, maxFileSizeBytes: 102_400 },
        sandbox: { backend: "none" }
      }))
    }))

  it.live.each([
    ["--workspace", "ws"],
    ["--network", "none"],
    ["--sandbox-user", "1000:1000"],
    ["--no-seccomp"]
  ] as const)("%j without --sandbox bwrap is bad usage", (args) =>
    Effect.gen(function*() {
      const request = yield* parseRun([...args, "--", "true"])
      expect(Either.flip(Either.map(request, () => "parsed"))).toStrictEqual(Either.right(
        new Cli.UsageError({ message: `${args[0]} only applies with --sandbox bwrap`, command: "run" })
      ))
    }))

  it.live.each([
    ["0:0", "native-runner: --sandbox-user: uid and gid must be whole numbers from 1 to 4294967294 (got '0:0')"],
    ["1000:0", "native-runner: --sandbox-user: uid and gid must be whole numbers from 1 to 4294967294 (got '1000:0')"],
    ["nobody", "native-runner: --sandbox-user: bad value 'nobody' (use UID:GID, e.g. 65534:65534, or workspace-owner)"],
    ["1.5:2", "native-runner: --sandbox-user: bad value '1.5:2' (use UID:GID, e.g. 65534:65534, or workspace-owner)"]
  ] as const)("--sandbox-user %s: exit 2, one line and a usage hint", ([user, line]) =>
    Effect.gen(function*() {
      const ran = yield* mainOf(["run", "--sandbox", "bwrap", "--sandbox-user", user, "--", "true"])
      expect(ran.code).toBe(2)
      expect(ran.err).toStrictEqual([line, Cli.usageHint("run")])
    }))

  it.live("--all with --json asks for the combined capture (--max-all its cap); without --json or --jsonl it is bad usage", () =>
    Effect.gen(function*() {
      const request = yield* parseRun(["--json", "--all", "--max-all", "4KiB", "--", "true"])
      expect(Either.map(request, (r) => Cli.toExecInput(r, undefined))).toStrictEqual(Either.right({
        argv: ["true"],
        all: true,
        limits: { maxAllBytes: 4096 }
      }))
      for (const [args, message] of [
        [["--all"], "--all only applies with --json or --jsonl"],
        [["--json", "--max-all", "1KiB"], "--max-all only applies with --all"]
      ] as const) {
        const refused = yield* parseRun([...args, "--", "true"])
        expect(Either.flip(Either.map(refused, () => "parsed"))).toStrictEqual(Either.right(new Cli.UsageError({ message, command: "run" })))
      }
    }))

  it.live("live output flags: --jsonl, --keep, --idle-timeout, an absolute --spill-dir without --spill-max", () =>
    Effect.gen(function*() {
      const request = yield* parseRun([
        "--jsonl", "--keep", "tail", "--idle-timeout", "250ms", "--spill-dir", "/var/tmp", "--", "true"
      ])
      const picked = Either.map(request, ({ idleTimeoutMs, json, jsonl, keep, spill }) => ({ idleTimeoutMs, json, jsonl, keep, spill }))
      expect(picked).toStrictEqual(Either.right({
        idleTimeoutMs: 250,
        json: false,
        jsonl: true,
        keep: "tail",
        spill: { dir: "/var/tmp" }
      }))
      const plain = yield* parseRun(["--", "true"])
      expect(Either.map(plain, ({ idleTimeoutMs, jsonl, keep, spill }) => [idleTimeoutMs, jsonl, keep, spill]))
        .toStrictEqual(Either.right([undefined, false, undefined, undefined]))
    }))

  it.live.each([
    [["--json", "--jsonl"], "use either --json or --jsonl, not both"],
    [["--spill-max", "1MiB"], "--spill-max only applies with --spill-dir"]
  ] as const)("%j is bad usage", ([args, message]) =>
    Effect.gen(function*() {
      const request = yield* parseRun([...args, "--", "true"])
      expect(Either.flip(Either.map(request, () => "parsed"))).toStrictEqual(Either.right(
        new Cli.UsageError({ message, command: "run" })
      ))
    }))

  it.live.each([
    [["--keep", "middle"], "native-runner: --keep: unknown value 'middle' (use head or tail or both)"],
    [["--idle-timeout", "5x"], "native-runner: --idle-timeout: bad duration '5x' (use e.g. 10 (seconds), 500ms, 1m30s, 2h)"],
    [["--max-cpu", "0"], "native-runner: --max-cpu: must be at least 1s"],
    [["--spill-dir", "/tmp", "--spill-max", "lots"], "native-runner: --spill-max: bad size 'lots' (use e.g. 1000, 64KiB, 1MiB, 2GB)"],
    [["--jsonl", "--jsonl"], "native-runner: '--jsonl' given more than once"]
  ] as const)("%j: exit 2, one line and a usage hint", ([args, line]) =>
    Effect.gen(function*() {
      const ran = yield* mainOf(["run", ...args, "--", "true"])
      expect(ran.code).toBe(2)
      expect(ran.err).toStrictEqual([line, Cli.usageHint("run")])
    }))

  it.live("--sandbox-user and --no-seccomp are left out unless given", () =>
    Effect.gen(function*() {
      const request = yield* parseRun(["--sandbox", "bwrap", "--sandbox-user", "65534:65534", "--", "true"])
      expect(Either.map(request, (r) => r.sandbox)).toStrictEqual(Either.right({
        backend: "bwrap",
        workspace: "/home/me",
        network: "none",
        user: { uid: 65534, gid: 65534 }
      }))
    }))
})

describe("toRunnerOptions", () => {
  it("maps flags to runner options; no sandbox and no limits add neither key", () => {
    const options = Cli.toRunnerOptions(request({
      timeoutMs: 500,
      killGraceMs: 0,
      maxStdoutBytes: 1024,
      cwd: "/tmp",
      inheritEnv: "none"
    }))
    expect(Duration.toMillis(Duration.decode(options.timeout ?? 0))).toBe(500)
    expect(Duration.toMillis(Duration.decode(options.killGrace ?? 1))).toBe(0)
    expect(options).toMatchObject({ maxStdoutBytes: 1024, maxStderrBytes: undefined, cwd: "/tmp", inheritEnv: "none" })
    expect(["sandbox" in options, "resourceLimits" in options]).toStrictEqual([false, false])
  })

  it("--sandbox bwrap: the policy with the limits, and never a fallback to running unsandboxed", () => {
    const options = Cli.toRunnerOptions(request({
      limits: { maxProcesses: 8, maxFileSizeBytes: 1000 },
      sandbox: { backend: "bwrap", workspace: "/srv/job", network: "host" }
    }))
    expect(options.sandbox).toStrictEqual({
      policy: { workspace: "/srv/job", network: "host", limits: { maxProcesses: 8, maxFileSizeBytes: 1000 } },
      fallback: "fail"
    })
    expect("resourceLimits" in options).toBe(false)
    const bare = Cli.toRunnerOptions(request({ sandbox: { backend: "bwrap", workspace: "/srv/job", network: "none" } }))
    expect(bare.sandbox).toStrictEqual({ policy: { workspace: "/srv/job", network: "none" }, fallback: "fail" })
  })

  it("--sandbox-user and --no-seccomp go into the sandbox policy", () => {
    const options = Cli.toRunnerOptions(request({
      sandbox: { backend: "bwrap", workspace: "/srv/job", network: "none", user: { uid: 1000, gid: 1001 }, seccomp: false }
    }))
    expect(options.sandbox).toStrictEqual({
      policy: { workspace: "/srv/job", network: "none", user: { uid: 1000, gid: 1001 }, seccomp: false },
      fallback: "fail"
    })
  })

  it("--redact-after becomes redactArgv, masking each flag's value in both forms; none, no redactArgv", () => {
    const options = Cli.toRunnerOptions(request({ redactAfter: ["--token", "-p"] }))
    const argv = ["curl", "--token", "s3cr3t", "--token=s3cr3t", "-p", "pw", "--other", "kept"]
    expect(options.redactArgv?.(argv)).toStrictEqual(
      ["curl", "--token", "***", "--token=***", "-p", "***", "--other", "kept"]
    )
    expect("redactArgv" in Cli.toRunnerOptions(request())).toBe(false)
  })

  it("limits without a sandbox become resourceLimits", () => {
    const options = Cli.toRunnerOptions(request({ limits: { maxCpuSeconds: 2 } }))
    expect([options.resourceLimits, "sandbox" in options]).toStrictEqual([{ maxCpuSeconds: 2 }, false])
  })
})

describe("toExecInput", () => {
  it("--idle-timeout, --keep and --spill-dir go into the exec input; none given, none set", () => {
    const spill = { dir: "/var/tmp", maxBytes: 10 }
    const input = Cli.toExecInput(request({ idleTimeoutMs: 300, keep: "both", spill }), undefined)
    expect(Duration.toMillis(Duration.decode(input.idleTimeout ?? 0))).toBe(300)
    expect([input.keep, input.spill]).toStrictEqual(["both", { dir: "/var/tmp", maxBytes: 10 }])
    expect(Object.keys(Cli.toExecInput(request(), undefined))).toStrictEqual(["argv"])
  })
})

const bytes = (text: string) => new TextEncoder().encode(text)

const result = (overrides: Partial<ExecResult> = {}): ExecResult => ({
  exitCode: 0,
  stdout: new Uint8Array(),
  stderr: new Uint8Array(),
  truncatedStdout: false,
  truncatedStderr: false,
  timedOut: false,
  durationMs: 1,
  stdoutBytes: 0,
  stderrBytes: 0,
  audits: [],
  ...overrides
})

describe("output rendering", () => {
  it.prop("encodeOutput round-trips any bytes", [fc.uint8Array({ maxLength: 64 })], ([input]) => {
    const { encoding, text } = Cli.encodeOutput(input)
    const back = encoding === "utf8" ? bytes(text) : new Uint8Array(Buffer.from(text, "base64"))
    expect(back).toStrictEqual(input)
  })

  it.prop("valid UTF-8 stays text, BOM included", [fc.string({ unit: "grapheme", maxLength: 32 })], ([text]) => {
    expect(Cli.encodeOutput(bytes(`\uFEFF${text}`))).toStrictEqual({ text: `\uFEFF${text}`, encoding: "utf8" })
  })

  it("a UTF-8 character cut by truncation makes the output base64", () => {
    expect(Cli.encodeOutput(bytes("é").subarray(0, 1))).toStrictEqual({ text: "ww==", encoding: "base64" })
  })

  it("builds a JSON result the schema accepts, with stable keys", () => {
    const json = Cli.toJsonResult(result({ stdout: new Uint8Array([0xff]), stderr: bytes("oops"), exitCode: 3 }))
    expect(json).toMatchObject({ stdout: "/w==", stdoutEncoding: "base64", stderr: "oops", signal: null })
    expect(Object.keys(json).sort()).toStrictEqual(Object.keys(Cli.CliJsonResult.fields).sort())
  })

  it("says what happened besides a normal exit, one line each", () => {
    expect(Cli.notices(result(), 1000)).toStrictEqual([])
    expect(Cli.notices(result({ timedOut: true, exitCode: 124, signal: "SIGTERM" }), 500)).toStrictEqual([
      "native-runner: timed out after 500ms (exit 124)"
    ])
    expect(
      Cli.notices(
        result({
          signal: "SIGKILL",
          exitCode: 137,
          stdout: new Uint8Array(1_048_576),
          stdoutBytes: 5_000_000,
          truncatedStdout: true,
          stderr: new Uint8Array(10),
          stderrBytes: 11,
          truncatedStderr: true,
          limitExceeded: "memory"
        }),
        60_000
      )
    ).toStrictEqual([
      "native-runner: killed by SIGKILL (exit 137)",
      "native-runner: hit the memory limit",
      "native-runner: stdout truncated at 1048576 of 5000000 bytes",
      "native-runner: stderr truncated at 10 of 11 bytes"
    ])
    expect(Cli.notices(result({ exitCode: 153, limitExceeded: "fileSize" }), 1000)).toStrictEqual([
      "native-runner: stopped by the file-size limit"
    ])
  })

  it("the idle timeout, the cut of tail and both, and the spill files have their notices", () => {
    expect(Cli.notices(result({ timedOut: true, timeoutKind: "idle", exitCode: 124 }), 60_000, 300)).toStrictEqual([
      "native-runner: no output for 300ms: stopped (exit 124)"
    ])
    expect(Cli.notices(result({ timedOut: true, timeoutKind: "wall", exitCode: 124 }), 2000, 300)).toStrictEqual([
      "native-runner: timed out after 2s (exit 124)"
    ])
    expect(Cli.notices(result({
      stdout: bytes("abgh"),
      stdoutBytes: 8,
      truncatedStdout: true,
      stdoutOmitted: { offset: 2, bytes: 4 },
      stderr: bytes("gh"),
      stderrBytes: 8,
      truncatedStderr: true,
      stderrOmitted: { offset: 0, bytes: 6 },
      stdoutFile: "/var/tmp/native-runner-r.stdout",
      stderrFile: "/var/tmp/native-runner-r.stderr",
      spillError: "stdout: ENOSPC: no space left on device"
    }), 60_000)).toStrictEqual([
      "native-runner: stdout: 4 bytes omitted after byte 2",
      "native-runner: stderr: the first 6 of 8 bytes omitted",
      "native-runner: stdout written to /var/tmp/native-runner-r.stdout",
      "native-runner: stderr written to /var/tmp/native-runner-r.stderr",
      "native-runner: spill file incomplete: stdout: ENOSPC: no space left on device"
    ])
    // Head past the cap: the omitted bytes are at the end, as before.
    const head = result({ stdout: bytes("ab"), stdoutBytes: 5, truncatedStdout: true, stdoutOmitted: { offset: 2, bytes: 3 } })
    expect(Cli.notices(head, 1)).toStrictEqual(["native-runner: stdout truncated at 2 of 5 bytes"])
  })

  it("the JSON result says which timeout, where the cut is and where the spill files are; null when none", () => {
    const json = Cli.toJsonResult(result({
      timedOut: true,
      timeoutKind: "wall",
      stdoutOmitted: { offset: 2, bytes: 4 },
      stdoutFile: "/d/o",
      stderrFile: "/d/e"
    }))
    expect(json).toMatchObject({
      timeoutKind: "wall",
      stdoutOmitted: { offset: 2, bytes: 4 },
      stderrOmitted: null,
      stdoutFile: "/d/o",
      stderrFile: "/d/e",
      spillError: null
    })
    expect(Cli.toJsonResult(result())).toMatchObject({ timeoutKind: null, stdoutOmitted: null, stdoutFile: null })
  })

  it("names every limit in its notice", () => {
    expect(Sandbox.LimitExceeded.literals.map(Cli.limitNotice)).toStrictEqual([
      "stopped by the CPU-time limit",
      "stopped by the file-size limit",
      "hit the memory limit",
      "hit the process limit (forks were refused)",
      "hit the open-files limit"
    ])
  })

  it("keeps limitExceeded in the JSON result", () => {
    expect(Cli.toJsonResult(result({ limitExceeded: "fileSize" })).limitExceeded).toBe("fileSize")
    expect(Cli.toJsonResult(result()).limitExceeded).toBeNull()
  })
})

describe("live output", () => {
  const chunked = fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 8 })

  it.prop(
    "the live part, then afterLive of the result, is exactly the kept bytes, however the stream is chunked",
    [chunked, fc.constantFrom(...Keep.literals), fc.nat({ max: 100 })],
    ([chunks, keep, cap]) => {
      const live = Cli.liveEvents(keep, { stdout: cap, stderr: cap })
      const capture = makeCapture(cap, keep)
      const printed: Array<Uint8Array> = []
      for (const chunk of chunks) {
        capture.push(chunk)
        const event = live(ExecEvent.Stdout({ bytes: chunk }))
        if (event !== undefined && event._tag === "Stdout") printed.push(event.bytes)
      }
      const stream = new Uint8Array(Buffer.concat(chunks))
      const livePart = new Uint8Array(Buffer.concat(printed))
      // As the bytes arrive: the stream's first bytes, never more than the live limit.
      expect(livePart).toStrictEqual(stream.subarray(0, Cli.liveLimit(keep, cap)))
      const atTheEnd = Cli.afterLive(capture.bytes(), keep, cap)
      expect(new Uint8Array(Buffer.concat([livePart, atTheEnd]))).toStrictEqual(capture.bytes())
    }
  )

  it("each stream has its own limit; empty parts are left out; Started and Exit pass as they are", () => {
    const live = Cli.liveEvents("head", { stdout: 3, stderr: 1 })
    const started = ExecEvent.Started({ runId: "r", pid: 1 })
    expect(live(started)).toBe(started)
    expect(live(ExecEvent.Stdout({ bytes: bytes("ab") }))).toStrictEqual(ExecEvent.Stdout({ bytes: bytes("ab") }))
    expect(live(ExecEvent.Stderr({ bytes: bytes("xyz") }))).toStrictEqual(ExecEvent.Stderr({ bytes: bytes("x") }))
    expect(live(ExecEvent.Stdout({ bytes: bytes("cd") }))).toStrictEqual(ExecEvent.Stdout({ bytes: bytes("c") }))
    expect([live(ExecEvent.Stdout({ bytes: bytes("e") })), live(ExecEvent.Stderr({ bytes: bytes("y") }))])
      .toStrictEqual([undefined, undefined])
    const limits = (cap: number) => Keep.literals.map((keep) => Cli.liveLimit(keep, cap))
    expect([0, 1, 100].map(limits)).toStrictEqual([[0, 0, 0], [1, 0, 0], [100, 0, 50]])
  })

  it("--jsonl lines: each event as the schema says, output as --json encodes it", () => {
    const decode = Schema.decodeUnknownSync(Cli.CliJsonlEvent, { onExcessProperty: "error" })
    const idle = result({ exitCode: 3, timedOut: true, timeoutKind: "idle" })
    const lines = [
      ExecEvent.Started({ runId: "run-1", pid: 42 }),
      ExecEvent.Stdout({ bytes: bytes("hé\n") }),
      ExecEvent.Stderr({ bytes: new Uint8Array([0xff, 0x00]) }),
      ExecEvent.Exit({ result: idle, dropped: { chunks: 2, bytes: 10 } })
    ].map((event) => decode(JSON.parse(JSON.stringify(Cli.toJsonlEvent(event)))))
    expect(lines.slice(0, 3)).toStrictEqual([
      { event: "started", runId: "run-1", pid: 42 },
      { event: "stdout", data: "hé\n", encoding: "utf8" },
      { event: "stderr", data: "/wA=", encoding: "base64" }
    ])
    expect(lines[3]).toStrictEqual({ event: "exit", ...Cli.toJsonResult(idle), dropped: { chunks: 2, bytes: 10 } })
    expect(lines[3]).toMatchObject({ exitCode: 3, timeoutKind: "idle", stdoutOmitted: null, stdoutFile: null })
  })

  it("dropped chunks get one notice; none, none", () => {
    expect(Cli.droppedNotice({ chunks: 0, bytes: 0 })).toStrictEqual([])
    expect(Cli.droppedNotice({ chunks: 3, bytes: 9000 })).toStrictEqual([
      "native-runner: output came faster than we could print it: up to 9000 bytes (3 chunks) may be missing above"
    ])
  })
})

describe("failures", () => {
  const spawn = (reason: SpawnError["reason"]) =>
    new SpawnError({ reason, command: "x", cwd: "/", message: `${reason}: x` })

  it("map to the exit codes shells use", () => {
    expect([
      Cli.exitCodeOf(new Cli.UsageError({ message: "m", command: "run" })),
      Cli.exitCodeOf(new InvalidInput({ message: "m", issues: [] })),
      Cli.exitCodeOf(spawn("NotFound")),
      Cli.exitCodeOf(spawn("PermissionDenied")),
      Cli.exitCodeOf(spawn("CwdNotFound")),
      Cli.exitCodeOf(spawn("Unknown")),
      Cli.exitCodeOf(new SandboxUnavailable({ backend: "bwrap", message: "m", fix: "f" }))
    ]).toStrictEqual([2, 2, 127, 126, 2, 125, 125])
  })

  it("print one line, plus a usage hint for bad usage", () => {
    expect(Cli.errorLines(spawn("NotFound"))).toStrictEqual(["native-runner: NotFound: x"])
    const unavailable = new SandboxUnavailable({
      backend: "bwrap",
      message: "bubblewrap could not create the sandbox (exit 1): bwrap: setting up uid map\nbwrap: Permission denied\n",
      fix: "Allow user namespaces."
    })
    expect(Cli.errorLines(unavailable)).toStrictEqual([
      "native-runner: bubblewrap could not create the sandbox (exit 1): bwrap: setting up uid map " +
      "bwrap: Permission denied Fix: Allow user namespaces."
    ])
    const usage = Cli.errorLines(new Cli.UsageError({ message: "unknown option '--x'", command: "doctor" }))
    expect(usage).toHaveLength(2)
    expect(usage[1]).toMatch(/^usage: native-runner doctor/)
  })
})

describe("help", () => {
  it("documents every option the '--' rule knows", () => {
    const help = Cli.helpDocLine(Command.getHelp(Cli.runCommand, CliConfig.defaultConfig))
    for (const name of Cli.RUN_OPTION_NAMES) expect(help).toContain(`${name} `)
  })
})

describe("doctorReport", () => {
  const notFound = new SandboxUnavailable({
    backend: "bwrap",
    message: "bubblewrap was not found: \"bwrap\" does not exist or is not on PATH.",
    fix: "Install bubblewrap"
  })
  const facts: Cli.DoctorFacts = {
    nodeVersion: "v20.19.0",
    isRoot: false,
    bwrapVersion: Either.right("bubblewrap 0.8.0"),
    sandboxHost: Either.right({
      bwrap: "/usr/bin/bwrap",
      setpriv: "/usr/bin/setpriv",
      flock: "/usr/bin/flock",
      prlimit: "/usr/bin/prlimit",
      identity: undefined,
      seccomp: { arch: "x86_64", program: new Uint8Array(8) },
      masks: [],
      layout: { workspace: { given: "/", host: "/" }, binds: [] },
      inherited: undefined
    }),
    bwrapPreflight: Either.right("preflight passed"),
    processLimit: { route: "rlimit" },
    prlimitVersion: Either.right("prlimit from util-linux 2.38.1"),
    unprivilegedUsernsClone: "1",
    maxUserNamespaces: "63000",
    apparmorRestrictUserns: undefined,
    identity: Either.right(undefined),
    runCgroups: { version: 2, kill: true },
    workspace: undefined
  }
  const status = (report: Cli.DoctorReport, check: string) => report.rows.find((row) => row.check === check)

  it("a host whose preflight passes can sandbox", () => {
    const report = Cli.doctorReport(facts)
    expect(report).toMatchObject({ bwrapUsable: true, bwrapVerdict: "available" })
    expect(report.rows.map((row) => row.status)).toStrictEqual(["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"])
    expect(status(report, "max-procs")?.detail).toBe("RLIMIT_NPROC (counts every process of this user)")
    expect(status(report, "sandbox paths")?.detail).toBe("bwrap /usr/bin/bwrap, setpriv /usr/bin/setpriv, prlimit /usr/bin/prlimit")
    expect(status(report, "sandbox user")?.detail).toBe(
      "this process's own user (not root); it must be able to write the workspace"
    )
    expect(status(report, "seccomp")?.detail).toMatch(/^default filter \(x86_64\): 35 syscalls refused/)
  })

  it("shows the sandbox user of a root host, a seccomp filter turned off, and helpers that cannot be found", () => {
    const root = Cli.doctorReport({
      ...facts,
      isRoot: true,
      sandboxHost: Either.map(facts.sandboxHost, (host) => ({ ...host, identity: { uid: 65534, gid: 65534 }, seccomp: undefined })),
      identity: Either.right({ uid: 65534, gid: 65534 })
    })
    expect(status(root, "sandbox user")).toMatchObject({
      status: "ok",
      detail: "65534:65534 (host is root; never root inside; the runner chowns nothing: the workspace and " +
        "read-write binds must be writable by it, see 'native-runner workspace')"
    })
    expect(status(root, "seccomp")).toMatchObject({ status: "warn", detail: "off (policy seccomp: false)" })
    const missing = Cli.doctorReport({
      ...facts,
      sandboxHost: Either.left(new SandboxUnavailable({ backend: "bwrap", message: "bubblewrap was not found", fix: "f" }))
    })
    expect(status(missing, "sandbox paths")).toMatchObject({ status: "FAIL", detail: "bubblewrap was not found" })
  })

  it("says what teardown holds: a cgroup per run, or a warning that escapes outlive runs without one", () => {
    expect(status(Cli.doctorReport(facts), "teardown")).toMatchObject({
      status: "ok",
      detail: expect.stringMatching(/^a cgroup per run \(v2\): setsid and double-fork escapes die with the run, and with a killed host/)
    })
    expect(status(Cli.doctorReport({ ...facts, runCgroups: { version: 1, kill: false } }), "teardown")?.detail)
      .toMatch(/^a cgroup per run \(v1 freezer\).*with a killed host, only through the spawn helper/)
    expect(status(Cli.doctorReport({ ...facts, runCgroups: undefined }), "teardown")).toMatchObject({
      status: "warn",
      detail: expect.stringMatching(/^no cgroup per run here .* outlives its run/)
    })
  })

  it("judges a --workspace: accepted, or refused with the reason, which also makes the sandbox unusable", () => {
    const accepted = Cli.doctorReport({ ...facts, workspace: { dir: "/srv/ws", problems: [] } })
    expect(status(accepted, "workspace")).toMatchObject({ status: "ok", detail: "/srv/ws: accepted" })
    expect(accepted).toMatchObject({ bwrapUsable: true, bwrapVerdict: "available" })
    const refused = Cli.doctorReport({ ...facts, workspace: { dir: "/srv/ws", problems: ["cannot write", "a link"] } })
    expect(status(refused, "workspace")).toMatchObject({ status: "FAIL", detail: "cannot write; a link" })
    expect(refused).toMatchObject({ bwrapUsable: false, bwrapVerdict: "available, but not with the workspace /srv/ws" })
    const owner = Cli.doctorReport({
      ...facts,
      identity: Either.left(new SandboxUnavailable({ backend: "bwrap", message: "owned by 0:0.", fix: "Adopt it." }))
    })
    expect(status(owner, "sandbox user")).toMatchObject({ status: "FAIL", detail: "owned by 0:0. Adopt it." })
    expect(owner.bwrapUsable).toBe(false)
  })

  it("the verdict is the preflight's: its message when it fails, whatever the other rows say", () => {
    const missing = Cli.doctorReport({ ...facts, bwrapVersion: Either.left("not found on PATH"), bwrapPreflight: Either.left(notFound) })
    expect(missing).toMatchObject({
      bwrapUsable: false,
      bwrapVerdict: "unavailable: bubblewrap was not found: \"bwrap\" does not exist or is not on PATH."
    })
    expect(status(missing, "bwrap works")).toMatchObject({ status: "FAIL", detail: notFound.message })
    const failing = Cli.doctorReport({
      ...facts,
      bwrapPreflight: Either.left(new SandboxUnavailable({ backend: "bwrap", message: "bwrap: No permissions\nto create", fix: "f" })),
      maxUserNamespaces: "0",
      apparmorRestrictUserns: "1"
    })
    expect(failing.bwrapVerdict).toBe("unavailable: bwrap: No permissions to create")
    expect(failing.rows.filter((row) => row.status !== "ok").map((row) => row.check)).toStrictEqual([
      "bwrap works",
      "max userns",
      "apparmor userns"
    ])
    // Only the preflight decides: a root host with userns switches off still sandboxes when the preflight passes.
    const root = Cli.doctorReport({ ...facts, isRoot: true, unprivilegedUsernsClone: "0" })
    expect(root).toMatchObject({ bwrapUsable: true, bwrapVerdict: "available" })
  })

  it("says how --max-procs is enforced, and when the sandbox works but a limit would fail", () => {
    const cgroup = Cli.doctorReport({
      ...facts,
      isRoot: true,
      processLimit: { route: "cgroup", pidsCgroup: Either.right("/sys/fs/cgroup/pids") }
    })
    expect(status(cgroup, "max-procs")).toMatchObject({
      status: "ok",
      detail: "pids cgroup (root): /sys/fs/cgroup/pids is writable"
    })
    const noCgroup = Cli.doctorReport({
      ...facts,
      isRoot: true,
      processLimit: {
        route: "cgroup",
        pidsCgroup: Either.left(new SandboxUnavailable({ backend: "pids-cgroup", message: "No pids cgroup", fix: "f" }))
      },
      prlimitVersion: Either.left("not found on PATH")
    })
    expect(status(noCgroup, "max-procs")).toMatchObject({ status: "FAIL", detail: "pids cgroup (root): No pids cgroup" })
    expect(noCgroup).toMatchObject({
      bwrapUsable: true,
      bwrapVerdict: "available, but --max-* limits fail here (prlimit missing); --max-procs fails here " +
        "(no writable pids cgroup)"
    })
  })

  it("renders aligned columns and the verdict line", () => {
    expect(Cli.renderDoctor({
      rows: [{ check: "node", status: "ok", detail: "v20" }, { check: "bwrap works", status: "FAIL", detail: "no" }],
      bwrapUsable: false,
      bwrapVerdict: "unavailable: no"
    })).toBe("node         ok    v20\nbwrap works  FAIL  no\n\n--sandbox bwrap: unavailable: no\n")
  })
})

describe("durations on the command line, as timeout(1) reads them", () => {
  it.live.each([
    [["--timeout", "2"], { timeoutMs: 2000 }],
    [["--timeout", "1m30s"], { timeoutMs: 90_000 }],
    // Off: the largest timeout the runner takes (24.8 days), as `timeout 0` turns it off.
    [["--timeout", "0"], { timeoutMs: MAX_TIMEOUT_MS }],
    [["--timeout", "none"], { timeoutMs: MAX_TIMEOUT_MS }],
    [["--idle-timeout", "90"], { idleTimeoutMs: 90_000 }],
    [["--idle-timeout", "0"], { idleTimeoutMs: undefined }],
    [["--idle-timeout", "none"], { idleTimeoutMs: undefined }],
    [["--kill-grace", "0"], { killGraceMs: 0 }]
  ] as const)("%j", ([args, expected]) =>
    Effect.gen(function*() {
      const request = yield* parseRun([...args, "--", "true"])
      expect(Either.map(request, (r) => ({ timeoutMs: r.timeoutMs, idleTimeoutMs: r.idleTimeoutMs, killGraceMs: r.killGraceMs, ...expected })))
        .toStrictEqual(Either.map(request, (r) => ({ timeoutMs: r.timeoutMs, idleTimeoutMs: r.idleTimeoutMs, killGraceMs: r.killGraceMs })))
      expect(Either.isRight(request)).toBe(true)
    }))

  it.live("--kill-grace none is not a duration (only timeouts can be turned off)", () =>
    Effect.gen(function*() {
      const ran = yield* mainOf(["run", "--kill-grace", "none", "--", "true"])
      expect([ran.code, ran.err[0]]).toStrictEqual([2, "native-runner: --kill-grace: bad duration 'none' (use e.g. 10 (seconds), 500ms, 1m30s, 2h)"])
    }))
})
