/**
 * The Node spawner's group signals without a run cgroup: once the leader is reaped, a process that took its pid is
 * never signalled, while a group that outlived its leader still is; EPERM and ESRCH from kill are outcomes, not
 * defects. Root only (forcing pid reuse writes /proc/sys/kernel/ns_last_pid; EPERM needs a second user): in CI
 * (CI=true) these run and fail when not root; elsewhere they are skipped, saying why.
 */
import { afterEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { build } from "esbuild"
import { spawn, spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { makeCapture } from "../../src/internal/capture.js"
import { killGroup, makeNodeSpawner } from "../../src/internal/nodeSpawner.js"
import type { PreparedCommand } from "../../src/internal/prepared.js"
import { isAlive, onCleanup, runCleanups, tempDir, text, waitUntil } from "../helpers/escape.js"
import { inCI, isRoot, runsAsRoot, takePid } from "../helpers/processes.js"

const command = (script: string, ...args: Array<string>): PreparedCommand => ({
  argv: ["sh", "-c", script, "sh", ...args],
  cwd: "/",
  env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" }
})

/** Spawns `sh -c 'echo $$; exit 3'` and waits until it is reaped; returns the pid it had. */
const reapedPid = Effect.gen(function*() {
  const proc = yield* makeNodeSpawner().spawn(command("echo $$; exit 3"), undefined)
  const stdout = makeCapture(1024)
  yield* proc.output(stdout, makeCapture(1024))
  expect(yield* proc.exit).toEqual({ code: 3, signal: null })
  return [proc, Number(text(stdout.bytes()))] as const
})

/** True when signal 0 reaches the process group `pgid`: a plain `kill(-pgid)` would hit it. */
const groupReachable = (pgid: number): boolean => {
  try {
    process.kill(-pgid, 0)
    return true
  } catch {
    return false
  }
}

afterEach(runCleanups)

describe.runIf(runsAsRoot("nodeSpawner signal tests"))("Node spawner signals (root)", () => {
  it.runIf(inCI)("runs as root (required in CI)", () => {
    expect(isRoot).toBe(true)
  })

  it.live("never signals a reused pid: the reaped leader's pid, now an unrelated session leader's, is left alone", () =>
    Effect.scoped(Effect.gen(function*() {
      const [proc, pid] = yield* reapedPid
      const unrelated = takePid(pid)
      // Control: the unrelated process leads a group with the old id, so a naive kill(-pid) would have hit it.
      expect(groupReachable(pid)).toBe(true)
      yield* proc.kill("SIGKILL")
      yield* proc.kill("SIGTERM")
      yield* Effect.sleep("200 millis")
      expect(isAlive(pid)).toBe(true)
      expect(unrelated.exitCode).toBe(null)
      expect(unrelated.signalCode).toBe(null)
    })))

  it.live("still signals a group whose leader was reaped while a member lives on (no process has the leader's pid)", () =>
    Effect.scoped(Effect.gen(function*() {
      const pidFile = path.join(tempDir("spawner-"), "member")
      const proc = yield* makeNodeSpawner().spawn(
        command(`sleep 30 & echo $! > "$1"; exit 0`, pidFile),
        undefined
      )
      yield* proc.exit
      const member = Number(readFileSync(pidFile, "utf8"))
      onCleanup(() => isAlive(member) && process.kill(member, "SIGKILL"))
      expect(isAlive(member)).toBe(true)
      yield* proc.kill("SIGKILL")
      expect(yield* waitUntil(() => !isAlive(member), 2_000)).toBe(true)
    })))

  it.live("ESRCH is an outcome: a group that does not exist is not an error, reaped or not", () =>
    Effect.sync(() => {
      // Above pid_max: no process can have this id, so nothing real is ever signalled here.
      const pgid = Number(readFileSync("/proc/sys/kernel/pid_max", "utf8")) + 1
      expect(() => process.kill(-pgid, "SIGTERM")).toThrow(expect.objectContaining({ code: "ESRCH" }))
      expect(() => killGroup(pgid, "SIGTERM")).not.toThrow()
      expect(() => killGroup(pgid, "SIGKILL", true)).not.toThrow()
    }))

  it.live("EPERM is an outcome: killGroup from another user (nobody) returns, and the group it may not signal lives", () =>
    Effect.gen(function*() {
      const target = spawn("sleep", ["30"], { detached: true, stdio: "ignore" })
      onCleanup(() => target.kill("SIGKILL"))
      const pid = target.pid ?? 0
      expect(pid).toBeGreaterThan(0)
      // killGroup bundled into one script read from stdin, so the other user needs no access to this checkout.
      const probe = `
        import { killGroup } from "./nodeSpawner.js"
        let control, outcome = "returned"
        try { process.kill(-${pid}, 0); control = "allowed" } catch (error) { control = error.code }
        try { killGroup(${pid}, "SIGTERM"); killGroup(${pid}, "SIGKILL") } catch (error) { outcome = "threw " + error.code }
        console.log(JSON.stringify({ uid: process.getuid(), control, outcome }))
      `
      const bundle = yield* Effect.promise(() =>
        build({
          stdin: { contents: probe, resolveDir: fileURLToPath(new URL("../../src/internal", import.meta.url)), loader: "ts" },
          bundle: true,
          format: "esm",
          platform: "node",
          write: false,
          logLevel: "silent"
        })
      )
      const ran = spawnSync(process.execPath, ["--input-type=module"], {
        input: bundle.outputFiles[0]?.text ?? "",
        cwd: "/",
        uid: 65534,
        gid: 65534,
        encoding: "utf8",
        timeout: 30_000
      })
      expect(ran.stderr).toBe("")
      // Control: the kernel refused this user (EPERM), so the call really met the error it must swallow.
      expect(JSON.parse(ran.stdout)).toEqual({ uid: 65534, control: "EPERM", outcome: "returned" })
      expect(isAlive(pid)).toBe(true)
    }))
})
