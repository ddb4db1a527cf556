/**
 * Helpers of the signal-safety tests (test/internal/nodeSpawner.test.ts, runCgroup.test.ts): root-only gating, an
 * unrelated process made to take a given pid, start times, and removal of cgroup directories a test made itself.
 * /proc scanning and the after-each clean-up registry live in ./escape.ts and ../../bench/lib/procs.ts.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { isAlive, onCleanup } from "./escape.js"

export const inCI = process.env["CI"] === "true"
export const isRoot = process.getuid?.() === 0

/**
 * Whether root-only tests run: as root, and always in CI (CI=true), where a non-root runner must fail them, never
 * skip them. Elsewhere, not as root, says why they are skipped.
 */
export const runsAsRoot = (suite: string): boolean => {
  if (!isRoot && !inCI) console.warn(`${suite}: skipped, these tests need root (run them as root, as CI does).`)
  return isRoot || inCI
}

const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)

/**
 * An unrelated session leader (`sleep 30`, detached: its pid is also its group id) that took `pid`, which must be
 * free: the kernel's last allocated pid is set to `pid - 1`, then we fork at once. Another fork on the host may get
 * there first, so it is retried; it throws after `tries`. Killed after the test.
 */
export const takePid = (pid: number, tries = 50): ChildProcess => {
  for (let attempt = 0; attempt < tries; attempt++) {
    // Nothing to restore afterwards: ns_last_pid is not a setting but the last pid handed out, moved by every fork.
    writeFileSync("/proc/sys/kernel/ns_last_pid", String(pid - 1))
    const child = spawn("sleep", ["30"], { detached: true, stdio: "ignore" })
    // ChildProcess.kill does nothing once Node has reaped the child, so this never hits a later owner of the pid.
    onCleanup(() => child.kill("SIGKILL"))
    if (child.pid === pid) return child
    child.kill("SIGKILL")
    pause(5)
  }
  throw new Error(
    `no unrelated process could be made to take pid ${pid} in ${tries} tries: ` +
      (isAlive(pid) ? "another process holds it" : "other forks on the host kept getting it first")
  )
}

/** Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), as the runner names its layer dirs. */
export const startTimeOf = (pid: number): string => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  const field = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]
  if (field === undefined) throw new Error(`no start time in /proc/${pid}/stat`)
  return field
}

/** This process's cgroup memberships, as /proc/self/cgroup lists them. */
export const ownCgroups = (): string => readFileSync("/proc/self/cgroup", "utf8")

/** Pids in the cgroup `dir` (its `cgroup.procs`); none when it is gone. */
export const cgroupPids = (dir: string): Array<number> => {
  try {
    return readFileSync(path.join(dir, "cgroup.procs"), "utf8").split("\n").filter((line) => line !== "").map(Number)
  } catch {
    return []
  }
}

/**
 * Removes a cgroup directory a test made, children first: SIGKILLs what is inside (never this process), then rmdir,
 * retried while the kernel reaps (about a second).
 */
export const removeCgroup = (dir: string): void => {
  if (!existsSync(dir)) return
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) removeCgroup(path.join(dir, entry.name))
  }
  for (let attempt = 0;; attempt++) {
    for (const pid of cgroupPids(dir)) {
      if (pid === process.pid) continue
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // Gone already.
      }
    }
    try {
      rmdirSync(dir)
      return
    } catch (error) {
      if (!existsSync(dir)) return
      if (attempt >= 100) throw error
    }
    pause(10)
  }
}

/** Registers `dir` (a cgroup directory the test made) for removal after the test. */
export const cgroupToRemove = (dir: string): string => {
  onCleanup(() => removeCgroup(dir))
  return dir
}
