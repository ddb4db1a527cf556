/**
 * `native-runner run` and our stdin, on the real bin: passed on as it arrives when it is not a terminal (as a shell's
 * child reads it), never read whole first; `--stdin none` closes it; a sandboxed command gets a pipe of its own, never
 * our descriptor. Sandboxed cases use the real bubblewrap; in CI (CI=true) they must run.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import { chmodSync, chownSync, closeSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { builtBin, sandboxPreflight } from "../helpers/bin.js"

const { tmp, bin: BIN } = builtBin("enr-cli-stdin-")
const { usable, inCI } = await sandboxPreflight("CLI stdin sandbox tests")
const sandboxUsable = usable || inCI

interface Cli {
  readonly child: ReturnType<typeof spawn>
  readonly out: () => string
  readonly exited: Promise<number | null>
}

const start = (args: ReadonlyArray<string>, stdin: "pipe" | number = "pipe"): Cli => {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: [stdin, "pipe", "inherit"] })
  let out = ""
  child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()))
  return { child, out: () => out, exited: new Promise((done) => child.once("exit", (code) => done(code))) }
}

const until = (what: () => boolean, ms: number) =>
  Effect.gen(function*() {
    const deadline = Date.now() + ms
    while (!what() && Date.now() < deadline) yield* Effect.sleep("20 millis")
    return what()
  })

/** A workspace the sandbox user can write (as root: 65534's). */
const workspace = () => {
  const dir = mkdtempSync(path.join(tmp, "ws-"))
  if (process.getuid?.() === 0) chownSync(dir, 65534, 65534)
  return dir
}

describe("native-runner run and our stdin", () => {
  for (const sandboxed of [false, true]) {
    const flags = sandboxed ? ["--sandbox", "bwrap", "--workspace", workspace()] : []
    it.live.runIf(!sandboxed || sandboxUsable)(
      `${sandboxed ? "sandboxed: " : ""}our piped stdin reaches the command as it arrives, before it ends`,
      () =>
        Effect.gen(function*() {
          const cli = start(["run", ...flags, "--", "cat"])
          yield* Effect.addFinalizer(() => Effect.sync(() => cli.child.kill("SIGKILL")))
          cli.child.stdin!.write("first line\n")
          // Still open: a CLI that read our stdin to the end first would print nothing yet.
          expect(yield* until(() => cli.out() === "first line\n", 10_000)).toBe(true)
          cli.child.stdin!.end("second\n")
          expect(yield* Effect.promise(() => cli.exited)).toBe(0)
          expect(cli.out()).toBe("first line\nsecond\n")
        }).pipe(Effect.scoped),
      30_000
    )
  }

  it.live("--stdin none: the command sees EOF at once, though our stdin stays open", () =>
    Effect.gen(function*() {
      const cli = start(["run", "--stdin", "none", "--", "sh", "-c", "cat; echo eof"])
      yield* Effect.addFinalizer(() => Effect.sync(() => cli.child.kill("SIGKILL")))
      cli.child.stdin!.write("not for the command\n")
      expect(yield* Effect.promise(() => cli.exited)).toBe(0)
      expect(cli.out()).toBe("eof\n")
    }).pipe(Effect.scoped), 30_000)

  it.live("a file as our stdin (< file) reaches the command whole", () =>
    Effect.gen(function*() {
      const file = path.join(tmp, "input.txt")
      writeFileSync(file, "x".repeat(1_000_000))
      const fd = openSync(file, "r")
      const cli = start(["run", "--", "wc", "-c"], fd)
      closeSync(fd)
      expect(yield* Effect.promise(() => cli.exited)).toBe(0)
      expect(cli.out().trim()).toBe("1000000")
    }), 30_000)

  it.live.runIf(sandboxUsable)(
    "sandboxed, with a writable file as our stdin: the command cannot reopen it for writing through /proc/self/fd/0",
    () =>
      Effect.gen(function*() {
        const file = path.join(tmp, "host-file.txt")
        writeFileSync(file, "host data\n")
        // Writable by anyone, the sandbox user included: only the descriptor decides what the command reaches.
        chmodSync(file, 0o666)
        const fd = openSync(file, "r")
        const cli = start([
          "run", "--sandbox", "bwrap", "--workspace", workspace(), "--", "sh", "-c",
          "readlink /proc/self/fd/0; echo overwritten > /proc/self/fd/0 && echo wrote || echo refused"
        ], fd)
        closeSync(fd)
        yield* Effect.promise(() => cli.exited)
        expect(readFileSync(file, "utf8")).toBe("host data\n")
        expect(cli.out()).toMatch(/^(pipe|socket):\[\d+\]\n/)
      }),
    30_000
  )

  it.live.runIf(sandboxUsable)(
    "sandboxed, our stdin a socket that is reset: the command sees its input end, the run finishes and is audited",
    () =>
      Effect.gen(function*() {
        const auditLog = path.join(tmp, "reset.jsonl")
        const server = net.createServer((peer) => {
          peer.write("partial line\n")
          setTimeout(() => peer.resetAndDestroy(), 500)
        })
        yield* Effect.addFinalizer(() => Effect.sync(() => server.close()))
        yield* Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void)))
        const socket = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1")
        yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
        yield* Effect.async<void>((resume) => void socket.once("connect", () => resume(Effect.void)))
        const child = spawn(process.execPath, [
          BIN, "run", "--audit-log", auditLog, "--sandbox", "bwrap", "--workspace", workspace(), "--", "sh", "-c", "cat; echo after"
        ], { stdio: [socket, "pipe", "pipe"] })
        yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
        let out = ""
        let err = ""
        child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
        child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()))
        const code = yield* Effect.promise(() => new Promise<number | null>((done) => child.once("exit", (c) => done(c))))
        expect([code, out, err]).toStrictEqual([0, "partial line\nafter\n", ""])
        expect(readFileSync(auditLog, "utf8").trim().split("\n")).toHaveLength(1)
      }).pipe(Effect.scoped),
    30_000
  )
})
