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
import { readFileSync, writeFileSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
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
}

const errorOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))

/** Moves this whole process into the cgroup whose `cgroup.procs` is `procs` (synchronous: around a fork). */
export const moveSelf = (procs: string): void => writeFileSync(procs, String(process.pid))

const readPids = (dir: string): Effect.Effect<Array<number>> =>
  Effect.promise(() =>
    fs.readFile(path.join(dir, "cgroup.procs"), "utf8").then(
      (text) => text.split("\n").filter((line) => line !== "").map(Number),
      () => []
    )
  )

const write = (file: string, value: string): Effect.Effect<boolean> =>
  Effect.promise(() => fs.writeFile(file, value).then(() => true, () => false))

const frozen = (version: 1 | 2, dir: string): Effect.Effect<boolean> =>
  Effect.promise(() =>
    version === 2
      ? fs.readFile(path.join(dir, "cgroup.events"), "utf8").then((text) => /^frozen 1$/m.test(text), () => true)
      : fs.readFile(path.join(dir, "freezer.state"), "utf8").then((text) => text.trim() === "FROZEN", () => true)
  )

/**
 * Freezes the cgroup, signals each listed process, thaws it. Frozen processes cannot exit or fork, so every pid read
 * belongs to the run. The freeze is bounded (about a second): a cgroup that will not freeze is signalled anyway.
 */
const signalFrozen = (version: 1 | 2, dir: string, signal: KillSignal, home: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    const freeze = version === 2 ? path.join(dir, "cgroup.freeze") : path.join(dir, "freezer.state")
    yield* write(freeze, version === 2 ? "1" : "FROZEN")
    for (let attempt = 0; attempt < 100 && !(yield* frozen(version, dir)); attempt++) {
      yield* Effect.sleep(Duration.millis(10))
    }
    for (const pid of yield* readPids(dir)) {
      // The spawner itself is only ever inside for the length of a fork; never signal it.
      if (pid === process.pid) {
        moveSelf(home)
        continue
      }
      try {
        process.kill(pid, signal)
      } catch {
        // ESRCH: it died meanwhile (a zombie cannot be reused before it is reaped), EPERM: not ours to signal.
      }
    }
    yield* write(freeze, version === 2 ? "0" : "THAWED")
  })

const signalAll = (version: 1 | 2, dir: string, home: string) => (signal: KillSignal): Effect.Effect<void> =>
  version === 2 && signal === "SIGKILL"
    ? Effect.flatMap(readPids(dir), (pids) =>
      pids.includes(process.pid)
        ? Effect.zipRight(Effect.sync(() => moveSelf(home)), write(path.join(dir, "cgroup.kill"), "1"))
        : write(path.join(dir, "cgroup.kill"), "1")).pipe(Effect.asVoid)
    : signalFrozen(version, dir, signal, home)

/** Kills what is left and removes the directory; retries while the kernel reaps (about a second at most). */
const remove = (version: 1 | 2, dir: string, home: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (let attempt = 0; attempt < 100; attempt++) {
      const removed = yield* Effect.promise(() =>
        fs.rmdir(dir).then(() => true, (error: { code?: string }) => error.code === "ENOENT")
      )
      if (removed) return
      yield* signalAll(version, dir, home)("SIGKILL")
      yield* Effect.sleep(Duration.millis(10))
    }
    yield* Effect.logWarning(`cgroup ${dir} could not be removed: processes are still in it`)
  })

interface Hierarchy {
  readonly version: 1 | 2
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
    if (v2 !== undefined && v2Own !== undefined) return { version: 2, own: path.join(v2, v2Own) }
    const v1 = mounts.find(([, , type, options]) => type === "cgroup" && options?.split(",").includes("freezer"))?.[1]
    const v1Own = memberships.find(([, controllers]) => controllers?.split(",").includes("freezer"))?.[2]
    return v1 !== undefined && v1Own !== undefined ? { version: 1, own: path.join(v1, v1Own) } : undefined
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

/** Layer directories left by hosts that are gone (crashed, SIGKILLed): their runs are killed and the dirs removed. */
const sweepStale = (hierarchy: Hierarchy): Effect.Effect<void> =>
  Effect.gen(function*() {
    const entries = yield* Effect.promise(() => fs.readdir(hierarchy.own).catch((): Array<string> => []))
    for (const entry of entries) {
      const match = new RegExp(`^${PREFIX}(\\d+)-(\\d+)-\\d+$`).exec(entry)
      if (match === null || startTimeOf(Number(match[1])) === match[2]) continue
      const layerDir = path.join(hierarchy.own, entry)
      const runs = yield* Effect.promise(() => fs.readdir(layerDir, { withFileTypes: true }).catch(() => []))
      for (const run of runs) {
        if (run.isDirectory()) yield* remove(hierarchy.version, path.join(layerDir, run.name), path.join(hierarchy.own, "cgroup.procs"))
      }
      yield* remove(hierarchy.version, layerDir, path.join(hierarchy.own, "cgroup.procs"))
    }
  })

let layers = 0

/**
 * Run cgroups for one layer, in its scope (the layer's directory goes when the scope closes), or `undefined` when
 * this host cannot make them (not root and no delegated v2 subtree, or no cgroup mounted): runs then fall back to
 * process-group signals. Sweeps the directories of dead hosts first.
 */
export const makeRunCgroups: Effect.Effect<RunCgroups | undefined, never, Scope.Scope> = Effect.gen(function*() {
  const hierarchy = findHierarchy()
  if (hierarchy === undefined) return undefined
  yield* sweepStale(hierarchy)
  const home = path.join(hierarchy.own, "cgroup.procs")
  const dir = path.join(hierarchy.own, `${PREFIX}${process.pid}-${startTimeOf(process.pid) ?? 0}-${++layers}`)
  const made = yield* Effect.promise(() => fs.mkdir(dir).then(() => true, () => false))
  if (!made) return undefined
  yield* Effect.addFinalizer(() => remove(hierarchy.version, dir, home))
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
    const created = yield* Effect.promise(() => fs.mkdir(runDir).then(() => undefined, (error: unknown) => errorOf(error)))
    if (created !== undefined) return yield* Effect.dieMessage(`cannot create the run's cgroup ${runDir}: ${created}`)
    yield* Effect.addFinalizer(() => remove(hierarchy.version, runDir, home))
    const cgroup: RunCgroup = {
      join: { procs: path.join(runDir, "cgroup.procs"), home },
      signal: signalAll(hierarchy.version, runDir, home)
    }
    return cgroup
  })
  const cgroups: RunCgroups = { version: hierarchy.version, dir, make }
  return cgroups
})
