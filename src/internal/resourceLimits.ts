/**
 * Resource limits of a run: `prlimit` argv for the rlimits (pure, with or without a sandbox), a pids cgroup for
 * `maxProcesses` when running as root, and the honest mapping from a run's outcome to the limit that ended it.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { SandboxUnavailable } from "./errors.js"
import type { LimitExceeded, ResourceLimits } from "../Sandbox.js"
import type { PreparedCommand } from "./prepared.js"

/**
 * The `prlimit` prefix (util-linux) setting the rlimits of `limits`, ending with `--`; empty when no rlimit is set.
 * `--nproc` is included for non-root runs; as root it is inert (see `processLimitRoute`).
 */
export const prlimitArgv = (
  limits: ResourceLimits,
  options?: { readonly prlimitPath?: string }
): Array<string> => {
  const flags: Array<string> = []
  // Hard CPU limit one second above the soft one: SIGXCPU (catchable, exit 152) comes before SIGKILL, so a CPU
  // limit stays distinguishable from any other kill.
  if (limits.maxCpuSeconds !== undefined) flags.push(`--cpu=${limits.maxCpuSeconds}:${limits.maxCpuSeconds + 1}`)
  if (limits.maxFileSizeBytes !== undefined) flags.push(`--fsize=${limits.maxFileSizeBytes}`)
  if (limits.maxMemoryBytes !== undefined) flags.push(`--as=${limits.maxMemoryBytes}`)
  if (limits.maxOpenFiles !== undefined) flags.push(`--nofile=${limits.maxOpenFiles}`)
  if (limits.maxProcesses !== undefined) flags.push(`--nproc=${limits.maxProcesses}`)
  return flags.length === 0 ? [] : [options?.prlimitPath ?? "prlimit", ...flags, "--"]
}

/** How a run ended, as far as the limits mapping needs it. */
export interface LimitOutcome {
  /** Exit code; shells and bwrap report a death by signal N as 128 + N. `null` when Node reports a signal. */
  readonly exitCode: number | null
  /** Signal name when the process itself died by a signal (`"SIGXCPU"`). */
  readonly signal?: string | undefined
  /** Forks refused by the run's pids cgroup (`PidsCgroup.refusedForks`), when one was used. */
  readonly refusedForks?: number | undefined
}

const signalled = (outcome: LimitOutcome, name: "SIGXCPU" | "SIGXFSZ"): boolean =>
  outcome.signal === name || outcome.exitCode === 128 + os.constants.signals[name]

/**
 * The limit that visibly ended or constrained a run, or `undefined` when none can be known.
 * Only what the kernel reports is mapped: SIGXCPU -> `"cpu"`, SIGXFSZ -> `"fileSize"` (as a signal or as exit
 * 128 + N from a shell or bwrap), refused forks counted by a pids cgroup -> `"processes"`. `"memory"` and
 * `"openFiles"` are never returned: a failed allocation or EMFILE is handled (or not) by the program and leaves no
 * trace in the outcome. A process that survives SIGXCPU is killed by SIGKILL, which is not attributed either.
 */
export const limitExceeded = (limits: ResourceLimits, outcome: LimitOutcome): LimitExceeded | undefined => {
  if (limits.maxCpuSeconds !== undefined && signalled(outcome, "SIGXCPU")) return "cpu"
  if (limits.maxFileSizeBytes !== undefined && signalled(outcome, "SIGXFSZ")) return "fileSize"
  if (limits.maxProcesses !== undefined && (outcome.refusedForks ?? 0) > 0) return "processes"
  return undefined
}

/**
 * How `maxProcesses` can be enforced here. `RLIMIT_NPROC` is not enforced for a real uid of 0, even inside a user
 * namespace (measured: 60 of 60 forks under `--nproc=20`), so root needs a pids cgroup; any other uid gets the rlimit.
 */
export const processLimitRoute: Effect.Effect<"cgroup" | "rlimit"> = Effect.sync(() =>
  process.getuid?.() === 0 ? "cgroup" : "rlimit"
)

/** A per-run pids cgroup; removed (and emptied with SIGKILL) when its scope closes. */
export interface PidsCgroup {
  /** The cgroup directory. */
  readonly path: string
  /** The same command, made to join this cgroup before it execs, so no fork can happen outside it. */
  readonly enter: (command: PreparedCommand) => PreparedCommand
  /** Forks refused so far because of `pids.max` (`max` in `pids.events`). */
  readonly refusedForks: Effect.Effect<number>
}

/**
 * Prefixes `command` with a `/bin/sh` that writes its own pid into `<cgroup>/cgroup.procs` and then execs the
 * command; the write happens before the first fork, and a failed write stops the run (exit 2) instead of running
 * it unlimited. A missing program then shows as exit 127 from `sh` rather than a spawn error.
 */
export const enterCgroup = (cgroupPath: string, command: PreparedCommand): PreparedCommand => ({
  ...command,
  argv: [
    "/bin/sh",
    "-c",
    'echo $$ > "$1" && shift && exec "$@"',
    "sh",
    path.join(cgroupPath, "cgroup.procs"),
    ...command.argv
  ]
})

interface PidsHierarchy {
  readonly root: string
  readonly version: 1 | 2
}

const unavailable = (message: string) =>
  new SandboxUnavailable({
    backend: "pids-cgroup",
    message,
    fix:
      "Run as root with a writable pids cgroup (cgroup v1 `pids` mounted, or cgroup v2 with `pids` in the root " +
      "cgroup.subtree_control: `echo +pids > /sys/fs/cgroup/cgroup.subtree_control`), or run as a non-root user, " +
      "for whom RLIMIT_NPROC applies."
  })

const errorText = (error: unknown): string => (error instanceof Error ? error.message : String(error))

const errnoCode = (error: unknown): unknown =>
  typeof error === "object" && error !== null && "code" in error ? error.code : undefined

const readText = (file: string) =>
  Effect.tryPromise({ try: () => fs.readFile(file, "utf8"), catch: (error) => unavailable(errorText(error)) })

const hasPids = (list: string): boolean => list.split(/\s+/).includes("pids")

/** The mount of the pids controller: a cgroup v1 `pids` hierarchy, else a cgroup v2 mount delegating `pids`. */
const findPidsHierarchy = (rootOverride: string | undefined): Effect.Effect<PidsHierarchy, SandboxUnavailable> =>
  Effect.gen(function* () {
    if (rootOverride !== undefined) {
      const isV2 = yield* Effect.promise(() =>
        fs.access(path.join(rootOverride, "cgroup.controllers")).then(() => true, () => false)
      )
      return { root: rootOverride, version: isV2 ? 2 : 1 }
    }
    const mounts = (yield* readText("/proc/self/mounts")).split("\n").map((line) => line.split(" "))
    for (const [, mountPoint, fsType, mountOptions] of mounts) {
      if (fsType === "cgroup" && mountPoint !== undefined && mountOptions?.split(",").includes("pids")) {
        return { root: mountPoint, version: 1 }
      }
    }
    for (const [, mountPoint, fsType] of mounts) {
      if (fsType !== "cgroup2" || mountPoint === undefined) continue
      const delegated = yield* readText(path.join(mountPoint, "cgroup.subtree_control")).pipe(
        Effect.map(hasPids),
        Effect.orElseSucceed(() => false)
      )
      if (delegated) return { root: mountPoint, version: 2 }
    }
    return yield* Effect.fail(unavailable("No pids cgroup controller is mounted (or delegated) on this host."))
  })

let cgroupCounter = 0

const removeCgroup = (dir: string, version: 1 | 2): Effect.Effect<void> =>
  Effect.gen(function* () {
    if (version === 2) {
      // cgroup.kill (Linux 5.14+) kills the whole cgroup atomically, forks in flight included.
      yield* Effect.promise(() => fs.writeFile(path.join(dir, "cgroup.kill"), "1").catch(() => undefined))
    }
    // Up to about one second: v1 has no cgroup.kill, so kill what is listed and retry while the kernel reaps.
    for (let attempt = 0; attempt < 100; attempt++) {
      const procs = yield* Effect.promise(() =>
        fs.readFile(path.join(dir, "cgroup.procs"), "utf8").catch(() => "")
      )
      for (const pid of procs.split("\n").filter((line) => line !== "").map(Number)) {
        yield* Effect.try(() => process.kill(pid, "SIGKILL")).pipe(Effect.ignore)
      }
      const removed = yield* Effect.promise(() =>
        fs.rmdir(dir).then(
          () => true,
          (error: unknown) => errnoCode(error) === "ENOENT"
        )
      )
      if (removed) return
      yield* Effect.sleep(Duration.millis(10))
    }
    yield* Effect.logWarning(`pids cgroup ${dir} could not be removed: processes are still in it`)
  })

/**
 * Creates a pids cgroup with `pids.max = maxProcesses` for one run, in the scope: closing the scope SIGKILLs
 * whatever is still in it and removes it. Use `enter` on the command to spawn (the sandbox argv, or the bare one).
 * Fails with `SandboxUnavailable` when no writable pids controller exists, instead of running without the limit.
 *
 * @example
 * const cgroup = yield* pidsCgroup(64)
 * const command = cgroup.enter(Bubblewrap.wrap(policy, prepared).pipe(Either.getOrThrow))
 */
export const pidsCgroup = (
  maxProcesses: number,
  options?: { readonly root?: string }
): Effect.Effect<PidsCgroup, SandboxUnavailable, Scope.Scope> =>
  Effect.gen(function* () {
    const hierarchy = yield* findPidsHierarchy(options?.root)
    const dir = path.join(
      hierarchy.root,
      `effect-native-runner-${process.pid}-${++cgroupCounter}-${Math.random().toString(36).slice(2, 8)}`
    )
    yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => fs.mkdir(dir),
        catch: (error) => unavailable(`Cannot create a pids cgroup: ${errorText(error)}`)
      }),
      () => removeCgroup(dir, hierarchy.version)
    )
    yield* Effect.tryPromise({
      try: () => fs.writeFile(path.join(dir, "pids.max"), String(maxProcesses)),
      catch: (error) => unavailable(`Cannot set pids.max: ${errorText(error)}`)
    })
    const cgroup: PidsCgroup = {
      path: dir,
      enter: (command) => enterCgroup(dir, command),
      // An unreadable pids.events (cgroup already removed) means "not known", reported as no refusal.
      refusedForks: Effect.promise(() =>
        fs.readFile(path.join(dir, "pids.events"), "utf8").then(
          (text) => Number(/^max (\d+)$/m.exec(text)?.[1] ?? 0),
          () => 0
        )
      )
    }
    return cgroup
  }).pipe(Effect.withSpan("ResourceLimits.pidsCgroup"))
