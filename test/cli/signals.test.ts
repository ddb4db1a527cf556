/**
 * The real bin under SIGHUP, SIGINT and SIGTERM: the command's tree is killed, the audit line written, and the CLI
 * exits 128+n, as a shell reports a death by that signal. The bin is built from src/ into a temporary directory.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync, spawn } from "node:child_process"
import { randomInt } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { constants, tmpdir } from "node:os"
import * as path from "node:path"
import { hostProcesses, waitUntil } from "../helpers/escape.js"

const ROOT = path.join(import.meta.dirname, "..", "..")
const tmp = mkdtempSync(path.join(tmpdir(), "enr-cli-signals-"))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))
execFileSync(process.execPath, [path.join(ROOT, "bench", "build-bin.mjs"), "--outdir", path.join(tmp, "dist")])
const BIN = path.join(tmp, "dist", "bin.js")

/** `sleep` commands whose argument is `marker` (a unique number of seconds). */
const sleeping = (marker: string) =>
  hostProcesses().filter((p) => p.argv[0] === "sleep" && p.argv[1] === marker).map((p) => p.pid)

/** Starts `native-runner run` on a command that prints "ready" then sleeps; resolves once "ready" was printed. */
const startCli = (marker: string, auditLog: string) =>
  Effect.async<{ readonly pid: number; readonly exited: Promise<number | null> }>((resume) => {
    const child = spawn(process.execPath, [
      BIN, "run", "--audit-log", auditLog, "--kill-grace", "2s", "--", "sh", "-c", `echo ready; exec sleep ${marker}`
    ], { stdio: ["ignore", "pipe", "pipe"] })
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)))
    child.stdout.on("data", (chunk: Buffer) => {
      if (chunk.toString().includes("ready") && child.pid !== undefined) resume(Effect.succeed({ pid: child.pid, exited }))
    })
  })

describe("native-runner run under a signal", () => {
  for (const signal of ["SIGHUP", "SIGINT", "SIGTERM"] as const) {
    it.live(`${signal}: the command's tree is killed, the audit line written, exit 128+${constants.signals[signal]}`, () =>
      Effect.gen(function*() {
        const marker = `1000.${randomInt(1e9)}`
        const auditLog = path.join(tmp, `${signal}.jsonl`)
        const cli = yield* startCli(marker, auditLog)
        // "ready" is printed just before the shell execs sleep: wait for the sleep itself.
        expect(yield* waitUntil(() => sleeping(marker).length === 1, 5_000)).toBe(true)
        process.kill(cli.pid, signal)
        expect(yield* Effect.promise(() => cli.exited)).toBe(128 + constants.signals[signal])
        expect(yield* waitUntil(() => sleeping(marker).length === 0, 5_000)).toBe(true)
        const records = readFileSync(auditLog, "utf8").trim().split("\n").map((line) => JSON.parse(line) as unknown)
        expect(records).toHaveLength(1)
        expect(records[0]).toMatchObject({ interrupted: true, cmd: "sh" })
      }), 30_000)
  }

  for (const signal of ["SIGINT", "SIGHUP", "SIGTERM"] as const) {
    it.live(`${signal} reaches the command as ${signal} (its trap runs), as timeout(1) passes it on`, () =>
      Effect.gen(function*() {
        const caught = path.join(tmp, `caught-${signal}`)
        const name = signal.slice(3)
        const child = spawn(process.execPath, [
          BIN, "run", "--kill-grace", "5s", "--", "sh", "-c",
          `for s in INT HUP TERM; do trap "echo $s > ${caught}; exit 3" $s; done; echo ready; while :; do sleep 0.05; done`
        ], { stdio: ["ignore", "pipe", "pipe"] })
        const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)))
        yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
        yield* Effect.async<void>((resume) => {
          child.stdout.on("data", (chunk: Buffer) => {
            if (chunk.toString().includes("ready")) resume(Effect.void)
          })
        })
        const sent = Date.now()
        child.kill(signal)
        expect(yield* Effect.promise(() => exited)).toBe(128 + constants.signals[signal])
        expect(readFileSync(caught, "utf8")).toBe(`${name}\n`)
        // The trap ended the command: nobody waited for the 5 s grace.
        expect(Date.now() - sent).toBeLessThan(4_000)
      }).pipe(Effect.scoped), 30_000)
  }

  it.live("stdout's reader goes away (| head -1): the run ends quietly, the tree gone, the audit line written, exit 141", () =>
    Effect.gen(function*() {
      const marker = `1000.${randomInt(1e9)}`
      const auditLog = path.join(tmp, "epipe.jsonl")
      // `yes` writes for ever; the sleep beside it must go too (the whole tree is stopped).
      const child = spawn(process.execPath, [
        BIN, "run", "--audit-log", auditLog, "--", "sh", "-c", `sleep ${marker} & exec yes`
      ], { stdio: ["ignore", "pipe", "pipe"] })
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
      let stderr = ""
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)))
      // Read the first chunk, then close our end, as `head -1` does.
      yield* Effect.async<void>((resume) => {
        child.stdout.once("data", () => {
          child.stdout.destroy()
          resume(Effect.void)
        })
      })
      expect(yield* Effect.promise(() => exited)).toBe(141)
      expect(stderr).toBe("")
      expect(yield* waitUntil(() => sleeping(marker).length === 0, 5_000)).toBe(true)
      const records = readFileSync(auditLog, "utf8").trim().split("\n").map((line) => JSON.parse(line) as unknown)
      expect(records).toHaveLength(1)
      expect(records[0]).toMatchObject({ interrupted: true, cmd: "sh" })
    }).pipe(Effect.scoped), 30_000)

  it.live.runIf(process.getuid?.() === 0)(
    "SIGKILL: within a second nothing of the run lives, its setsid and background children included (run cgroups, root)",
    () =>
      Effect.gen(function*() {
        const marker = `1000.${randomInt(1e9)}`
        const cli = spawn(process.execPath, [
          BIN, "run", "--", "sh", "-c", `sleep ${marker} & setsid sleep ${marker} & echo ready; exec sleep ${marker}`
        ], { stdio: ["ignore", "pipe", "ignore"] })
        const exited = new Promise<NodeJS.Signals | null>((done) => cli.once("exit", (_code, signal) => done(signal)))
        yield* Effect.addFinalizer(() => Effect.sync(() => cli.kill("SIGKILL")))
        expect(yield* waitUntil(() => sleeping(marker).length === 3, 10_000), "the three sleeps started").toBe(true)
        cli.kill("SIGKILL")
        expect(yield* Effect.promise(() => exited)).toBe("SIGKILL")
        // setpriv --pdeathsig took only the direct child; the layer's watcher killed the rest through the cgroup.
        expect(yield* waitUntil(() => sleeping(marker).length === 0, 1_000), `left: ${sleeping(marker).join(" ")}`).toBe(true)
      }).pipe(Effect.scoped), 30_000)
})
