/**
 * The bubblewrap backend: a pure function from a `Sandbox.Policy` and a prepared command to the command to spawn
 * instead, plus the host checks it relies on (`preflight`, `hostMasks`).
 *
 * What is spawned is `[setpriv ..., bwrap, "--args", "3", "--", ...prlimit, ...argv]` with absolute paths, an empty
 * environment and `/` as cwd: nothing the workload controls (its env, PATH, workspace) chooses the binaries. bwrap's
 * flags, the sandbox's environment among them, travel on descriptor 3 (never on a command line, where `ps` shows
 * them to every host user), the seccomp program on another, and bwrap reports on `--json-status-fd`.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { InvalidInput, SandboxUnavailable } from "./Errors.js"
import { runProcess } from "./internal/engine.js"
import { resolveExecutable } from "./internal/executables.js"
import { makeNodeSpawner } from "./internal/nodeSpawner.js"
import * as bwrapArgv from "./internal/bwrapArgv.js"
import type { PreparedCommand } from "./internal/prepared.js"
import { prlimitArgv } from "./internal/resourceLimits.js"
import { type Bind, type Policy, type SandboxUser, workspaceMount } from "./Sandbox.js"

/** A host path hidden inside the sandbox: a file is covered by `/dev/null`, a directory by an empty tmpfs. */
export interface Mask {
  readonly path: string
  readonly kind: "file" | "directory"
}

/** Host directories bound read-only (when present) so programs and their libraries run. */
export const systemDirs: ReadonlyArray<string> = bwrapArgv.systemDirs

/** Secrets under the bound system dirs that uid 0 could otherwise read; `hostMasks` keeps those that exist. */
export const secretCandidates: ReadonlyArray<string> = [
  "/etc/shadow",
  "/etc/shadow-",
  "/etc/gshadow",
  "/etc/gshadow-",
  "/etc/sudoers",
  "/etc/sudoers.d",
  "/etc/security/opasswd",
  "/etc/ssh/ssh_host_rsa_key",
  "/etc/ssh/ssh_host_dsa_key",
  "/etc/ssh/ssh_host_ecdsa_key",
  "/etc/ssh/ssh_host_ed25519_key",
  "/etc/krb5.keytab",
  "/etc/ssl/private",
  "/etc/pki/tls/private",
  "/etc/NetworkManager/system-connections",
  "/etc/wireguard",
  "/etc/credstore",
  "/etc/credstore.encrypted"
]

/**
 * Masks used when `wrap` is given none. A mask needs an existing mount point (bwrap cannot create one in the
 * read-only `/etc`), so a host without these makes bwrap fail, never run unmasked: pass `hostMasks()` instead.
 */
export const defaultMasks: ReadonlyArray<Mask> = [
  { path: "/etc/shadow", kind: "file" },
  { path: "/etc/gshadow", kind: "file" }
]

/**
 * The `candidates` that exist on this host as a regular file or directory, as masks for `wrap` and `preflight`.
 * Symlinks and paths this process cannot stat are skipped: bwrap cannot mount over the former reliably, and the
 * latter are not readable by a sandbox running as the same user either.
 */
export const hostMasks = Effect.fn("Bubblewrap.hostMasks")(function* (
  candidates: ReadonlyArray<string> = secretCandidates
) {
  const found = yield* Effect.forEach(candidates, (candidate) =>
    Effect.promise(() =>
      fs.lstat(candidate).then(
        (stats): ReadonlyArray<Mask> =>
          stats.isFile()
            ? [{ path: candidate, kind: "file" }]
            : stats.isDirectory()
            ? [{ path: candidate, kind: "directory" }]
            : [],
        (): ReadonlyArray<Mask> => []
      )
    ))
  return found.flat()
})

/** Options of `wrap`. Paths are absolute: resolve them once, on the host's PATH (`resolveExecutable`). */
export interface WrapOptions {
  /** The bwrap executable. Default `"/usr/bin/bwrap"`. */
  readonly bwrapPath?: string
  /**
   * util-linux setpriv, run first: it gives bwrap a parent-death signal (KILL) so a killed host leaves nothing
   * running, and switches to `identity`. Required with `identity`; without both, bwrap is spawned directly.
   */
  readonly setprivPath?: string | undefined
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

type Issue = { readonly path: string; readonly message: string }

const relativeInside = (parent: string, child: string): string | undefined => {
  const relative = path.posix.relative(parent, child)
  return relative === ".." || relative.startsWith("../") || path.posix.isAbsolute(relative) ? undefined : relative
}

const checkBinds = (field: string, binds: ReadonlyArray<Bind> | undefined): Array<Issue> =>
  (binds ?? []).flatMap((bind, index) =>
    [
      { path: `${field}[${index}].host`, value: bind.host },
      { path: `${field}[${index}].sandbox`, value: bind.sandbox }
    ].flatMap(({ path: issuePath, value }) =>
      value === undefined || path.posix.isAbsolute(value) ? [] : [{ path: issuePath, message: "must be absolute" }]
    )
  )

const checkEnv = (env: Readonly<Record<string, string>>, field: string): Array<Issue> =>
  Object.entries(env).flatMap(([name, value]) =>
    name === "" || name.includes("=") || name.includes("\0") || value.includes("\0")
      ? [{ path: `${field}.${name}`, message: "names must be non-empty without '=' or NUL; values without NUL" }]
      : []
  )

const bindFlags = (flag: "--bind" | "--ro-bind", binds: ReadonlyArray<Bind> | undefined): Array<string> =>
  (binds ?? []).flatMap((bind) => [flag, bind.host, bind.sandbox ?? bind.host])

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
export const wrap = (
  policy: Policy,
  command: PreparedCommand,
  options?: WrapOptions
): Either.Either<PreparedCommand, InvalidInput> => {
  const env = { ...command.env, ...policy.env }
  const issues: Array<Issue> = [
    ...(path.posix.isAbsolute(policy.workspace) ? [] : [{ path: "sandbox.workspace", message: "must be absolute" }]),
    ...checkBinds("sandbox.readWriteBinds", policy.readWriteBinds),
    ...checkBinds("sandbox.readOnlyBinds", policy.readOnlyBinds),
    ...checkEnv(env, "env"),
    // Without setpriv nothing would switch users: the program would run as the caller (root) — fail closed.
    ...(options?.identity !== undefined && options.setprivPath === undefined
      ? [{ path: "setprivPath", message: "is required with an identity" }]
      : [])
  ]
  const relativeCwd = path.posix.isAbsolute(command.cwd) && path.posix.isAbsolute(policy.workspace)
    ? relativeInside(policy.workspace, command.cwd)
    : undefined
  if (relativeCwd === undefined) {
    issues.push({ path: "cwd", message: `must be inside the sandbox workspace ${policy.workspace}` })
  }
  if (issues.length > 0 || relativeCwd === undefined) {
    return Either.left(
      new InvalidInput({
        message: `Cannot sandbox the command: ${issues.map((issue) => `${issue.path} ${issue.message}`).join("; ")}`,
        issues
      })
    )
  }
  const flags = [
    ...bwrapArgv.sandboxFlags(policy.network ?? "none", env, options?.masks ?? defaultMasks),
    "--bind",
    policy.workspace,
    workspaceMount,
    // Read-only binds last, so one nested in a writable bind stays read-only.
    ...bindFlags("--bind", policy.readWriteBinds),
    ...bindFlags("--ro-bind", policy.readOnlyBinds),
    // bwrap's root is a writable tmpfs; after the last mount, make it read-only so only binds and /tmp take writes.
    "--remount-ro",
    "/",
    "--chdir",
    path.posix.join(workspaceMount, relativeCwd)
  ]
  const prlimitPath = options?.prlimitPath ?? "/usr/bin/prlimit"
  const limits = policy.limits === undefined ? [] : prlimitArgv(policy.limits, { prlimitPath })
  return Either.right(bwrapArgv.bwrapCommand(flags, [...limits, ...command.argv], options))
}

/** Options of `preflight`: the same helpers, identity and seccomp program as the runs it vouches for. */
export interface PreflightOptions extends Pick<WrapOptions, "setprivPath" | "identity" | "seccomp"> {
  /** The bwrap executable, an absolute path. Default: `bwrap` on this process's `PATH` (absolute entries only). */
  readonly bwrapPath?: string
  /** The masks `wrap` will use, so a missing mount point is found here. Default `defaultMasks`. */
  readonly masks?: ReadonlyArray<Mask>
  /** How long the trial sandbox may take. Default 5 seconds. */
  readonly timeout?: Duration.DurationInput
}

const installFix =
  "Install bubblewrap (`apt-get install -y bubblewrap`, `dnf install bubblewrap`, `apk add bubblewrap`) or pass " +
  "its location as `bwrapPath`; or run without a sandbox."

const namespaceFix =
  "Allow user namespaces: `sysctl -w kernel.unprivileged_userns_clone=1` (Debian/Ubuntu kernels), " +
  "`sysctl -w user.max_user_namespaces=15000` (0 disables them), and on Ubuntu 23.10+ " +
  "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`. In a container, allow unshare/mount/clone " +
  "(e.g. `--security-opt seccomp=unconfined --security-opt apparmor=unconfined`)."

const unavailable = (message: string, fix: string) => new SandboxUnavailable({ backend: "bwrap", message, fix })

/** Why the trial sandbox failed, from bwrap's exit and stderr. */
const diagnose = (exitCode: number, stderr: string): SandboxUnavailable => {
  const detail = stderr.trim().slice(0, 2000)
  const message = `bubblewrap could not create the sandbox (exit ${exitCode}): ${detail || "no message"}`
  // A mask without a mount point is a policy problem, not a namespace one.
  return /Can't (create file|mkdir)/.test(detail)
    ? unavailable(message, "Pass `masks: yield* Bubblewrap.hostMasks()` so only existing paths are masked.")
    : unavailable(message, namespaceFix)
}

/**
 * Checks that bubblewrap exists and can build the sandbox `wrap` describes, by running `/bin/true` with the same
 * helpers, identity, seccomp program, namespaces, system binds and masks. Fails with `SandboxUnavailable` saying why
 * (not found, not executable, namespace or mount setup refused, timed out) and how to fix it.
 */
export const preflight = Effect.fn("Bubblewrap.preflight")(function*(options?: PreflightOptions) {
  const bwrap = options?.bwrapPath ?? (yield* resolveExecutable("bwrap"))
  if (bwrap === undefined) {
    return yield* Effect.fail(unavailable("bubblewrap was not found: no `bwrap` on PATH.", installFix))
  }
  const timeout = Duration.decode(options?.timeout ?? Duration.seconds(5))
  const command = bwrapArgv.bwrapCommand([...bwrapArgv.sandboxFlags("none", {}, options?.masks ?? defaultMasks), "--"].slice(0, -1), [
    "/bin/true"
  ], { ...options, bwrapPath: bwrap })
  const outcome = yield* runProcess(makeNodeSpawner(), command, undefined, {
    maxStdoutBytes: 4096,
    maxStderrBytes: 16384,
    timeout,
    killGrace: Duration.zero,
    drainTimeout: Duration.seconds(1)
  }).pipe(Effect.mapError((error) =>
    unavailable(
      error.reason === "NotFound"
        ? `bubblewrap was not found: "${error.command}" does not exist.`
        : `cannot start the sandbox: ${error.message}`,
      installFix
    )
  ))
  if (outcome.timedOut) {
    return yield* Effect.fail(unavailable(
      `bubblewrap did not finish a trivial sandboxed command within ${Duration.toMillis(timeout)} ms.`,
      "Check the host load and whether bwrap hangs on a mount; raise `timeout`."
    ))
  }
  if (outcome.exitCode !== 0) {
    return yield* Effect.fail(diagnose(outcome.exitCode, new TextDecoder().decode(outcome.stderr.bytes())))
  }
})
