/**
 * What a bubblewrap sandbox needs from this host, settled once when a layer is built: absolute paths of bwrap,
 * setpriv, flock and prlimit (from the host's PATH or the options, never a workload's), the identity of the sandboxed
 * program, the seccomp program, the masks and the policy's paths. `doctor` prints the same facts the layer uses.
 */
import * as Effect from "effect/Effect"
import { openSync } from "node:fs"
import type { Mask } from "../Bubblewrap.js"
import { systemDirs } from "./bwrapArgv.js"
import { hostMasks, preflight } from "./bubblewrap.js"
import { SandboxUnavailable } from "./errors.js"
import type { Policy, SandboxUser } from "../Sandbox.js"
import { defaultSandboxUser } from "./sandbox.js"
import { inheritedFds } from "./inheritedFds.js"
import { type Layout, resolveIdentity, settleLayout } from "./workspaceAccess.js"
import { checkExecutable, resolveExecutable } from "./executables.js"
import { defaultFilter, hostSeccompArch, type SeccompArch } from "./seccomp.js"

/** Where the sandbox's helpers are, given as absolute paths; each defaults to the host's PATH. */
export interface SandboxPaths {
  readonly bwrapPath?: string | undefined
  readonly setprivPath?: string | undefined
  readonly prlimitPath?: string | undefined
  readonly flockPath?: string | undefined
}

/** The settled facts. */
export interface SandboxHost {
  readonly bwrap: string
  /** Runs first: parent-death signals, and the switch to `identity`. */
  readonly setpriv: string
  /** util-linux flock: each run holds its workspace's lock shared, so adoption cannot run under it. */
  readonly flock: string
  /** prlimit, visible inside the sandbox through a system bind; absent when not installed. */
  readonly prlimit: string | undefined
  /** The host uid:gid of the program when this process is root; `undefined`: it runs as this process's user. */
  readonly identity: SandboxUser | undefined
  readonly seccomp: { readonly arch: SeccompArch; readonly program: Uint8Array } | undefined
  readonly masks: ReadonlyArray<Mask>
  /** The policy's paths, settled (`internal/workspaceAccess`). */
  readonly layout: Layout
  /** Descriptors this process inherited without close-on-exec, covered with /dev/null in every sandbox's chain. */
  readonly inherited: { readonly fds: ReadonlyArray<number>; readonly devNull: number } | undefined
}

const unavailable = (message: string, fix: string) => new SandboxUnavailable({ backend: "bwrap", message, fix })

// One /dev/null for the process (close-on-exec, as Node opens it), opened the first time a host inherited any.
let devNull: number | undefined

/** The inherited descriptors, and an open /dev/null to cover them with; `undefined` when there are none. */
const coverInherited = Effect.sync(() => {
  const fds = inheritedFds()
  if (fds.length === 0) return undefined
  devNull ??= openSync("/dev/null", "r")
  return { fds, devNull }
})

const locate = (name: string, explicit: string | undefined) =>
  explicit === undefined ? resolveExecutable(name) : checkExecutable(explicit)

const hasLimits = (policy: Policy): boolean => Object.values(policy.limits ?? {}).some((value) => value !== undefined)

/** Settles the facts for `policy`; fails with `SandboxUnavailable` saying what is missing and how to fix it. */
export const resolveSandboxHost = (
  policy: Policy,
  paths: SandboxPaths
): Effect.Effect<SandboxHost, SandboxUnavailable> =>
  Effect.gen(function*() {
    const isRoot = process.getuid?.() === 0
    const bwrap = yield* locate("bwrap", paths.bwrapPath)
    if (bwrap === undefined) {
      return yield* Effect.fail(unavailable(
        paths.bwrapPath === undefined
          ? "bubblewrap was not found: no `bwrap` on PATH."
          : `bubblewrap was not found: ${paths.bwrapPath} is not an executable file.`,
        "Install bubblewrap (`apt-get install -y bubblewrap`, `dnf install bubblewrap`, `apk add bubblewrap`) or " +
          "put it on PATH (the CLI finds it there; the library also takes its absolute path as `bwrapPath`); or run " +
          "without a sandbox."
      ))
    }
    const setpriv = yield* locate("setpriv", paths.setprivPath)
    if (setpriv === undefined) {
      return yield* Effect.fail(unavailable(
        "setpriv (util-linux) was not found; the sandbox needs it to run the program as an unprivileged user (as " +
          "root) and to make the run die with this process.",
        "Install util-linux (`apt-get install -y util-linux`) and put it on PATH (or give the library its absolute path as `setprivPath`)."
      ))
    }
    const flock = yield* locate("flock", paths.flockPath)
    if (flock === undefined) {
      return yield* Effect.fail(unavailable(
        "flock (util-linux) was not found; each sandboxed run holds its workspace's lock with it.",
        "Install util-linux (`apt-get install -y util-linux`) and put it on PATH (or give the library its absolute path as `flockPath`)."
      ))
    }
    const prlimit = yield* locate("prlimit", paths.prlimitPath)
    const visible = prlimit !== undefined && systemDirs.some((dir) => prlimit.startsWith(`${dir}/`))
    if (hasLimits(policy) && !visible) {
      return yield* Effect.fail(unavailable(
        `prlimit ${prlimit === undefined ? "was not found" : `at ${prlimit} is not under a system directory bound into the sandboxes (${systemDirs.join(", ")})`}; resource limits need it.`,
        "Install util-linux (`apt-get install -y util-linux`) and put it on PATH (or give the library its absolute path as `prlimitPath`)."
      ))
    }
    const arch = hostSeccompArch()
    if (policy.seccomp !== false && arch === undefined) {
      return yield* Effect.fail(unavailable(
        `no seccomp filter is built for this architecture (${process.arch}); the sandbox fails closed.`,
        "Run on x86_64 or aarch64, or set `seccomp: false` in the policy (not recommended)."
      ))
    }
    return {
      bwrap,
      setpriv,
      prlimit,
      flock,
      identity: yield* resolveIdentity(policy, isRoot, defaultSandboxUser),
      seccomp: policy.seccomp === false || arch === undefined ? undefined : { arch, program: defaultFilter(arch) },
      masks: yield* hostMasks(),
      layout: settleLayout(policy),
      inherited: yield* coverInherited
    }
  })

/** `Bubblewrap.preflight` with exactly the helpers, identity, seccomp program and masks the runs will use. */
export const preflightHost = (host: SandboxHost) =>
  preflight({
    bwrapPath: host.bwrap,
    setprivPath: host.setpriv,
    identity: host.identity,
    seccomp: host.seccomp?.program,
    masks: host.masks
  })
