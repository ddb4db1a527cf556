/**
 * The bubblewrap backend: a pure function from a `Sandbox.Policy` and a prepared command to the command to spawn
 * instead, plus the host checks it relies on (`preflight`, `hostMasks`).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { type ExecFileException, execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { InvalidInput, SandboxUnavailable } from "./Errors.js"
import type { PreparedCommand } from "./internal/prepared.js"
import { prlimitArgv } from "./internal/resourceLimits.js"
import { type Bind, type Network, type Policy, workspaceMount } from "./Sandbox.js"

/** A host path hidden inside the sandbox: a file is covered by `/dev/null`, a directory by an empty tmpfs. */
export interface Mask {
  readonly path: string
  readonly kind: "file" | "directory"
}

/** Host directories bound read-only (when present) so programs and their libraries run. */
export const systemDirs: ReadonlyArray<string> = ["/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc"]

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

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const maskFlags = (mask: Mask): Array<string> =>
  mask.kind === "file"
    ? ["--ro-bind", "/dev/null", mask.path]
    : ["--tmpfs", mask.path, "--remount-ro", mask.path]

/** Everything but the workspace: namespaces, environment and the read-only system view. Order matters to bwrap. */
const sandboxFlags = (
  network: Network,
  env: Readonly<Record<string, string>>,
  masks: ReadonlyArray<Mask>
): Array<string> => [
  "--unshare-all",
  // Only valid after --unshare-all, which it partly undoes.
  ...(network === "host" ? ["--share-net"] : []),
  "--die-with-parent",
  "--new-session",
  // Started by root, bwrap keeps every capability inside; uid 0 with CAP_SYS_ADMIN could unmount the masks.
  "--cap-drop",
  "ALL",
  // bwrap applies --clearenv and --setenv while parsing, so the clear must come first.
  "--clearenv",
  ...Object.entries(env).flatMap(([name, value]) => ["--setenv", name, value]),
  ...systemDirs.flatMap((dir) => ["--ro-bind-try", dir, dir]),
  // Masks after /etc, since a later mount covers an earlier one.
  ...masks.flatMap(maskFlags),
  "--proc",
  "/proc",
  "--dev",
  "/dev",
  "--tmpfs",
  "/tmp"
]

/** Options of `wrap`. */
export interface WrapOptions {
  /** The bwrap executable, resolved on the returned `PATH`. Default `"bwrap"`. */
  readonly bwrapPath?: string
  /** Secrets to hide. Default `defaultMasks`; use `hostMasks()` for every known secret present on this host. */
  readonly masks?: ReadonlyArray<Mask>
  /**
   * prlimit inside the sandbox (util-linux, visible through the `/usr` bind), used when `policy.limits` is set.
   * Absolute so the command's own `PATH` cannot hide it. Default `"/usr/bin/prlimit"`.
   */
  readonly prlimitPath?: string
}

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
 * `[bwrap, ...flags, "--", ...prlimit prefix, ...command.argv]`, started in the workspace with only `PATH` set.
 * Inside, the environment is exactly `command.env` merged with `policy.env` (the policy wins: it is the operator's
 * setting), the cwd is `command.cwd` mapped under `/workspace`. Fails with `InvalidInput` when the cwd is outside
 * the workspace or a path is relative.
 *
 * `maxProcesses` is passed to prlimit, which holds only for a non-root uid; as root, also spawn the result through
 * a pids cgroup (`internal/resourceLimits.pidsCgroup`).
 *
 * @example
 * const wrapped = Bubblewrap.wrap({ workspace: "/srv/job" }, { argv: ["make"], cwd: "/srv/job/src", env: {} })
 * // Right: argv ["bwrap", ..., "--chdir", "/workspace/src", "--", "make"], cwd "/srv/job"
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
    ...checkEnv(env, "env")
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
    ...sandboxFlags(policy.network ?? "none", env, options?.masks ?? defaultMasks),
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
  return Either.right({
    argv: [options?.bwrapPath ?? "bwrap", ...flags, "--", ...limits, ...command.argv],
    cwd: policy.workspace,
    // bwrap clears the environment inside; outside it needs only PATH to be found, and nothing that could
    // influence bwrap itself (LD_PRELOAD and friends) is passed.
    env: { PATH: command.env["PATH"] ?? defaultPath }
  })
}

/** Options of `preflight`. */
export interface PreflightOptions {
  /** The bwrap executable. Default `"bwrap"` on `PATH`. */
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

/** Why the trial sandbox failed, from `execFile`'s error and bwrap's stderr. */
const diagnose = (
  bwrap: string,
  timeoutMs: number,
  error: ExecFileException,
  stderr: string
): SandboxUnavailable => {
  const fail = (message: string, fix: string) => new SandboxUnavailable({ backend: "bwrap", message, fix })
  if (error.code === "ENOENT") {
    return fail(`bubblewrap was not found: "${bwrap}" does not exist or is not on PATH.`, installFix)
  }
  if (error.code === "EACCES") return fail(`bubblewrap is not executable: "${bwrap}": ${error.message}`, installFix)
  if (error.killed === true) {
    return fail(
      `bubblewrap did not finish a trivial sandboxed command within ${timeoutMs} ms.`,
      "Check the host load and whether bwrap hangs on a mount; raise `timeout`."
    )
  }
  const detail = stderr.trim().slice(0, 2000)
  const message = `bubblewrap could not create the sandbox (exit ${String(error.code ?? error.signal)}): ${
    detail || error.message
  }`
  // A mask without a mount point is a policy problem, not a namespace one.
  return /Can't (create file|mkdir)/.test(detail)
    ? fail(message, "Pass `masks: yield* Bubblewrap.hostMasks()` so only existing paths are masked.")
    : fail(message, namespaceFix)
}

/**
 * Checks that bubblewrap exists and can build the sandbox `wrap` describes, by running `/bin/true` with the same
 * namespaces, system binds and masks. Fails with `SandboxUnavailable` saying why (not found, not executable,
 * namespace or mount setup refused, timed out) and how to fix it.
 */
export const preflight = Effect.fn("Bubblewrap.preflight")(function* (options?: PreflightOptions) {
  const bwrap = options?.bwrapPath ?? "bwrap"
  const timeoutMs = Duration.toMillis(options?.timeout ?? Duration.seconds(5))
  const argv = [...sandboxFlags("none", {}, options?.masks ?? defaultMasks), "--", "/bin/true"]
  const env = { PATH: process.env["PATH"] ?? defaultPath }
  yield* Effect.async<void, SandboxUnavailable>((resume, signal) => {
    // The AbortSignal kills bwrap when the fiber is interrupted; `timeout` kills it when it hangs.
    execFile(bwrap, argv, { cwd: "/", env, timeout: timeoutMs, killSignal: "SIGKILL", signal }, (error, _out, stderr) =>
      resume(error === null ? Effect.void : Effect.fail(diagnose(bwrap, timeoutMs, error, stderr))))
  })
})
