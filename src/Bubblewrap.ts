/**
 * The bubblewrap backend: a pure function from a `Sandbox.Policy` and a prepared command to the command to spawn
 * instead, plus the host checks it relies on (`preflight`, `hostMasks`).
 *
 * What is spawned is `[setpriv ..., bwrap, "--args", "3", "--", ...prlimit, ...argv]` with absolute paths, an empty
 * environment and `/` as cwd: nothing the workload controls (its env, PATH, workspace) chooses the binaries. bwrap's
 * flags, the sandbox's environment among them, travel on descriptor 3 (never on a command line, where `ps` shows
 * them to every host user), the seccomp program on another, and bwrap reports on `--json-status-fd`.
 */
import type * as Duration from "effect/Duration"
import * as bwrapArgv from "./internal/bwrapArgv.js"
import * as internal from "./internal/bubblewrap.js"
import type { PreparedCommand } from "./internal/prepared.js"
import type { SandboxUser } from "./Sandbox.js"

/** A host path hidden inside the sandbox: a file is covered by `/dev/null`, a directory by an empty tmpfs. */
export interface Mask {
  readonly path: string
  readonly kind: "file" | "directory"
}

/** Host directories bound read-only (when present) so programs and their libraries run. */
export const systemDirs: ReadonlyArray<string> = bwrapArgv.systemDirs

/** Secrets under the bound system dirs that uid 0 could otherwise read; `hostMasks` keeps those that exist. */
export const secretCandidates: ReadonlyArray<string> = internal.secretCandidates

/**
 * Masks used when `wrap` is given none. A mask needs an existing mount point (bwrap cannot create one in the
 * read-only `/etc`), so a host without these makes bwrap fail, never run unmasked: pass `hostMasks()` instead.
 */
export const defaultMasks: ReadonlyArray<Mask> = internal.defaultMasks

/**
 * The `candidates` that exist on this host as a regular file or directory, as masks for `wrap` and `preflight`.
 * Symlinks and paths this process cannot stat are skipped: bwrap cannot mount over the former reliably, and the
 * latter are not readable by a sandbox running as the same user either.
 */
export const hostMasks = internal.hostMasks

/** Descriptors for `WrapOptions.boundFds`, by position: the workspace, then each read-write and read-only bind. */
export interface BoundFds {
  readonly workspace?: number | undefined
  readonly readWriteBinds?: ReadonlyArray<number | undefined> | undefined
  readonly readOnlyBinds?: ReadonlyArray<number | undefined> | undefined
}

/** Options of `wrap`. Paths are absolute: resolve them once, on the host's PATH (`resolveExecutable`). */
export interface WrapOptions {
  /** The bwrap executable. Default `"/usr/bin/bwrap"`. */
  readonly bwrapPath?: string
  /**
   * util-linux setpriv, run first: it gives bwrap a parent-death signal (KILL) so a killed host leaves nothing
   * running, and switches to `identity`. Required with `identity`; without both, bwrap is spawned directly.
   */
  readonly setprivPath?: string | undefined
  /**
   * util-linux flock: the run holds a shared lock on the workspace directory for as long as it lives (taken by a
   * `flock --shared --nonblock --close` in front of bwrap, never handed to the program), so `Sandbox.adoptWorkspace`
   * cannot run under it; while adoption holds it, the run exits 75 before bwrap starts. Requires `setprivPath`.
   * Default: no lock.
   */
  readonly flockPath?: string | undefined
  /**
   * Descriptors the caller opened and checked for the workspace and each bind (by position in the policy's lists;
   * `undefined`: bound by name). Each is bound with `--bind-fd` / `--ro-bind-fd` on a copy of that descriptor, and
   * bwrap checks that what it mounted is the opened file (device and inode), so a path swapped after the check fails
   * the run instead of binding elsewhere. bwrap closes each after its mount, so a path bound twice needs two. The
   * descriptors must stay open until the process has started. Default: every path bound by name.
   */
  readonly boundFds?: BoundFds | undefined
  /**
   * Descriptors this process inherited without close-on-exec (`internal/inheritedFds`), which every child would get
   * too: each is replaced in the child by a copy of `devNull` (an open `/dev/null`), so the sandbox never gets them
   * (they could be host files the sandbox user may not open). Default: none.
   */
  readonly closeFds?: { readonly fds: ReadonlyArray<number>; readonly devNull: number } | undefined
  /** The host uid:gid the sandbox runs as (for a root host: never root inside). Default: this process's own. */
  readonly identity?: SandboxUser | undefined
  /** Secrets to hide. Default `defaultMasks`; use `hostMasks()` for every known secret present on this host. */
  readonly masks?: ReadonlyArray<Mask>
  /**
   * prlimit inside the sandbox (util-linux, visible through the `/usr` bind), used when `policy.limits` is set.
   * Default `"/usr/bin/prlimit"`.
   */
  readonly prlimitPath?: string
  /** A seccomp BPF program (`internal/seccomp.defaultFilter`), loaded by bwrap from a descriptor. Default: none. */
  readonly seccomp?: Uint8Array | undefined
  /** Receives bwrap's `--json-status-fd` reports (`internal/bwrapStatus`). Default: not requested. */
  readonly onStatus?: ((chunk: Uint8Array) => void) | undefined
}

/**
 * The argv as bwrap parses it: `--args 3` replaced by the flags it reads from descriptor 3. For tests, logs and
 * `doctor`; it holds the sandbox's environment, so never print it where secrets must not go.
 */
export const expandArgs = (command: PreparedCommand): Array<string> => bwrapArgv.expandArgs(command)

/**
 * The command to spawn instead of `command` to run it inside bubblewrap under `policy`:
 * `[setpriv ..., bwrap, "--args", "3", "--", ...prlimit prefix, ...command.argv]`, started in `/` with an empty
 * environment; bwrap's flags are on descriptor 3 (`expandArgs` shows them). Inside, the environment is exactly
 * `command.env` merged with `policy.env` (the policy wins: it is the operator's setting), the cwd is `command.cwd`
 * mapped under `/workspace`. Fails with `InvalidInput` when the cwd is outside the workspace or a path is relative.
 *
 * `maxProcesses` is passed to prlimit, which holds only for a non-root uid; as root, also spawn the result through
 * a pids cgroup (`internal/resourceLimits.pidsCgroup`).
 *
 * @example
 * const wrapped = Bubblewrap.wrap({ workspace: "/srv/job" }, { argv: ["make"], cwd: "/srv/job/src", env: {} })
 * // Right: argv ["/usr/bin/bwrap", "--args", "3", "--", "make"], cwd "/", flags on fd 3 end with --chdir /workspace/src
 */
export const wrap = internal.wrap

/** Options of `preflight`: the same helpers, identity and seccomp program as the runs it vouches for. */
export interface PreflightOptions extends Pick<WrapOptions, "setprivPath" | "identity" | "seccomp"> {
  /** The bwrap executable, an absolute path. Default: `bwrap` on this process's `PATH` (absolute entries only). */
  readonly bwrapPath?: string
  /** The masks `wrap` will use, so a missing mount point is found here. Default `defaultMasks`. */
  readonly masks?: ReadonlyArray<Mask>
  /** How long the trial sandbox may take. Default 5 seconds. */
  readonly timeout?: Duration.DurationInput
}

/**
 * Checks that bubblewrap exists and can build the sandbox `wrap` describes, by running `/bin/true` with the same
 * helpers, identity, seccomp program, namespaces, system binds and masks. Fails with `SandboxUnavailable` saying why
 * (not found, not executable, namespace or mount setup refused, timed out) and how to fix it.
 */
export const preflight = internal.preflight
