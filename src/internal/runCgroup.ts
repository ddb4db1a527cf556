/**
 * One cgroup per run, where this host can make them (root, or a delegated cgroup v2 subtree): it holds every process
 * the run starts, so `setsid`, `setpgid` and double-fork escapes die with it, and signals go to the processes listed
 * in it while it is frozen: never to a pid that may have been reaped and reused.
 *
 * The child joins without a wrapper process: the spawner moves itself into the run's cgroup, forks, and moves back
 * (libuv forks inside the synchronous `spawn` call, so no other spawn can happen in between). cgroup v2 is preferred
 * (`cgroup.kill`, `cgroup.freeze`); v1's `freezer` hierarchy is the fallback (freeze, signal each, thaw).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, readlinkSync, rmdirSync, writeFileSync } from "node:fs"
import * as fs from "node:fs/promises"
import { Socket } from "node:net"
import * as path from "node:path"
import { isMainThread, threadId } from "node:worker_threads"
import type { KillSignal } from "./engine.js"

/** Where the spawner moves itself for one fork: the run's `cgroup.procs`, and its own to return to. */
export interface CgroupJoin {
  readonly procs: string
  readonly home: string
}

/** The cgroup of one run. */
export interface RunCgroup {
  readonly join: CgroupJoin
  /** Sends `signal` to every process in the cgroup (KILL on v2: `cgroup.kill`, atomic). */
  readonly signal: (signal: KillSignal) => Effect.Effect<void>
}

/** Makes run cgroups under this layer's own directory. */
export interface RunCgroups {
  readonly version: 1 | 2
  /** This layer's directory (`<hierarchy>/<own cgroup>/effect-native-runner-<pid>-<start>-<n>`). */
  readonly dir: string
  readonly make: Effect.Effect<RunCgroup, never, Scope.Scope>
  /** Called after each spawn into a run cgroup (the host-death watcher starts after the first). */
  readonly afterSpawn?: (() => void) | undefined
}

const errorOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))

/** Moves this whole process into the cgroup whose `cgroup.procs` is `procs` (synchronous: around a fork). */
export const moveSelf = (procs: string): void => writeFileSync(procs, String(process.pid))

// cgroupfs files live in the kernel: reading and writing them never waits for a disk, so they are done synchronously
// (a few microseconds each, against a thread-pool round trip per call for the async API, measured per exec).
const readText = (file: string): string | undefined => {
  try {
    return readFileSync(file, "utf8")
  } catch {
    return undefined
  }
}

const readPids = (dir: string): Effect.Effect<Array<number>> =>
  Effect.sync(() => (readText(path.join(dir, "cgroup.procs")) ?? "").split("\n").filter((line) => line !== "").map(Number))

const write = (file: string, value: string): Effect.Effect<boolean> =>
  Effect.sync(() => {
    try {
      writeFileSync(file, value)
      return true
    } catch {
      return false
    }
  })

const frozen = (version: 1 | 2, dir: string): Effect.Effect<boolean> =>
  Effect.sync(() => {
    const text = readText(path.join(dir, version === 2 ? "cgroup.events" : "freezer.state"))
    return text === undefined || (version === 2 ? /^frozen 1$/m.test(text) : text.trim() === "FROZEN")
  })

/** How long a freeze may take before the cgroup is signalled anyway. */
const FREEZE_WITHIN_MS = 1_000

/**
 * Freezes the cgroup, signals each listed process, thaws it. Frozen processes cannot exit or fork, so every pid read
 * belongs to the run. The freeze is bounded (about a second): a cgroup that will not freeze is signalled anyway.
 */
const signalFrozen = (version: 1 | 2, dir: string, signal: KillSignal, home: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    const pids = yield* readPids(dir)
    // Nothing left: nothing to freeze (the usual case after a normal exit).
    if (pids.length === 0) return
    // The spawner itself is only ever inside for the length of a fork; never freeze or signal it.
    if (pids.includes(process.pid)) moveSelf(home)
    const freeze = version === 2 ? path.join(dir, "cgroup.freeze") : path.join(dir, "freezer.state")
    yield* write(freeze, version === 2 ? "1" : "FROZEN")
    // A run's few processes freeze in well under a millisecond: look again at 1 ms steps first, then back off (a
    // fixed 10 ms step made every TERM of a run wait 10 ms or more before it was sent).
    for (let waited = 0; waited < FREEZE_WITHIN_MS && !(yield* frozen(version, dir));) {
      const step = waited < 10 ? 1 : 10
      yield* Effect.sleep(Duration.millis(step))
      waited += step
    }
    for (const pid of yield* readPids(dir)) {
      if (pid === process.pid) continue
      try {
        process.kill(pid, signal)
      } catch {
        // ESRCH: it died meanwhile (a zombie cannot be reused before it is reaped), EPERM: not ours to signal.
      }
    }
    yield* write(freeze, version === 2 ? "0" : "THAWED")
  })

const signalAll = (hierarchy: Hierarchy, dir: string, home: string) => (signal: KillSignal): Effect.Effect<void> =>
  hierarchy.hasKill && signal === "SIGKILL"
    ? Effect.flatMap(readPids(dir), (pids) =>
      pids.length === 0
        ? Effect.void
        : pids.includes(process.pid)
        ? Effect.zipRight(Effect.sync(() => moveSelf(home)), write(path.join(dir, "cgroup.kill"), "1"))
        : write(path.join(dir, "cgroup.kill"), "1")).pipe(Effect.asVoid)
    : signalFrozen(hierarchy.version, dir, signal, home)

/** `rmdir`, true when the directory is gone (removed now, or already). */
const rmdirNow = (dir: string): boolean => {
  try {
    rmdirSync(dir)
    return true
  } catch (error) {
    return typeof error === "object" && error !== null && "code" in error && error.code === "ENOENT"
  }
}

/**
 * Kills what is left and removes the directory, nested ones first (a cgroup with children cannot be removed); retries
 * while the kernel reaps (about a second at most).
 */
const remove = (hierarchy: Hierarchy, dir: string, home: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    // The usual case: an empty run cgroup, removed at once.
    if (rmdirNow(dir)) return
    const children = yield* Effect.promise(() =>
      fs.readdir(dir, { withFileTypes: true }).then((entries) => entries.filter((entry) => entry.isDirectory()), () => [])
    )
    for (const child of children) yield* remove(hierarchy, path.join(dir, child.name), home)
    for (let attempt = 0; attempt < 100; attempt++) {
      if (rmdirNow(dir)) return
      yield* signalAll(hierarchy, dir, home)("SIGKILL")
      yield* Effect.sleep(Duration.millis(10))
    }
    yield* Effect.logWarning(`cgroup ${dir} could not be removed: processes are still in it`)
  })

interface Hierarchy {
  readonly version: 1 | 2
  /** cgroup v2 `cgroup.kill` (Linux 5.14+); without it KILL goes through the freezer like TERM. */
  readonly hasKill: boolean
  /** This process's own cgroup directory in the hierarchy. */
  readonly own: string
}

/** The v2 mount, else the v1 freezer mount, joined with this process's own cgroup path (from /proc/self/cgroup). */
const findHierarchy = (): Hierarchy | undefined => {
  try {
    const mounts = readFileSync("/proc/self/mounts", "utf8").split("\n").map((line) => line.split(" "))
    const memberships = readFileSync("/proc/self/cgroup", "utf8").split("\n").map((line) => line.split(":"))
    const v2 = mounts.find(([, , type]) => type === "cgroup2")?.[1]
    const v2Own = memberships.find(([id]) => id === "0")?.[2]
    if (v2 !== undefined && v2Own !== undefined) return { version: 2, own: path.join(v2, v2Own), hasKill: false }
    const v1 = mounts.find(([, , type, options]) => type === "cgroup" && options?.split(",").includes("freezer"))?.[1]
    const v1Own = memberships.find(([, controllers]) => controllers?.split(",").includes("freezer"))?.[2]
    return v1 !== undefined && v1Own !== undefined ? { version: 1, own: path.join(v1, v1Own), hasKill: false } : undefined
  } catch {
    return undefined
  }
}

const PREFIX = "effect-native-runner-"

/** Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), `undefined` when it is gone. */
const startTimeOf = (pid: number): string | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]
  } catch {
    return undefined
  }
}

/** This process's PID namespace (its inode): a host is only judged dead by pid inside the namespace it lives in. */
const pidNamespace = (): string => {
  try {
    return /\[(\d+)\]/.exec(readlinkSync("/proc/self/ns/pid"))?.[1] ?? "0"
  } catch {
    return "0"
  }
}

/**
 * Layer directories left by hosts of this PID namespace that are gone (crashed, SIGKILLed): their runs are killed and
 * the directories removed.
 */
const sweepStale = (hierarchy: Hierarchy, namespace: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    const entries = yield* Effect.promise(() => fs.readdir(hierarchy.own).catch((): Array<string> => []))
    const home = path.join(hierarchy.own, "cgroup.procs")
    for (const entry of entries) {
      const match = new RegExp(`^${PREFIX}(\\d+)-(\\d+)-(\\d+)-\\d+-\\d+$`).exec(entry)
      if (match === null || match[1] !== namespace || startTimeOf(Number(match[2])) === match[3]) continue
      yield* remove(hierarchy, path.join(hierarchy.own, entry), home)
    }
  })

let layers = 0

/**
 * Run cgroups for one layer, in its scope (the layer's directory goes when the scope closes), or `undefined` when
 * this host cannot make them (not root and no delegated v2 subtree, or no cgroup mounted): runs then fall back to
 * process-group signals. Sweeps the directories of dead hosts first.
 */
export const makeRunCgroups: Effect.Effect<RunCgroups | undefined, never, Scope.Scope> = Effect.gen(function*() {
  // Moving the process is safe only where no other thread of ours can fork meanwhile: worker threads share the
  // process, and one could fork into another's run cgroup (or find the process inside one and build on it).
  if (!isMainThread) return undefined
  const found = findHierarchy()
  if (found === undefined) return undefined
  const namespace = pidNamespace()
  yield* sweepStale(found, namespace)
  const home = path.join(found.own, "cgroup.procs")
  const dir = path.join(
    found.own,
    `${PREFIX}${namespace}-${process.pid}-${startTimeOf(process.pid) ?? 0}-${threadId}-${++layers}`
  )
  const made = yield* Effect.promise(() => fs.mkdir(dir).then(() => true, () => false))
  if (!made) return undefined
  const hierarchy: Hierarchy = { ...found, hasKill: found.version === 2 && existsSync(path.join(dir, "cgroup.kill")) }
  yield* Effect.addFinalizer(() => remove(hierarchy, dir, home))
  // Proves the move works here (write access to both cgroup.procs files) before any run relies on it.
  const movable = yield* Effect.sync(() => {
    try {
      moveSelf(path.join(dir, "cgroup.procs"))
      moveSelf(home)
      return true
    } catch {
      return false
    }
  })
  if (!movable) return undefined
  let runs = 0
  const make = Effect.gen(function*() {
    const runDir = path.join(dir, String(++runs))
    const created = yield* Effect.sync(() => {
      try {
        mkdirSync(runDir)
        return undefined
      } catch (error) {
        return errorOf(error)
      }
    })
    if (created !== undefined) return yield* Effect.dieMessage(`cannot create the run's cgroup ${runDir}: ${created}`)
    yield* Effect.addFinalizer(() => remove(hierarchy, runDir, home))
    const cgroup: RunCgroup = {
      join: { procs: path.join(runDir, "cgroup.procs"), home },
      signal: signalAll(hierarchy, runDir, home)
    }
    return cgroup
  })
  const cgroups: RunCgroups = { version: hierarchy.version, dir, make }
  return cgroups
})

/**
 * For a layer that spawns directly (no helper to outlive it, as in the CLI): `/bin/sh` waiting on a pipe from this
 * process and, once the pipe closes (this process exited or died, SIGKILL included), writing `cgroup.kill` of the
 * layer's cgroup, which kills every run's processes at once, `setsid` escapes included (cgroup v2, Linux 5.14+; on
 * v1 only the next layer's sweep finds them). Its own session, so a terminal's Ctrl-C does not end it early.
 *
 * Started by the returned function, once, after the layer's first spawn: forked before it, it made that spawn's move
 * into its cgroup wait again for the kernel (measured: the CLI's `run -- true` 20-25 ms slower).
 */
export const watchHostDeath = (cgroups: RunCgroups): Effect.Effect<() => void, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync((): { watcher: ChildProcess | undefined; started: boolean } => ({ watcher: undefined, started: false })),
      (state) => Effect.sync(() => state.watcher?.stdin?.end())
    ),
    (state) => () => {
      if (state.started) return
      state.started = true
      if (!existsSync(path.join(cgroups.dir, "cgroup.kill"))) return
      try {
        const watcher = spawn("/bin/sh", ["-c", 'read _; echo 1 > "$1/cgroup.kill"', "sh", cgroups.dir], {
          cwd: "/",
          env: {},
          detached: true,
          stdio: ["pipe", "ignore", "ignore"]
        })
        watcher.on("error", () => {})
        watcher.stdin?.on("error", () => {})
        // Neither keeps this process alive.
        watcher.unref()
        if (watcher.stdin instanceof Socket) watcher.stdin.unref()
        state.watcher = watcher
      } catch {
        // No watcher: the next layer's sweep is what is left.
      }
    }
  )
