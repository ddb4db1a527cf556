/**
 * The live layer's policy: resource limits (prlimit, a pids cgroup as root) and the bubblewrap sandbox, checked once
 * when the layer is built (fail closed) and applied to every command as a pure argv rewrite, plus what a sandboxed
 * run needs around it: the workspace checked (never changed), signals delivered inside, set-up failures typed.
 */
import * as Effect from "effect/Effect"
import { existsSync } from "node:fs"
import * as path from "node:path"
import * as Either from "effect/Either"
import type { InvalidInput } from "../Errors.js"
import { SandboxUnavailable, SpawnError } from "./errors.js"
import type * as Sandbox from "../Sandbox.js"
import * as bubblewrap from "./bubblewrap.js"
import { type BwrapStatus, descendantsOf, makeBwrapStatus } from "./bwrapStatus.js"
import type { Outcome, RunningProcess } from "./engine.js"
import { isExecutableFile, resolveExecutable } from "./executables.js"
import { checkCwd } from "./live.js"
import type { PreparedCommand } from "./prepared.js"
import type * as Scope from "effect/Scope"
import { limitExceeded, pidsCgroup, prlimitArgv, processLimitRoute } from "./resourceLimits.js"
import { plainPolicy, type Policy, type PreparedRun } from "./runner.js"
import type { RunCgroups } from "./runCgroup.js"
import type * as NativeRunner from "../NativeRunner.js"
import { systemDirs } from "./bwrapArgv.js"
import { LOCK_CONFLICT, relativeInside, workspaceMount } from "./sandbox.js"
import { preflightHost, resolveSandboxHost, type SandboxHost } from "./sandboxHost.js"
import { type Layout, openLayout, settledPolicy } from "./workspaceAccess.js"

/** Live-only options, decoded (`NativeRunner.Options`): a sandbox, or resource limits without one. */
export type PolicyOptions = Pick<NativeRunner.DecodedOptions, "sandbox" | "resourceLimits">

/** PATH, HOME and TMPDIR inside the sandbox; nothing of the host's environment is inherited there by default. */
export const SANDBOX_BASE_ENV: Readonly<Record<string, string>> = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  HOME: workspaceMount,
  TMPDIR: "/tmp"
}

/** What a sandbox adds around the limits of one run. */
interface Around {
  /** Per-run checks and resources before the spawn (the sandbox's writable places checked). */
  readonly acquire: Effect.Effect<void, SpawnError, Scope.Scope>
  readonly adapt?: (proc: RunningProcess) => RunningProcess
  /** A failure of the wrapper itself, found in the outcome (bwrap's set-up). */
  readonly setupFailure: (outcome: Outcome) => SpawnError | undefined
  /**
   * False when the wrapper finds the cwd itself, from inside (bwrap's `--chdir`): the cwd is then never looked at on
   * the host, where it lies in a tree the workload writes.
   */
  readonly checkCwd?: boolean
}

const nothingAround: Around = { acquire: Effect.void, setupFailure: () => undefined }

/** Turns the command into the one to spawn, with what goes around it; may hold resources for the run's scope. */
type Wrap = (
  command: PreparedCommand
) => Effect.Effect<readonly [PreparedCommand, Around], InvalidInput | SpawnError, Scope.Scope>

const limitsPolicy = (
  limits: Sandbox.ResourceLimits | undefined,
  wrap: Wrap,
  useCgroup: boolean
): Policy["prepare"] =>
(command) =>
  Effect.gen(function*() {
    const [wrapped, around] = yield* wrap(command)
    if (around.checkCwd !== false) yield* checkCwd(command)
    yield* around.acquire
    const cgroup = useCgroup && limits?.maxProcesses !== undefined ? yield* pidsCgroup(limits.maxProcesses) : undefined
    const run: PreparedRun = {
      command: cgroup === undefined ? wrapped : cgroup.enter(wrapped),
      ...(around.adapt === undefined ? {} : { adapt: around.adapt }),
      finish: (outcome) =>
        Effect.gen(function*() {
          // Only the runner's own channels decide a SpawnError (bwrap's status descriptor, the checks made before
          // the spawn): never what the program wrote on its stderr.
          const failure = around.setupFailure(outcome)
          if (failure !== undefined) return yield* Effect.fail(failure)
          if (limits === undefined) return undefined
          const refusedForks = cgroup === undefined ? 0 : yield* cgroup.refusedForks
          return limitExceeded(limits, { exitCode: outcome.exitCode, signal: outcome.signal, refusedForks })
        })
    }
    return run
  })

/**
 * With a wrapper in front (setpriv, prlimit, bwrap), a missing program would only be the wrapper's "failed to execute"
 * on the child's stderr, which the program could as well have written itself: so the program is looked up first, as
 * `execvp` will (the command's own PATH; an empty entry is its cwd), and a miss is the `SpawnError` a direct spawn
 * gives, before anything is spawned. `toHost` maps a path as the program will see it to the host file (the sandbox's
 * view); `undefined`: nothing is there.
 */
const lookUpProgram = (
  command: PreparedCommand,
  toHost: (file: string) => HostFile | undefined = (file) => ({ host: file, workloadWritable: false })
): Effect.Effect<void, SpawnError> =>
  Effect.suspend(() => {
    const [program] = command.argv
    const candidates = (program.includes("/")
      ? [path.resolve(command.cwd, program)]
      // Without PATH, execvp (and libuv) search the default path.
      : (command.env["PATH"] ?? "/usr/bin:/bin").split(":").map((dir) => path.resolve(command.cwd, dir, program)))
      .flatMap((file) => {
        const host = toHost(file)
        return host === undefined ? [] : [host]
      })
    // In execvp's order. A place the workload can write (the workspace, a read-write bind) is never looked at from
    // here: as root, following its symlinks would tell the workload whether a host path exists (PermissionDenied
    // against NotFound). From the first such place on, the sandbox itself finds the program, or says it cannot.
    for (const candidate of candidates) {
      if (candidate.workloadWritable) return Effect.void
      if (isExecutableFile(candidate.host)) return Effect.void
    }
    const exists = candidates.some((file) => existsSync(file.host))
    return Effect.fail(new SpawnError({
      reason: exists ? "PermissionDenied" : "NotFound",
      command: program,
      cwd: command.cwd,
      message: exists ? `permission denied: ${program}` : `command not found: ${program}`
    }))
  })

/** A path as the program will see it, on the host; `workloadWritable` when the workload could have changed it. */
interface HostFile {
  readonly host: string
  readonly workloadWritable: boolean
}

/**
 * Prefixes for a run without a sandbox: `setpriv --pdeathsig KILL` (when given: the child then dies with the process
 * that spawned it, even a SIGKILLed one), then prlimit (when limits are set).
 */
const withPrefixes = (limits: Sandbox.ResourceLimits | undefined, prlimitPath: string, setprivPath: string | undefined): Wrap =>
(command) => {
  const prefix = [
    ...(setprivPath === undefined ? [] : [setprivPath, "--pdeathsig", "KILL"]),
    ...(limits === undefined ? [] : prlimitArgv(limits, { prlimitPath }))
  ]
  const [program, ...rest] = prefix
  if (program === undefined) return Effect.succeed([command, nothingAround] as const)
  const wrapped: PreparedCommand = { ...command, argv: [program, ...rest, ...command.argv] }
  return Effect.succeed([wrapped, { ...nothingAround, acquire: lookUpProgram(command) }] as const)
}

/**
 * TERM goes to the processes inside the sandbox's PID namespace (bwrap neither forwards signals nor lets its init
 * receive them), so a program that traps TERM runs its handler; KILL ends bwrap, whose death takes the namespace.
 */
const signalInside = (status: BwrapStatus) => (proc: RunningProcess): RunningProcess => ({
  ...proc,
  kill: (signal) => {
    const init = status.childPid()
    if (signal === "SIGKILL" || init === undefined) return proc.kill(signal)
    return Effect.sync(() => {
      for (const pid of descendantsOf(init)) {
        try {
          process.kill(pid, signal)
        } catch {
          // Gone already (ESRCH): it was reaped by the sandbox's own init.
        }
      }
    })
  }
})

/**
 * bwrap reports `exit-code` only once the program was exec'd: without it, the program never ran, so what is on
 * stderr is the wrappers' own (setpriv, flock, bwrap) and the run failed to set up.
 */
const bwrapSetupFailure = (command: PreparedCommand, status: BwrapStatus) => (outcome: Outcome) => {
  if (outcome.timedOut || outcome.interrupted || status.exitCode() !== undefined) return undefined
  if (outcome.exitCode === LOCK_CONFLICT && status.childPid() === undefined) {
    return new SpawnError({
      reason: "SandboxSetup",
      command: command.argv[0],
      cwd: command.cwd,
      message: "the sandbox was not set up, nothing ran: the workspace's lock is held exclusively by another process " +
        "(an adoption, Sandbox.adoptWorkspace, or anything else that locked it); run again once it is released"
    })
  }
  const stderr = new TextDecoder().decode(outcome.stderr.bytes())
  const lines = stderr.split("\n").filter((line) => /^(bwrap|setpriv|flock): /.test(line))
  // The program was not found (or not executable) inside the sandbox: bwrap's own exec of it failed, before anything
  // of the workload ran (a program that ran and wrote this line would have an exit in bwrap's status). Said as a
  // direct spawn says it, from what the sandbox sees, never from a lookup on the host.
  const program = command.argv[0]
  const failedExec = lines.map((line) => /^bwrap: execvp (.*): (No such file or directory|Permission denied)$/.exec(line))
    .find((match) => match?.[1] === program)
  // The cwd, looked for by bwrap inside the sandbox (never on the host): said as a direct spawn says it.
  const failedChdir = lines.map((line) => /^bwrap: Can't chdir to (.*): (No such file or directory|Not a directory|Permission denied)$/.exec(line))
    .find((match) => match !== null)
  if (failedChdir !== undefined && failedChdir !== null) {
    const why = failedChdir[2]
    return why === "Not a directory"
      ? new SpawnError({ reason: "CwdNotDirectory", command: program, cwd: command.cwd, message: `cwd ${command.cwd} is not a directory` })
      : new SpawnError({
        reason: why === "Permission denied" ? "PermissionDenied" : "CwdNotFound",
        command: program,
        cwd: command.cwd,
        message: `cannot use cwd ${command.cwd}: ${why === "Permission denied" ? "permission denied" : "no such directory"}`
      })
  }
  if (failedExec !== undefined && failedExec !== null) {
    const notFound = failedExec[2] === "No such file or directory"
    return new SpawnError({
      reason: notFound ? "NotFound" : "PermissionDenied",
      command: program,
      cwd: command.cwd,
      message: notFound ? `command not found: ${program}` : `permission denied: ${program}`
    })
  }
  return new SpawnError({
    reason: "SandboxSetup",
    command: command.argv[0],
    cwd: command.cwd,
    message: `the sandbox could not be set up (exit ${outcome.exitCode}): ${
      (lines.length > 0 ? lines.join("; ") : stderr.trim()).slice(0, 2000) || "no message from bwrap"
    }`
  })
}

/** The cwd as the program sees it (under /workspace), from a host cwd under the settled workspace. */
const insideCwd = (hostCwd: string, layout: Layout): string => {
  const relative = relativeInside(layout.workspace.host, hostCwd)
  return relative === undefined ? hostCwd : path.join(workspaceMount, relative)
}

/**
 * Where a path inside the sandbox is on the host, for looking the program up before bwrap runs: under the latest
 * mount that covers it (read-only binds, read-write binds, the workspace, the system directories: bwrap's order
 * reversed); `undefined` for what the sandbox makes itself (/tmp, /proc, /dev) or does not have.
 */
const sandboxView = (policy: Sandbox.Policy) => {
  const mounts: ReadonlyArray<readonly [string, string, boolean]> = [
    ...[
      ...(policy.readWriteBinds ?? []).map((bind) => [bind, true] as const),
      ...(policy.readOnlyBinds ?? []).map((bind) => [bind, false] as const)
    ].reverse().map(([bind, writable]) => [bind.sandbox ?? bind.host, bind.host, writable] as const),
    [workspaceMount, policy.workspace, true],
    ...systemDirs.map((dir) => [dir, dir, false] as const)
  ]
  return (file: string): HostFile | undefined => {
    const mount = mounts.find(([inside]) => file === inside || file.startsWith(`${inside}/`))
    return mount === undefined
      ? undefined
      : { host: path.join(mount[1], path.relative(mount[0], file)), workloadWritable: mount[2] }
  }
}

/** A cwd under the workspace as given, moved under the workspace as settled (the same directory). */
const rebase = (cwd: string, layout: Layout): string => {
  const relative = relativeInside(layout.workspace.given, cwd)
  return relative === undefined ? cwd : path.join(layout.workspace.host, relative)
}

const sandboxWrap = (policy: Sandbox.Policy, host: SandboxHost): Wrap => {
  // The paths bwrap binds and the lock are the settled ones; nothing of the host is changed for a run.
  const settled = settledPolicy(policy, host.layout)
  const view = sandboxView(settled)
  return (command) =>
    Effect.gen(function*() {
      // Opened and checked now, held until the run ends: bwrap binds these very directories (--bind-fd).
      const boundFds = yield* openLayout(host.layout, host.identity, command)
      const status = makeBwrapStatus()
      const hostCwd = rebase(command.cwd, host.layout)
      const wrapped = yield* bubblewrap.wrap(settled, { ...command, cwd: hostCwd }, {
        bwrapPath: host.bwrap,
        setprivPath: host.setpriv,
        flockPath: host.flock,
        closeFds: host.inherited,
        identity: host.identity,
        masks: host.masks,
        ...(host.prlimit === undefined ? {} : { prlimitPath: host.prlimit }),
        seccomp: host.seccomp?.program,
        onStatus: status.onData,
        boundFds
      })
      const around: Around = {
        acquire: lookUpProgram({ ...command, cwd: insideCwd(hostCwd, host.layout) }, view),
        adapt: signalInside(status),
        setupFailure: bwrapSetupFailure(command, status),
        // As root, stat() of a cwd in the workspace followed the workload's symlinks: a host-path existence oracle.
        checkCwd: false
      }
      return [wrapped, around] as const
    })
}

/**
 * Builds the policy of a live layer. With a sandbox, settles its helpers, identity and seccomp program and runs
 * bubblewrap's preflight with them, failing with `SandboxUnavailable` (or falling back, only if asked to) when it
 * cannot confine commands here. `canSandbox`: whether the spawner can pass descriptors (the Node spawner can,
 * a `CommandExecutor` cannot).
 */
export const makePolicy = (
  options: PolicyOptions,
  spawner: {
    readonly canSandbox: boolean
    readonly runCgroups?: RunCgroups | undefined
    /** setpriv, for a parent-death signal on runs without a sandbox (the sandbox has its own). */
    readonly parentDeath?: string | undefined
  }
): Effect.Effect<Policy, InvalidInput | SandboxUnavailable> =>
  Effect.map(basePolicy(options, spawner), (policy) =>
    // A sandboxed run already has a PID namespace, which dies with bwrap whatever its processes do (setsid included):
    // a cgroup would add nothing but its cost (measured: the spawner's moves took about 1.5 ms per sandboxed exec,
    // blocking the event loop, against 0.2 ms unsandboxed).
    // Only our own spawner could have had cgroups: over a CommandExecutor there is nothing to say.
    policy.sandbox === "bwrap" ? policy : withRunCgroup(policy, spawner.runCgroups, spawner.canSandbox))

/**
 * Every run in a cgroup of its own, when the layer has them: the child is born in it, and the run's signals go to
 * what is in it (the sandbox still sends TERM inside its PID namespace; KILL then takes the whole cgroup).
 */
/** Said once per layer, at its first exec, where unsandboxed runs get neither a cgroup nor a PID namespace. */
export const NO_CONTAINMENT_WARNING = "runs here get no cgroup (not root, or no writable cgroup hierarchy) and no PID " +
  "namespace (no sandbox): a process that leaves its process group (setsid, a double fork) outlives its run, and " +
  "this process if it is killed; run as root, delegate a cgroup v2 subtree, or use the bubblewrap sandbox"

/** `policy`, with `NO_CONTAINMENT_WARNING` logged at its first exec. */
const warnedOnce = (policy: Policy): Policy => {
  let warned = false
  const warn = Effect.suspend(() => {
    if (warned) return Effect.void
    warned = true
    return Effect.logWarning(NO_CONTAINMENT_WARNING)
  })
  return { ...policy, prepare: (command) => Effect.zipRight(warn, policy.prepare(command)) }
}

const withRunCgroup = (policy: Policy, cgroups: RunCgroups | undefined, warn: boolean): Policy =>
  cgroups === undefined ? (warn ? warnedOnce(policy) : policy) : {
    ...policy,
    prepare: (command) =>
      Effect.gen(function*() {
        const run = yield* policy.prepare(command)
        const cgroup = yield* cgroups.make
        const adapt = run.adapt
        const prepared: PreparedRun = {
          ...run,
          command: { ...run.command, cgroup: cgroup.join },
          adapt: (proc) => {
            cgroups.afterSpawn?.()
            const inCgroup: RunningProcess = { ...proc, kill: cgroup.signal }
            return adapt === undefined ? inCgroup : adapt(inCgroup)
          }
        }
        return prepared
      })
  }

const basePolicy = (
  options: PolicyOptions,
  spawner: { readonly canSandbox: boolean; readonly parentDeath?: string | undefined }
): Effect.Effect<Policy, InvalidInput | SandboxUnavailable> =>
  Effect.gen(function*() {
    const useCgroup = (yield* processLimitRoute) === "cgroup"
    const parentDeath = spawner.parentDeath
    const unsandboxed = (limits: Sandbox.ResourceLimits | undefined) =>
      Effect.gen(function*(): Effect.fn.Return<Policy, SandboxUnavailable> {
        if (limits === undefined && parentDeath === undefined) return plainPolicy
        if (limits === undefined) {
          return { sandbox: "none", prepare: limitsPolicy(undefined, withPrefixes(undefined, "", parentDeath), false) }
        }
        // Resolved now, on the host's PATH: a per-exec PATH must not choose what enforces the limits.
        const prlimit = options.sandbox?.prlimitPath ?? (yield* resolveExecutable("prlimit"))
        if (prlimit === undefined) {
          return yield* Effect.fail(new SandboxUnavailable({
            backend: "prlimit",
            message: "prlimit (util-linux) was not found on PATH; resource limits need it.",
            fix: "Install util-linux (`apt-get install -y util-linux`)."
          }))
        }
        return { sandbox: "none", prepare: limitsPolicy(limits, withPrefixes(limits, prlimit, parentDeath), useCgroup) }
      })
    const sandbox = options.sandbox
    if (sandbox === undefined) return yield* unsandboxed(options.resourceLimits)

    const { policy } = sandbox
    const available = yield* Effect.either(
      spawner.canSandbox
        ? Effect.tap(resolveSandboxHost(policy, sandbox), preflightHost)
        : Effect.fail(new SandboxUnavailable({
          backend: "bwrap",
          message: "the sandbox passes its flags, environment and seccomp program on descriptors, which a " +
            "CommandExecutor cannot pass.",
          fix: "Use NativeRunner.layerNode / NativeRunner.makeNode for sandboxed runs."
        }))
    )
    if (Either.isLeft(available)) {
      if (sandbox.fallback !== "unsandboxed") return yield* Effect.fail(available.left)
      yield* Effect.logWarning(`sandbox unavailable, running unsandboxed as asked: ${available.left.message}`)
      return yield* unsandboxed(policy.limits)
    }
    return {
      sandbox: "bwrap",
      network: policy.network ?? "none",
      defaultCwd: policy.workspace,
      defaultInheritEnv: "none",
      baseEnv: SANDBOX_BASE_ENV,
      prepare: limitsPolicy(policy.limits, sandboxWrap(policy, available.right), useCgroup)
    }
  })
