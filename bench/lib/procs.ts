/**
 * Reads /proc (Linux) to find processes a run left behind, the host's open fds and RSS. Used by the soak and the
 * reliability tests to prove "nothing outlives the run" instead of trusting the runner's own bookkeeping.
 */
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs"

/** One process as /proc/<pid>/stat describes it. */
export interface ProcInfo {
  readonly pid: number
  readonly ppid: number
  readonly pgid: number
  readonly sid: number
  /** R, S, D, Z (zombie), T, ... */
  readonly state: string
  readonly comm: string
}

const readStat = (pid: number): ProcInfo | undefined => {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8")
    // comm is in parentheses and may contain spaces or ')'; the fields after the last ')' are fixed.
    const close = text.lastIndexOf(")")
    const comm = text.slice(text.indexOf("(") + 1, close)
    const rest = text.slice(close + 2).split(" ")
    return {
      pid,
      state: rest[0] ?? "?",
      ppid: Number(rest[1]),
      pgid: Number(rest[2]),
      sid: Number(rest[3]),
      comm
    }
  } catch {
    return undefined // gone while we looked
  }
}

const pids = (): Array<number> =>
  readdirSync("/proc").filter((name) => /^\d+$/.test(name)).map(Number)

/** Every process on the host (that still exists while we read it). */
export const allProcesses = (): Array<ProcInfo> =>
  pids().map(readStat).filter((p): p is ProcInfo => p !== undefined)

/** Direct children of `parent` (default: this process), zombies included. */
export const childrenOf = (parent: number = process.pid): Array<ProcInfo> =>
  allProcesses().filter((p) => p.ppid === parent)

/** Processes whose process group is one of `pgids` (the groups the runner created: one per child). */
export const inGroups = (pgids: ReadonlySet<number>): Array<ProcInfo> =>
  allProcesses().filter((p) => pgids.has(p.pgid))

/** Processes whose environment holds `NAME=value` exactly: survives setsid and reparenting, unlike ppid/pgid. */
export const withEnvMarker = (name: string, value: string): Array<ProcInfo> => {
  const needle = `${name}=${value}`
  return allProcesses().filter((p) => {
    if (p.pid === process.pid) return false
    try {
      return readFileSync(`/proc/${p.pid}/environ`, "latin1").split("\0").includes(needle)
    } catch {
      return false
    }
  })
}

/** Number of open file descriptors of this process. */
export const openFds = (): number => readdirSync("/proc/self/fd").length

/** Open fds of this process with what they point at, for diagnostics. */
export const describeFds = (): Array<string> =>
  readdirSync("/proc/self/fd").map((fd) => {
    try {
      return `${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`
    } catch {
      return `${fd} -> ?`
    }
  })

const statusField = (field: string): number => {
  const line = readFileSync("/proc/self/status", "utf8").split("\n").find((l) => l.startsWith(`${field}:`))
  return line === undefined ? Number.NaN : Number(line.replace(/\D+/g, "")) * 1024
}

/** Resident set size of this process, in bytes. */
export const rssBytes = (): number => statusField("VmRSS")

/** Peak RSS since start or since the last `resetPeakRss`, in bytes. */
export const peakRssBytes = (): number => statusField("VmHWM")

/** Resets the kernel's peak-RSS counter (Linux >= 4.0); false when not permitted. */
export const resetPeakRss = (): boolean => {
  try {
    // "5" resets VmHWM to the current RSS.
    writeFileSync("/proc/self/clear_refs", "5")
    return true
  } catch {
    return false
  }
}

/** Polls `check` until it returns an empty list or `timeoutMs` passes; returns the last list. */
export const waitUntilEmpty = async <A>(
  check: () => ReadonlyArray<A>,
  timeoutMs: number,
  intervalMs = 25
): Promise<ReadonlyArray<A>> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const left = check()
    if (left.length === 0 || Date.now() >= deadline) return left
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

/** Sends SIGKILL to each pid, ignoring ones already gone (test cleanup). */
export const killAll = (procs: ReadonlyArray<{ readonly pid: number }>): void => {
  for (const p of procs) {
    try {
      process.kill(p.pid, "SIGKILL")
    } catch {
      // already gone
    }
  }
}
