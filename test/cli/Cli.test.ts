/**
 * The `native-runner` CLI. Most behaviour is checked in-process through `Cli.main` with a recording `Stdio` and the
 * live runner (real processes, milliseconds each); a smaller set runs the real bin, the bundle `npm run build` ships
 * (built from src/ into a temporary directory by bench/build-bin.mjs, about 1 s; then about 0.2 s of startup per run),
 * to check what only a real process shows: exit codes reaching the OS, flushed output, our own stdin, our own PATH,
 * help and doctor as a user sees them.
 *
 * Sandboxed runs use the real bubblewrap. In CI (CI=true) they must run: a missing bwrap fails them. Elsewhere,
 * without a usable bwrap, they are not registered and the reason is printed.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Cli from "../../src/cli/Cli.js"
import * as NativeRunner from "../../src/NativeRunner.js"
import { builtBin, sandboxPreflight } from "../helpers/bin.js"

const ROOT = fileURLToPath(new URL("../..", import.meta.url))
const { tmp, bin: BIN } = builtBin("native-runner-cli-")
const { usable: sandboxUsable, inCI, preflight } = await sandboxPreflight("CLI sandbox tests")

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const toBytes = (data: Uint8Array | string) => (typeof data === "string" ? encoder.encode(data) : data)
const concat = (chunks: ReadonlyArray<Uint8Array>) => new Uint8Array(Buffer.concat(chunks))

/** One write to our stdout or stderr, and when it happened (`Date.now()`). */
interface Write {
  readonly stream: "stdout" | "stderr"
  readonly text: string
  readonly at: number
}

interface Ran {
  readonly code: number
  readonly stdout: Uint8Array
  readonly out: string
  readonly err: string
  /** Every write in order, with its time; `endedAt` is when `main` returned. */
  readonly writes: ReadonlyArray<Write>
  readonly endedAt: number
}

/** Runs `Cli.main` in this process; what it prints is recorded, `stdin` is what `--stdin-file -` reads. */
const cli = (args: ReadonlyArray<string>, stdin: string = "") =>
  Effect.gen(function*() {
    const out: Array<Uint8Array> = []
    const err: Array<Uint8Array> = []
    const writes: Array<Write> = []
    const record = (stream: Write["stream"], chunks: Array<Uint8Array>) => (data: Uint8Array | string) =>
      Effect.sync(() => {
        chunks.push(toBytes(data))
        writes.push({ stream, text: decoder.decode(toBytes(data)), at: Date.now() })
      })
    const stdio = Layer.succeed(Cli.Stdio, {
      stdout: record("stdout", out),
      stderr: record("stderr", err),
      stdin: Effect.succeed(encoder.encode(stdin)),
      stdoutIsTerminal: false,
      stdinKind: "recorded",
      sharedSink: false
    })
    const code = yield* Cli.main(args).pipe(Effect.provide([stdio, NodeContext.layer]))
    const stdout = concat(out)
    const ran: Ran = {
      code,
      stdout,
      out: decoder.decode(stdout),
      err: decoder.decode(concat(err)),
      writes,
      endedAt: Date.now()
    }
    return ran
  })

/** The time of the first write to `stream` containing `text`. */
const writtenAt = (ran: Ran, stream: Write["stream"], text: string): number => {
  const write = ran.writes.find((w) => w.stream === stream && w.text.includes(text))
  if (write === undefined) throw new Error(`nothing containing ${JSON.stringify(text)} was written to ${stream}`)
  return write.at
}

/**
 * Runs the real bin (the bundle) with our own runner (it reports a real exit code or signal). `env` is set on top of
 * the core environment (node is started by absolute path, so `PATH` may lack anything).
 */
const bin = (args: ReadonlyArray<string>, options: { readonly stdin?: string; readonly env?: Record<string, string> } = {}) =>
  NativeRunner.exec({
    argv: [process.execPath, BIN, ...args],
    cwd: ROOT,
    ...(options.env === undefined ? {} : { env: options.env }),
    ...(options.stdin === undefined ? {} : { stdin: encoder.encode(options.stdin) })
  }).pipe(
    Effect.map((result) => ({ ...result, out: decoder.decode(result.stdout), err: decoder.decode(result.stderr) })),
    Effect.provide(NativeRunner.layerNode({ timeout: "60 seconds" }))
  )

const decodeJson = Schema.decodeUnknownSync(Schema.parseJson(Cli.CliJsonResult), { onExcessProperty: "error" })
const decodeJsonl = Schema.decodeUnknownSync(Schema.parseJson(Cli.CliJsonlEvent), { onExcessProperty: "error" })
const decodeAuditLine = Schema.decodeUnknownSync(
  Schema.parseJson(Schema.extend(Cli.CliJsonAudit, Schema.Struct({ timestamp: Schema.String }))),
  { onExcessProperty: "error" }
)

let markers = 0
/** A command that would create a file: if the file exists afterwards, something was spawned. */
const touching = () => {
  const marker = path.join(tmp, `marker-${markers++}`)
  return { marker, argv: ["sh", "-c", `touch '${marker}'`] }
}

const lines = (text: string) => text.split("\n").filter((line) => line !== "")

/** A workspace the sandbox user can write (as root: 65534's, as `native-runner workspace new` makes one). */
const workspace = () => {
  const dir = mkdtempSync(path.join(tmp, "ws-"))
  if (process.getuid?.() === 0) chownSync(dir, 65534, 65534)
  return dir
}

/** A TCP server on 127.0.0.1 counting connections, closed with the scope. */
const tcpServer = Effect.acquireRelease(
  Effect.async<{ readonly port: number; readonly connections: () => number; readonly close: () => void }>((resume) => {
    let connections = 0
    const server = createServer((socket) => {
      connections++
      socket.end()
    })
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      resume(Effect.succeed({
        port: typeof address === "object" && address !== null ? address.port : 0,
        connections: () => connections,
        close: () => server.close()
      }))
    })
  }),
  (server) => Effect.sync(server.close)
)

const notADirectory = path.join(tmp, "not-a-directory")
writeFileSync(notADirectory, "")

const badUsage: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
    [["run", "--bogus", "--"], "native-runner: unknown option '--bogus'"],
    [["run", "--json", "--json", "--"], "native-runner: '--json' given more than once"],
    [["run", "--timeout", "--"], "native-runner: '--timeout' is missing its value or given more than once"],
    [["run"], "native-runner: missing '--' before the command (e.g. native-runner run -- sh -c 'touch '\\''"],
    [["run", "--max-stdout", "12x", "--"], "native-runner: --max-stdout: bad size '12x' (use e.g. 1000, 64KiB, 1MiB, 2GB)"],
    [["run", "--max-stdout", "5GiB", "--"], "native-runner: --max-stdout: size must be at most 4294967296"],
    [["run", "--timeout", "10x", "--"], "native-runner: --timeout: bad duration '10x' (use e.g. 10 (seconds), 500ms, 1m30s, 2h)"],
    [["run", "--kill-grace", "soon", "--"], "native-runner: --kill-grace: bad duration 'soon' (use e.g. 10 (seconds), 500ms, 1m30s, 2h)"],
    [["run", "--sandbox", "firejail", "--"], "native-runner: --sandbox: unknown value 'firejail' (use none or bwrap)"],
    [["run", "--inherit-env", "some", "--"], "native-runner: --inherit-env: unknown value 'some' (use none or core or all)"],
    [["run", "--env", "NOVALUE", "--"], "native-runner: --env: missing '=' (use KEY=VALUE)"],
    [["run", "--workspace", "/tmp", "--"], "native-runner: --workspace only applies with --sandbox bwrap"],
    [["run", "--network", "none", "--"], "native-runner: --network only applies with --sandbox bwrap"],
    [["run", "--sandbox-user", "1000:1000", "--"], "native-runner: --sandbox-user only applies with --sandbox bwrap"],
    [["run", "--no-seccomp", "--"], "native-runner: --no-seccomp only applies with --sandbox bwrap"],
    [["run", "--sandbox", "bwrap", "--sandbox-user", "0:0", "--"], "native-runner: --sandbox-user: uid and gid must be"],
    [["run", "--sandbox", "bwrap", "--max-cpu", "1500ms", "--"], "native-runner: --max-cpu must be whole seconds (got 1500ms)"],
    [["run", "--sandbox", "bwrap", "--max-open-files", "0", "--"], "native-runner: --max-open-files: must be at least 1"],
    [["run", "--stdin-file", "/nonexistent/in", "--"], "native-runner: cannot read --stdin-file: ENOENT"],
    [["run", "--audit-log", "/nonexistent/dir/a.jsonl", "--"], "native-runner: cannot write --audit-log: ENOENT"],
    [["run", "--json", "--jsonl", "--"], "native-runner: use either --json or --jsonl, not both"],
    [["run", "--stdin", "none", "--stdin-file", "-", "--"], "native-runner: use either --stdin or --stdin-file, not both"],
    [["run", "--stdin", "all", "--"], "native-runner: --stdin: unknown value 'all' (use pass or none)"],
    [["run", "--jsonl", "--jsonl", "--"], "native-runner: '--jsonl' given more than once"],
    [["run", "--spill-max", "1MiB", "--"], "native-runner: --spill-max only applies with --spill-dir"],
    [["run", "--keep", "middle", "--"], "native-runner: --keep: unknown value 'middle' (use head or tail or both)"],
    [["run", "--idle-timeout", "soon", "--"], "native-runner: --idle-timeout: bad duration 'soon' (use e.g. 10 (seconds), 500ms, 1m30s, 2h)"],
    [["run", "--spill-dir", "/nonexistent/spills", "--"], "native-runner: cannot use --spill-dir: ENOENT"],
    [["run", "--spill-dir", notADirectory, "--"], `native-runner: cannot use --spill-dir: ${notADirectory} is not a directory`],
    [["exec", "--"], "native-runner: Invalid subcommand for native-runner - use one of 'run', 'worker', 'fleet', 'workspace', 'doctor'"],
    [["run", "--credentials", "/etc/native-runner/acme.credentials", "--"], "native-runner: --credentials only applies with --cluster"]
]

describe("native-runner (in-process main)", () => {
  it.live.each(badUsage)("bad usage %j: exit 2, one line and a usage hint, nothing spawned", ([args, message]) =>
    Effect.gen(function*() {
      const { argv, marker } = touching()
      const ran = yield* cli([...args, ...argv])
      expect(ran.code).toBe(2)
      expect(ran.out).toBe("")
      const [first, second, ...rest] = lines(ran.err)
      expect(first?.startsWith(message)).toBe(true)
      expect(second).toMatch(/^usage: native-runner /)
      expect(rest).toStrictEqual([])
      expect(existsSync(marker)).toBe(false)
    }))

  it.live("no argv after '--', or no arguments at all: exit 2", () =>
    Effect.gen(function*() {
      const empty = yield* cli(["run", "--json", "--"])
      expect([empty.code, lines(empty.err)[0]]).toStrictEqual([2, "native-runner: Missing argument <command>"])
      const none = yield* cli([])
      expect([none.code, lines(none.err)]).toStrictEqual([2, [
        "usage: native-runner run [options] -- <command> [args...] | native-runner worker --listen HOST:PORT | native-runner doctor   (see --help)"
      ]])
    }))

  it.live("--max-file-size without a sandbox: the write is stopped, a notice says why, JSON keeps limitExceeded", () =>
    Effect.gen(function*() {
      const dir = workspace()
      const big = ["sh", "-c", "head -c 5000000 /dev/zero > big"]
      const plain = yield* cli(["run", "--cwd", dir, "--max-file-size", "100KiB", "--", ...big])
      expect(plain.code).toBe(128 + os.constants.signals.SIGXFSZ)
      expect(lines(plain.err).at(-1)).toBe("native-runner: stopped by the file-size limit")
      expect(statSync(path.join(dir, "big")).size).toBe(102_400)
      const json = decodeJson((yield* cli(["run", "--json", "--cwd", dir, "--max-file-size", "100KiB", "--", ...big])).out)
      expect(json.limitExceeded).toBe("fileSize")
      expect(json.audits[0]).toMatchObject({ limitExceeded: "fileSize", sandbox: "none" })
      const small = yield* cli(["run", "--cwd", dir, "--max-file-size", "100KiB", "--", "sh", "-c", "echo ok > small"])
      expect([small.code, small.err]).toStrictEqual([0, ""])
    }))

  it.live("a sandbox that cannot be built fails the run (125, the layer's message and fix), never unsandboxed", () =>
    Effect.gen(function*() {
      // The CLI has no --bwrap-path; its layer is `runnerLayer`, so a missing bwrap is simulated there.
      const policy = { workspace: workspace() }
      const error = yield* Effect.flip(Effect.scoped(NativeRunner.makeNode({ sandbox: { policy, bwrapPath: "/nonexistent/bwrap" } })))
      expect(error._tag).toBe("SandboxUnavailable")
      expect(Cli.exitCodeOf(error)).toBe(125)
      const [line, ...more] = Cli.errorLines(error)
      expect(more).toStrictEqual([])
      expect(line).toMatch(/^native-runner: bubblewrap was not found: .* Fix: Install bubblewrap/)
      // doctor runs the same check, so its verdict names the same failure.
      const report = Cli.doctorReport(yield* Cli.doctorFacts({ bwrapPath: "/nonexistent/bwrap" }))
      expect(report.bwrapUsable).toBe(false)
      expect(report.bwrapVerdict).toBe(`unavailable: ${error.message}`)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.live("spawn failures: 127 not found, 126 permission denied, 2 missing cwd", () =>
    Effect.gen(function*() {
      const notFound = yield* cli(["run", "--", "no-such-command-for-native-runner"])
      expect([notFound.code, notFound.err]).toStrictEqual([
        127,
        "native-runner: command not found: no-such-command-for-native-runner\n"
      ])
      const script = path.join(tmp, "not-executable.sh")
      writeFileSync(script, "#!/bin/sh\necho ran\n")
      chmodSync(script, 0o644)
      const denied = yield* cli(["run", "--", script])
      expect([denied.code, denied.err]).toStrictEqual([126, `native-runner: permission denied: ${script}\n`])
      const noCwd = yield* cli(["run", "--cwd", path.join(tmp, "missing"), "--", "true"])
      expect(noCwd.code).toBe(2)
      expect(noCwd.err).toMatch(/^native-runner: cannot use cwd .*missing/)
    }))

  it.live("--json: one object matching CliJsonResult, binary output as base64, the child's exit code", () =>
    Effect.gen(function*() {
      const ran = yield* cli(["run", "--json", "--", "sh", "-c", "printf '\\377\\376\\000'; printf 'h\\303\\251' >&2; exit 5"])
      expect(ran.code).toBe(5)
      expect(ran.err).toBe("")
      expect(lines(ran.out)).toHaveLength(1)
      const json = decodeJson(ran.out)
      expect(json).toMatchObject({
        exitCode: 5,
        signal: null,
        timedOut: false,
        stdout: "//4A",
        stdoutEncoding: "base64",
        stdoutBytes: 3,
        stderr: "hé",
        stderrEncoding: "utf8",
        stderrBytes: 3,
        truncatedStdout: false
      })
      expect(json.audits).toHaveLength(1)
      expect(json.audits[0]).toMatchObject({ cmd: "sh", exitCode: 5, sandbox: "none", cwd: process.cwd() })
    }))

  it.live("plain mode: output bytes first, then one notice per event; --max-stderr takes sizes", () =>
    Effect.gen(function*() {
      const ran = yield* cli(["run", "--max-stderr", "10", "--", "sh", "-c", "printf out; head -c 100 /dev/zero >&2"])
      expect([ran.code, ran.out]).toStrictEqual([0, "out"])
      // The notice starts on its own line after the command's partial last line.
      expect(ran.err).toBe("\0".repeat(10) + "\nnative-runner: stderr truncated at 10 of 100 bytes\n")
    }))

  it.live("live output: the first line is printed while the command is still running", () =>
    Effect.gen(function*() {
      const ran = yield* cli(["run", "--", "sh", "-c", "echo first; sleep 2; echo second"])
      expect([ran.code, ran.out, ran.err]).toStrictEqual([0, "first\nsecond\n", ""])
      // "first" was written about 2 s before "second" and the end; the bounds leave room for a loaded host.
      expect(writtenAt(ran, "stdout", "second") - writtenAt(ran, "stdout", "first")).toBeGreaterThan(1500)
      expect(ran.endedAt - writtenAt(ran, "stdout", "first")).toBeGreaterThan(1500)
      expect(ran.writes.some((w) => w.text.includes("first") && w.text.includes("second"))).toBe(false)
    }))

  it.live("live output honours the caps: --max-stdout 10 on 100 bytes prints exactly 10 bytes, as they come", () =>
    Effect.gen(function*() {
      const ran = yield* cli(["run", "--max-stdout", "10", "--", "sh", "-c", "printf %0100d 7; sleep 1; echo late >&2"])
      expect(ran.code).toBe(0)
      expect(ran.out).toBe("0".repeat(10))
      expect(ran.err).toBe("late\nnative-runner: stdout truncated at 10 of 100 bytes\n")
      expect(writtenAt(ran, "stderr", "late") - writtenAt(ran, "stdout", "0")).toBeGreaterThan(500)
    }))

  it.live("--keep tail prints the last bytes at the end; --keep both the head half live and the tail half at the end", () =>
    Effect.gen(function*() {
      const script = "printf 0123456789abcdefghij; printf ABCDEFGHIJ >&2; sleep 1"
      const caps = ["--max-stdout", "6", "--max-stderr", "4"]
      const tail = yield* cli(["run", "--keep", "tail", ...caps, "--", "sh", "-c", script])
      expect([tail.code, tail.out]).toStrictEqual([0, "efghij"])
      expect(tail.err).toBe(
        "GHIJ\nnative-runner: stdout: the first 14 of 20 bytes omitted\n" +
          "native-runner: stderr: the first 6 of 10 bytes omitted\n"
      )
      // Which bytes are the last ones is known only once the run is over.
      expect(tail.writes.every((w) => tail.endedAt - w.at < 500)).toBe(true)
      const both = yield* cli(["run", "--keep", "both", ...caps, "--", "sh", "-c", script])
      expect([both.code, both.out]).toStrictEqual([0, "012hij"])
      expect(both.err).toBe(
        "ABIJ\nnative-runner: stdout: 14 bytes omitted after byte 3\nnative-runner: stderr: 6 bytes omitted after byte 2\n"
      )
      expect(both.writes.filter((w) => w.stream === "stdout").map((w) => w.text)).toStrictEqual(["012", "hij"])
      expect(writtenAt(both, "stdout", "hij") - writtenAt(both, "stdout", "012")).toBeGreaterThan(500)
      // Output shorter than the cap is printed whole, in order, whatever the mode.
      const short = yield* cli(["run", "--keep", "both", "--max-stdout", "100", "--", "sh", "-c", script])
      expect([short.out, short.err]).toStrictEqual(["0123456789abcdefghij", "ABCDEFGHIJ"])
    }))

  it.live("--idle-timeout 300ms: exit 124 with what was printed and the idle notice, without waiting", () =>
    Effect.gen(function*() {
      const started = Date.now()
      const ran = yield* cli(["run", "--idle-timeout", "300ms", "--", "sh", "-c", "echo hi; sleep 5"])
      expect(Date.now() - started).toBeLessThan(4000)
      expect([ran.code, ran.out, ran.err]).toStrictEqual([
        124,
        "hi\n",
        "native-runner: no output for 300ms: stopped (exit 124)\n"
      ])
      const json = decodeJson((yield* cli(["run", "--json", "--idle-timeout", "300ms", "--", "sleep", "5"])).out)
      expect([json.exitCode, json.timedOut, json.timeoutKind, json.audits[0]?.timeoutKind])
        .toStrictEqual([124, true, "idle", "idle"])
    }))

  it.live("--spill-dir (relative to our cwd): two 0600 files with every byte; their paths on stderr; --spill-max", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(path.join(tmp, "spill-"))
      const script = "seq 1 2000; printf oops >&2"
      const relative = path.relative(process.cwd(), dir)
      const ran = yield* cli(["run", "--spill-dir", relative, "--max-stdout", "100", "--", "sh", "-c", script])
      const everything = Array.from({ length: 2000 }, (_, i) => `${i + 1}\n`).join("")
      expect([ran.code, ran.out]).toStrictEqual([0, everything.slice(0, 100)])
      const [stdoutFile, stderrFile] = ["stdout", "stderr"].map((stream) => {
        const [file, ...more] = readdirSync(dir).filter((name) => name.endsWith(`.${stream}`))
        expect(more).toStrictEqual([])
        return path.join(dir, file ?? "")
      })
      expect(lines(ran.err)).toStrictEqual([
        "oops",
        "native-runner: stdout truncated at 100 of 8893 bytes",
        `native-runner: stdout written to ${stdoutFile}`,
        `native-runner: stderr written to ${stderrFile}`
      ])
      expect([readFileSync(stdoutFile ?? "", "utf8"), readFileSync(stderrFile ?? "", "utf8")])
        .toStrictEqual([everything, "oops"])
      for (const file of [stdoutFile, stderrFile]) expect(statSync(file ?? "").mode & 0o777).toBe(0o600)
      const capped = decodeJson(
        (yield* cli(["run", "--json", "--spill-dir", dir, "--spill-max", "1000", "--", "sh", "-c", script])).out
      )
      expect([capped.stdoutBytes, capped.stdout.length]).toStrictEqual([8893, 8893])
      expect(statSync(capped.stdoutFile ?? "").size).toBe(1000)
      expect(readFileSync(capped.stderrFile ?? "", "utf8")).toBe("oops")
    }))

  it.live("--jsonl: one valid JSON object per line, in order as they happen, the last the exit object", () =>
    Effect.gen(function*() {
      const script = "echo out; sleep 0.3; echo err >&2; sleep 0.3; printf '\\377'; exit 3"
      const ran = yield* cli(["run", "--jsonl", "--", "sh", "-c", script])
      expect([ran.code, ran.err]).toStrictEqual([3, ""])
      // Each event is its own write, with its own newline.
      expect(ran.writes.every((w) => w.stream === "stdout" && w.text.endsWith("\n") && lines(w.text).length === 1)).toBe(true)
      const events = lines(ran.out).map((line) => decodeJsonl(line))
      const [started, ...rest] = events
      const exit = rest.pop()
      expect(rest).toStrictEqual([
        { event: "stdout", data: "out\n", encoding: "utf8" },
        { event: "stderr", data: "err\n", encoding: "utf8" },
        { event: "stdout", data: "/w==", encoding: "base64" }
      ])
      if (started?.event !== "started" || exit?.event !== "exit") throw new Error(`unexpected events: ${ran.out}`)
      expect(started.pid).toBeGreaterThan(0)
      expect(exit).toMatchObject({
        exitCode: 3,
        stdout: "b3V0Cv8=",
        stdoutEncoding: "base64",
        stderr: "err\n",
        dropped: { chunks: 0, bytes: 0 }
      })
      expect(exit.audits[0]?.runId).toBe(started.runId)
      expect(writtenAt(ran, "stdout", "\"exit\"") - writtenAt(ran, "stdout", "\"started\"")).toBeGreaterThan(400)
      // The caps apply to the events as to plain output.
      const capped = yield* cli(["run", "--jsonl", "--max-stdout", "5", "--", "printf", "0123456789"])
      const cappedEvents = lines(capped.out).map((line) => decodeJsonl(line))
      expect(cappedEvents.filter((event) => event.event === "stdout"))
        .toStrictEqual([{ event: "stdout", data: "01234", encoding: "utf8" }])
      expect(cappedEvents.at(-1)).toMatchObject({
        event: "exit",
        stdout: "01234",
        truncatedStdout: true,
        stdoutOmitted: { offset: 5, bytes: 5 }
      })
    }))

  it.live("--timeout: exit 124 and one line, without waiting for the command", () =>
    Effect.gen(function*() {
      const started = Date.now()
      const ran = yield* cli(["run", "--timeout", "200ms", "--kill-grace", "100ms", "--", "sleep", "10"])
      expect(Date.now() - started).toBeLessThan(3000)
      expect([ran.code, ran.err]).toStrictEqual([124, "native-runner: timed out after 200ms (exit 124)\n"])
    }))

  it.live("--env, --inherit-env, --cwd (relative to ours) and --stdin-file reach the command", () =>
    Effect.gen(function*() {
      const env = yield* cli(["run", "--inherit-env", "none", "--env", "A=1", "--env", "B=x=y", "--", "/usr/bin/env"])
      expect(lines(env.out).sort()).toStrictEqual(["A=1", "B=x=y"])
      const cwd = yield* cli(["run", "--cwd", "test", "--", "pwd"])
      expect(cwd.out).toBe(path.join(process.cwd(), "test") + "\n")
      const input = path.join(tmp, "input.txt")
      writeFileSync(input, "from a file")
      const file = yield* cli(["run", "--stdin-file", input, "--", "cat"])
      expect(file.out).toBe("from a file")
      const ours = yield* cli(["run", "--stdin-file", "-", "--", "cat"], "from our stdin")
      expect(ours.out).toBe("from our stdin")
      const none = yield* cli(["run", "--", "cat"], "not passed on")
      expect(none.out).toBe("")
    }))

  it.live("--audit-log appends one JSON line per run, the record --json reports", () =>
    Effect.gen(function*() {
      const log = path.join(tmp, "in-process.jsonl")
      const ran = yield* cli(["run", "--json", "--audit-log", log, "--", "echo", "hi"])
      const json = decodeJson(ran.out)
      const [line, ...more] = lines(readFileSync(log, "utf8"))
      expect(more).toStrictEqual([])
      const { timestamp, ...record } = decodeAuditLine(line)
      expect(record).toStrictEqual(json.audits[0])
      expect(Number.isNaN(Date.parse(timestamp))).toBe(false)
    }))

  it.live("--redact-after masks the flag's value in the audit log and --json's audits, never in the command", () =>
    Effect.gen(function*() {
      const log = path.join(tmp, "redacted.jsonl")
      const script = "printf '%s\\n' \"$@\""
      const plain = yield* cli([
        "run", "--audit-log", log, "--redact-after", "--token", "--", "sh", "-c", script, "sh", "--token", "s3cr3t"
      ])
      // The command got the real value; only the records are masked.
      expect([plain.code, plain.out]).toStrictEqual([0, "--token\ns3cr3t\n"])
      const json = decodeJson((yield* cli([
        "run", "--json", "--audit-log", log, "--redact-after", "--token", "--redact-after", "-p", "--",
        "sh", "-c", script, "sh", "--token=s3cr3t", "-p", "pa55"
      ])).out)
      expect(json.stdout).toBe("--token=s3cr3t\n-p\npa55\n")
      expect(json.audits[0]?.argv).toStrictEqual(["sh", "-c", script, "sh", "--token=***", "-p", "***"])
      const text = readFileSync(log, "utf8")
      expect(text).not.toContain("s3cr3t")
      expect(text).not.toContain("pa55")
      expect(lines(text).map((line) => decodeAuditLine(line).argv.slice(3))).toStrictEqual([
        ["sh", "--token", "***"],
        ["sh", "--token=***", "-p", "***"]
      ])
    }))

  it.live("--audit-log creates the file 0600; an existing file keeps its mode", () =>
    Effect.gen(function*() {
      const fresh = path.join(tmp, "fresh.jsonl")
      expect((yield* cli(["run", "--audit-log", fresh, "--", "true"])).code).toBe(0)
      expect(statSync(fresh).mode & 0o777).toBe(0o600)
      const shared = path.join(tmp, "shared.jsonl")
      writeFileSync(shared, "")
      chmodSync(shared, 0o644)
      expect((yield* cli(["run", "--audit-log", shared, "--", "true"])).code).toBe(0)
      expect(statSync(shared).mode & 0o777).toBe(0o644)
      expect(lines(readFileSync(shared, "utf8"))).toHaveLength(1)
    }))

  it.live("--help for every command reads like timeout --help: each option with its own description, 80 columns, examples", () =>
    Effect.gen(function*() {
      const run = yield* cli(["run", "--help"])
      expect(run.code).toBe(0)
      expect(run.out.split("\n")[0]).toBe("Usage: native-runner run [OPTION]... -- COMMAND [ARG]...")
      expect(run.out).toContain("\nExamples:\n  native-runner run -- sh -c 'echo hi'\n")
      // Every option of run, each on a line of its own followed by words of its own (none shares another's text).
      const descriptions = Cli.RUN_OPTION_NAMES.map((name) => {
        const at = run.out.split("\n").findIndex((line) => new RegExp(`^  ${name}( |$)`).test(line))
        expect([name, at >= 0]).toStrictEqual([name, true])
        return run.out.split("\n").slice(at, at + 2).join(" ").replace(/^\s*\S+( \S+)?\s+/, "").slice(0, 40)
      })
      expect(new Set(descriptions).size).toBe(descriptions.length)
      expect(run.out).not.toContain("A user-defined piece of text")
      expect(run.out).not.toContain("must be repeated")
      expect(run.out).not.toContain("\u001b[")
      for (const args of [["--help"], ["run", "-h"], ["doctor", "--help"], ["fleet", "--help"], ["fleet", "init", "--help"],
        ["fleet", "tenant", "--help"], ["workspace", "new", "--help"], ["worker", "--help"]]) {
        const help = yield* cli(args)
        expect([args, help.code, help.err]).toStrictEqual([args, 0, ""])
        const wide = help.out.split("\n").filter((line) => line.length > 80 || / {3,}$/.test(line))
        expect([args, wide]).toStrictEqual([args, []])
      }
      const doctor = yield* cli(["doctor", "-h"])
      expect([doctor.code, doctor.out.includes("\n  native-runner doctor --sandbox bwrap\n")]).toStrictEqual([0, true])
      const root = yield* cli(["--help"])
      expect(root.code).toBe(0)
      expect(root.out).toMatch(/^  run {2,}Runs one command/m)
      expect(root.out).toMatch(/^  doctor {2,}/m)
      // After --, --help is the command's.
      expect((yield* cli(["run", "--", "printf", "%s\\n", "--help"])).out).toBe("--help\n")
      const version = yield* cli(["--version"])
      // One line: the version, no blank line after it.
      expect([version.code, version.out]).toStrictEqual([0, `${Cli.VERSION}\n`])
    }))

  it.live("fleet init DIR: the fleet's five files 0600 in a 0700 directory, its path printed; a second init is refused (125)", () =>
    Effect.gen(function*() {
      const dir = path.join(tmp, "fleet-init", "fleet")
      const made = yield* cli(["fleet", "init", dir, "--host", "worker-1.internal", "--host", "127.0.0.1"])
      expect(made.code).toBe(0)
      expect(made.out).toBe(`${dir}\n`)
      expect(made.err).toMatch(/for worker-1\.internal, 127\.0\.0\.1 in /)
      expect(readdirSync(dir).sort()).toEqual(["ca.crt", "ca.key", "metrics.token", "worker.crt", "worker.key"])
      expect(statSync(dir).mode & 0o777).toBe(0o700)
      for (const file of readdirSync(dir)) expect(statSync(path.join(dir, file)).mode & 0o777).toBe(0o600)
      const key = readFileSync(path.join(dir, "ca.key"))
      const again = yield* cli(["fleet", "init", dir])
      expect(again.code).toBe(125)
      expect(again.err).toMatch(/exists already/)
      expect(readFileSync(path.join(dir, "ca.key")).equals(key)).toBe(true)
      const bad = yield* cli(["fleet", "init", path.join(tmp, "fleet-init", "bad"), "--host", "a,DNS:evil"])
      expect(bad.code).toBe(125)
      expect(bad.err).toMatch(/not a host name or an IP address/)
      const help = yield* cli(["fleet", "init", "--help"])
      expect(help.code).toBe(0)
      expect(help.out).toContain("\n  native-runner fleet init /etc/native-runner/fleet\n")
    }))

  it.live("doctor: a table, exit 0 unless the requested sandbox is unusable", () =>
    Effect.gen(function*() {
      const plain = yield* cli(["doctor"])
      expect(plain.code).toBe(0)
      const checks = lines(plain.out).map((line) => line.split(/\s{2,}/)[0])
      expect(checks).toEqual(expect.arrayContaining([
        "node",
        "bwrap present",
        "bwrap works",
        "userns clone",
        "max userns",
        "prlimit present",
        "max-procs"
      ]))
      expect(plain.out).toMatch(new RegExp(`^node\\s+ok\\s+${process.version}$`, "m"))
      expect(plain.out).toMatch(/^--sandbox bwrap: (available|unavailable: .+)$/m)
      expect(plain.out).toMatch(
        process.getuid?.() === 0 ? /^max-procs\s+(ok|FAIL)\s+pids cgroup \(root\): /m : /^max-procs\s+(ok|warn)\s+RLIMIT_NPROC/m
      )
      const none = yield* cli(["doctor", "--sandbox", "none"])
      expect(none.code).toBe(0)
    }))

  it.live.runIf(process.getuid?.() === 0)(
    "a workspace the sandbox user cannot write: run exits 125 with one line, nothing ran; doctor --workspace says so",
    () =>
      Effect.gen(function*() {
        const dir = mkdtempSync(path.join(tmp, "root-ws-"))
        const run = yield* cli(["run", "--sandbox", "bwrap", "--workspace", dir, "--", "touch", "/workspace/ran"])
        expect([run.code, run.out, lines(run.err).length]).toStrictEqual([125, "", 1])
        expect(run.err).toContain(`the sandbox user 65534:65534 cannot write the workspace ${dir} (owner 0:0, mode 700)`)
        expect(run.err).toContain(`native-runner workspace adopt ${dir}`)
        expect(existsSync(path.join(dir, "ran"))).toBe(false)
        expect([lstatSync(dir).uid, lstatSync(dir).mode & 0o7777]).toStrictEqual([0, 0o700])
        const doctor = yield* cli(["doctor", "--sandbox", "bwrap", "--workspace", dir])
        expect(doctor.code).toBe(1)
        expect(doctor.out).toMatch(new RegExp(`^workspace\\s+FAIL\\s+the sandbox user 65534:65534 cannot write`, "m"))
        const owner = yield* cli(["run", "--sandbox", "bwrap", "--sandbox-user", "workspace-owner", "--workspace", dir, "--", "true"])
        expect(owner.code).toBe(125)
        expect(owner.err).toContain(`the workspace ${dir} is owned by 0:0, and a sandbox never runs as root`)
      }))

  it.live.runIf(process.getuid?.() === 0)(
    "workspace new and adopt prepare workspaces that run accepts; workspace-owner runs as the owner",
    () =>
      Effect.gen(function*() {
        const parent = mkdtempSync(path.join(tmp, "jobs-"))
        chmodSync(parent, 0o755)
        const made = yield* cli(["workspace", "new", parent])
        expect(made.code).toBe(0)
        const fresh = made.out.trim()
        expect(path.dirname(fresh)).toBe(parent)
        expect([lstatSync(fresh).uid, lstatSync(fresh).gid, lstatSync(fresh).mode & 0o7777]).toStrictEqual([65534, 65534, 0o700])
        const inFresh = yield* cli(["run", "--sandbox", "bwrap", "--workspace", fresh, "--", "sh", "-c", "id -u > /workspace/who"])
        expect(inFresh.code).toBe(0)
        expect(readFileSync(path.join(fresh, "who"), "utf8")).toBe("65534\n")
        const tree = path.join(parent, "tree")
        mkdirSync(path.join(tree, "src"), { recursive: true })
        writeFileSync(path.join(tree, "src", "main.c"), "int main(void) { return 0; }\n")
        const adopted = yield* cli(["workspace", "adopt", tree, "--sandbox-user", "4242:4242"])
        expect([adopted.code, adopted.out]).toStrictEqual([0, `${tree}\n`])
        for (const entry of [tree, path.join(tree, "src"), path.join(tree, "src", "main.c")]) {
          expect([entry, lstatSync(entry).uid, lstatSync(entry).gid]).toStrictEqual([entry, 4242, 4242])
        }
        const asOwner = yield* cli([
          "run", "--sandbox", "bwrap", "--sandbox-user", "workspace-owner", "--workspace", tree, "--", "sh", "-c", "id -u; id -g"
        ])
        expect([asOwner.code, asOwner.out]).toStrictEqual([0, "4242\n4242\n"])
        const shared = yield* cli(["workspace", "adopt", "/tmp"])
        expect([shared.code, lines(shared.err)]).toStrictEqual([125, ["native-runner: /tmp is not adopted: /tmp is a system or shared directory"]])
      }))

  it.live("doctor --sandbox bwrap agrees with run --sandbox bwrap", () =>
    Effect.gen(function*() {
      const doctor = yield* cli(["doctor", "--sandbox", "bwrap"])
      const run = yield* cli(["run", "--sandbox", "bwrap", "--workspace", workspace(), "--", "true"])
      expect(doctor.code).toBe(sandboxUsable ? 0 : 1)
      expect(run.code).toBe(sandboxUsable ? 0 : 125)
      if (Either.isLeft(preflight)) {
        expect(doctor.out).toContain(`--sandbox bwrap: unavailable: ${preflight.left.message}`)
        expect(run.err).toContain(preflight.left.message)
      } else {
        expect(doctor.out).toMatch(/^bwrap works\s+ok\s+preflight passed/m)
        expect(doctor.out).toMatch(/^--sandbox bwrap: available/m)
      }
    }))
})

describe.runIf(sandboxUsable || inCI)("native-runner run --sandbox bwrap (in-process main, real bubblewrap)", () => {
  it.live("writes land in the workspace on the host; --json audits say bwrap, network none", () =>
    Effect.gen(function*() {
      const ws = workspace()
      const script = ["sh", "-c", "echo hi > /workspace/f; cat /workspace/f"]
      const ran = yield* cli(["run", "--sandbox", "bwrap", "--workspace", ws, "--", ...script])
      expect([ran.code, ran.out, ran.err]).toStrictEqual([0, "hi\n", ""])
      expect(readFileSync(path.join(ws, "f"), "utf8")).toBe("hi\n")
      const json = decodeJson((yield* cli(["run", "--json", "--sandbox", "bwrap", "--workspace", ws, "--", "pwd"])).out)
      expect([json.exitCode, json.stdout, json.limitExceeded]).toStrictEqual([0, "/workspace\n", null])
      expect(json.audits[0]).toMatchObject({ sandbox: "bwrap", network: "none", cwd: ws })
    }))

  it.live("--network none: a TCP connect to a host server fails; --network host reaches it", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* tcpServer
      const probe = ["bash", "-c", `echo hi > /dev/tcp/127.0.0.1/${server.port} && echo connected`]
      const ws = workspace()
      const denied = yield* cli(["run", "--sandbox", "bwrap", "--workspace", ws, "--network", "none", "--", ...probe])
      expect(denied.code).not.toBe(0)
      expect(denied.out).toBe("")
      expect(server.connections()).toBe(0)
      const allowed = yield* cli(["run", "--sandbox", "bwrap", "--workspace", ws, "--network", "host", "--", ...probe])
      expect([allowed.code, allowed.out]).toStrictEqual([0, "connected\n"])
      expect(server.connections()).toBe(1)
    })))

  it.live("no host variables unless asked; a cwd outside the workspace is bad usage (exit 2)", () =>
    Effect.gen(function*() {
      const ws = workspace()
      const env = yield* cli(["run", "--sandbox", "bwrap", "--workspace", ws, "--env", "A=1", "--", "env"])
      expect(lines(env.out).map((line) => line.split("=")[0]).sort()).toStrictEqual(["A", "HOME", "PATH", "PWD", "TMPDIR"])
      const outside = yield* cli(["run", "--sandbox", "bwrap", "--workspace", ws, "--cwd", "/etc", "--", "true"])
      expect(outside.code).toBe(2)
      expect(lines(outside.err)).toStrictEqual([
        `native-runner: Cannot sandbox the command: cwd must be inside the sandbox workspace ${ws}`,
        Cli.usageHint("run")
      ])
      // A cwd as the program sees it is not taken as one (it is a host path), but the error says which host path.
      const seen = yield* cli(["run", "--sandbox", "bwrap", "--workspace", ws, "--cwd", "/workspace/sub", "--", "true"])
      expect([seen.code, lines(seen.err)[0]]).toStrictEqual([2,
        `native-runner: Cannot sandbox the command: cwd must be inside the sandbox workspace ${ws} ` +
        `(cwd is a host path: for /workspace/sub inside the sandbox, use ${ws}/sub)`])
    }))

  it.live("limits apply inside the sandbox too: --max-file-size stops the write, with the notice", () =>
    Effect.gen(function*() {
      const ws = workspace()
      const ran = yield* cli([
        "run", "--sandbox", "bwrap", "--workspace", ws, "--max-file-size", "100KiB", "--",
        "sh", "-c", "head -c 5000000 /dev/zero > /workspace/big"
      ])
      expect(ran.code).not.toBe(0)
      expect(lines(ran.err).at(-1)).toBe("native-runner: stopped by the file-size limit")
      expect(statSync(path.join(ws, "big")).size).toBe(102_400)
    }))
})

describe.concurrent("native-runner bin (node dist/bin.js, the bundle)", () => {
  it.live("the bundle finds the spawn helper's program beside it: doctor's library layer starts it without a warning", () =>
    Effect.gen(function*() {
      // doctor builds a default layerNode (spawn helper "always"); a helper it cannot start is a warning on stderr.
      expect(existsSync(path.join(path.dirname(BIN), "bin", "spawnHelper", "native-runner-spawn-helper.mjs"))).toBe(true)
      const result = yield* bin(["doctor"])
      expect([result.exitCode, result.err]).toStrictEqual([0, ""])
    }))

  it.live("run -- sh -c ...: the child's options are not ours; its exit code is ours", () =>
    Effect.gen(function*() {
      const result = yield* bin(["run", "--", "sh", "-c", "echo \"$@\"; exit 3", "sh", "-c", "--foo", "--json", "--help"])
      expect([result.exitCode, result.out, result.err]).toStrictEqual([3, "-c --foo --json --help\n", ""])
    }))

  it.live("live output reaches the OS: 'first' is read from our stdout while the command still runs", () =>
    Effect.gen(function*() {
      const arrivals: Array<{ readonly text: string; readonly at: number }> = []
      const exit = yield* NativeRunner.execStream({
        argv: [process.execPath, BIN, "run", "--", "sh", "-c", "echo first; sleep 2; echo second"],
        cwd: ROOT
      }).pipe(
        Stream.tap((event) =>
          Effect.sync(() => {
            if (event._tag === "Stdout") arrivals.push({ text: decoder.decode(event.bytes), at: Date.now() })
          })
        ),
        Stream.runLast,
        Effect.provide(NativeRunner.layerNode({ timeout: "60 seconds" }))
      )
      const result = Option.isSome(exit) && exit.value._tag === "Exit" ? exit.value.result : undefined
      expect([result?.exitCode, decoder.decode(result?.stdout), decoder.decode(result?.stderr)])
        .toStrictEqual([0, "first\nsecond\n", ""])
      const first = arrivals.find((a) => a.text.includes("first"))
      const second = arrivals.find((a) => a.text.includes("second"))
      expect(first).not.toBe(second)
      expect((second?.at ?? 0) - (first?.at ?? 0)).toBeGreaterThan(1500)
    }))

  it.live("--jsonl --idle-timeout: exit 124 reaches the OS; the lines are events, the last the exit object", () =>
    Effect.gen(function*() {
      const result = yield* bin(["run", "--jsonl", "--idle-timeout", "300ms", "--", "sh", "-c", "echo hi; sleep 10"])
      expect([result.exitCode, result.err]).toStrictEqual([124, ""])
      const events = lines(result.out).map((line) => decodeJsonl(line))
      expect(events.map((event) => event.event)).toStrictEqual(["started", "stdout", "exit"])
      expect(events[1]).toStrictEqual({ event: "stdout", data: "hi\n", encoding: "utf8" })
      expect(events[2]).toMatchObject({ exitCode: 124, timedOut: true, timeoutKind: "idle", stdout: "hi\n" })
    }))

  it.live("--timeout 300ms: exit 124 and the timeout line", () =>
    Effect.gen(function*() {
      const result = yield* bin(["run", "--timeout", "300ms", "--", "sleep", "10"])
      expect([result.exitCode, result.err]).toStrictEqual([124, "native-runner: timed out after 300ms (exit 124)\n"])
    }))

  it.live("kill -9 $$: exit 137 (an exit code, not our own death); truncated stdout flushed before the notices", () =>
    Effect.gen(function*() {
      const result = yield* bin(["run", "--max-stdout", "1KiB", "--", "sh", "-c", "head -c 5000 /dev/zero; kill -9 $$"])
      expect([result.exitCode, result.signal]).toStrictEqual([137, undefined])
      expect(new Uint8Array(result.stdout)).toStrictEqual(new Uint8Array(1024))
      expect(result.err).toBe(
        "native-runner: killed by SIGKILL (exit 137)\nnative-runner: stdout truncated at 1024 of 5000 bytes\n"
      )
    }))

  it.live("--json --audit-log: the schema's shape, base64 for binary, one audit line", () =>
    Effect.gen(function*() {
      const log = path.join(tmp, "bin.jsonl")
      const result = yield* bin(["run", "--json", "--audit-log", log, "--", "printf", "\\377\\376"])
      expect(result.exitCode).toBe(0)
      const json = decodeJson(result.out)
      expect([json.stdout, json.stdoutEncoding, json.stdoutBytes]).toStrictEqual(["//4=", "base64", 2])
      const [line, ...more] = lines(readFileSync(log, "utf8"))
      expect(more).toStrictEqual([])
      const { timestamp: _, ...record } = decodeAuditLine(line)
      expect(record).toStrictEqual(json.audits[0])
    }))

  it.live("--audit-log --redact-after --token: the line has *** and never the value; the file is 0600", () =>
    Effect.gen(function*() {
      const log = path.join(tmp, "bin-redacted.jsonl")
      const result = yield* bin([
        "run", "--audit-log", log, "--redact-after", "--token", "--", "sh", "-c", "true", "--token", "s3cr3t"
      ])
      expect(result.exitCode).toBe(0)
      const text = readFileSync(log, "utf8")
      expect(text).not.toContain("s3cr3t")
      expect(decodeAuditLine(lines(text)[0]).argv).toStrictEqual(["sh", "-c", "true", "--token", "***"])
      expect(statSync(log).mode & 0o777).toBe(0o600)
    }))

  it.live("bad usage: exit 2, nothing spawned", () =>
    Effect.gen(function*() {
      const { argv, marker } = touching()
      const result = yield* bin(["run", "--max-stdout", "lots", "--", ...argv])
      expect(result.exitCode).toBe(2)
      expect(lines(result.err)).toStrictEqual([
        "native-runner: --max-stdout: bad size 'lots' (use e.g. 1000, 64KiB, 1MiB, 2GB)",
        "usage: native-runner run [options] -- <command> [args...]   (see 'native-runner run --help')"
      ])
      expect(existsSync(marker)).toBe(false)
    }))

  it.live("--sandbox bwrap with no bwrap on PATH: exit 125, one line with the fix, nothing run", () =>
    Effect.gen(function*() {
      const { marker } = touching()
      // An absolute /bin/sh: run unsandboxed, it would still create the marker.
      const result = yield* bin(["run", "--sandbox", "bwrap", "--", "/bin/sh", "-c", `touch '${marker}'`], {
        env: { PATH: path.join(tmp, "no-bwrap-here") }
      })
      expect(result.exitCode).toBe(125)
      expect(lines(result.err)).toStrictEqual([
        "native-runner: bubblewrap was not found: no `bwrap` on PATH. Fix: Install " +
        "bubblewrap (`apt-get install -y bubblewrap`, `dnf install bubblewrap`, `apk add bubblewrap`) or put it on " +
        "PATH (the CLI finds it there; the library also takes its absolute path as `bwrapPath`); or run without a sandbox."
      ])
      expect(existsSync(marker)).toBe(false)
    }))

  it.live.runIf(sandboxUsable || inCI)("run --sandbox bwrap --workspace: 'hi' printed, the file on the host", () =>
    Effect.gen(function*() {
      const ws = workspace()
      const result = yield* bin([
        "run", "--sandbox", "bwrap", "--workspace", ws, "--", "sh", "-c", "echo hi > /workspace/f; cat /workspace/f"
      ])
      expect([result.exitCode, result.out, result.err]).toStrictEqual([0, "hi\n", ""])
      expect(readFileSync(path.join(ws, "f"), "utf8")).toBe("hi\n")
    }))

  it.live("command not found: 127", () =>
    Effect.gen(function*() {
      const result = yield* bin(["run", "--", "no-such-command-for-native-runner"])
      expect([result.exitCode, result.err]).toStrictEqual([
        127,
        "native-runner: command not found: no-such-command-for-native-runner\n"
      ])
    }))

  it.live("--json and --jsonl print one JSON object for a run that could not start too (command not found, no cwd)", () =>
    Effect.gen(function*() {
      const decodeError = Schema.decodeUnknownSync(Schema.parseJson(Cli.CliJsonError), { onExcessProperty: "error" })
      const missing = yield* bin(["run", "--json", "--", "no-such-command-for-native-runner"])
      expect(missing.exitCode).toBe(127)
      expect(decodeError(missing.out)).toStrictEqual({
        error: { _tag: "SpawnError", reason: "NotFound", message: "command not found: no-such-command-for-native-runner" },
        exitCode: 127
      })
      expect(lines(missing.err)).toStrictEqual(["native-runner: command not found: no-such-command-for-native-runner"])
      const noCwd = yield* bin(["run", "--json", "--cwd", "/nonexistent/native-runner", "--", "true"])
      expect([noCwd.exitCode, decodeError(noCwd.out)]).toStrictEqual([2, {
        error: { _tag: "SpawnError", reason: "CwdNotFound", message: "cannot use cwd /nonexistent/native-runner: no such directory" },
        exitCode: 2
      }])
      const jsonl = yield* bin(["run", "--jsonl", "--", "no-such-command-for-native-runner"])
      expect(lines(jsonl.out).map((line) => decodeJsonl(line))).toStrictEqual([{
        event: "error",
        error: { _tag: "SpawnError", reason: "NotFound", message: "command not found: no-such-command-for-native-runner" },
        exitCode: 127
      }])
    }))

  it.live("durations as timeout(1) reads them, --help and --version, as the real bin prints them", () =>
    Effect.gen(function*() {
      const bare = yield* bin(["run", "--timeout", "1", "--kill-grace", "0.2", "--", "sleep", "5"])
      expect([bare.exitCode, bare.err]).toStrictEqual([124, "native-runner: timed out after 1s (exit 124)\n"])
      const off = yield* bin(["run", "--timeout", "0", "--", "sh", "-c", "echo off"])
      expect([off.exitCode, off.out]).toStrictEqual([0, "off\n"])
      const compound = yield* bin(["run", "--timeout", "1m30s", "--json", "--", "true"])
      expect(compound.exitCode).toBe(0)
      const help = yield* bin(["run", "--help"])
      expect(help.exitCode).toBe(0)
      expect(help.out.split("\n")[0]).toBe("Usage: native-runner run [OPTION]... -- COMMAND [ARG]...")
      expect(help.out.split("\n").filter((line) => line.length > 80)).toStrictEqual([])
      expect(help.out).not.toContain("A user-defined piece of text")
      const version = yield* bin(["--version"])
      expect([version.exitCode, version.out]).toStrictEqual([0, `${Cli.VERSION}\n`])
    }))

  it.live("our stdout failing otherwise (ENOSPC: > /dev/full) stops the run: one line, exit 125, not a silent exit 0", () =>
    Effect.gen(function*() {
      for (const mode of [[], ["--json"]]) {
        const full = yield* NativeRunner.exec({
          argv: ["sh", "-c", `"$0" "$1" run ${mode.join(" ")} -- echo hi > /dev/full`, process.execPath, BIN]
        }).pipe(Effect.provide(NativeRunner.layerNode()))
        expect([mode, full.exitCode, decoder.decode(full.stderr)]).toStrictEqual([mode, 125,
          "native-runner: cannot write our stdout (ENOSPC): the output is lost; the run was stopped\n"])
      }
    }))

  it.live("a notice after a partial last line starts on its own line when stdout and stderr share a file (2>&1)", () =>
    Effect.gen(function*() {
      const shared = yield* NativeRunner.exec({
        argv: ["sh", "-c", `"$0" "$1" run --max-stdout 3 -- printf 123456 2>&1`, process.execPath, BIN]
      }).pipe(Effect.provide(NativeRunner.layerNode()))
      expect(decoder.decode(shared.stdout)).toBe("123\nnative-runner: stdout truncated at 3 of 6 bytes\n")
      // Apart (stdout to a file or pipe of its own), stderr gets no stray newline.
      const apart = yield* bin(["run", "--max-stdout", "3", "--", "printf", "123456"])
      expect([apart.out, apart.err]).toStrictEqual(["123", "native-runner: stdout truncated at 3 of 6 bytes\n"])
    }))

  it.live("--stdin-file - feeds our own stdin", () =>
    Effect.gen(function*() {
      const result = yield* bin(["run", "--stdin-file", "-", "--", "wc", "-c"], { stdin: "12345" })
      expect([result.exitCode, result.out.trim()]).toStrictEqual([0, "5"])
    }))

  it.live("doctor --sandbox bwrap: the table, and exit 1 unless the sandbox is usable", () =>
    Effect.gen(function*() {
      const result = yield* bin(["doctor", "--sandbox", "bwrap"])
      expect(result.out).toMatch(/^node\s+ok\s+v\d+/m)
      expect(result.out).toMatch(sandboxUsable ? /^--sandbox bwrap: available/m : /^--sandbox bwrap: unavailable: .+$/m)
      expect(result.exitCode).toBe(sandboxUsable ? 0 : 1)
    }))
})
