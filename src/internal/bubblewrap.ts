/**
 * The bubblewrap backend's implementation: the policy checked and turned into bwrap's command (`wrap`), the host's
 * secrets found (`hostMasks`) and the trial sandbox run (`preflight`). `Bubblewrap.ts` re-exports each with its
 * documentation; the command line itself is built in ./bwrapArgv.ts.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import type { Mask, PreflightOptions, WrapOptions } from "../Bubblewrap.js"
import type { Bind, Policy } from "../Sandbox.js"
import * as bwrapArgv from "./bwrapArgv.js"
import { runProcess } from "./engine.js"
import { InvalidInput, SandboxUnavailable } from "./errors.js"
import { resolveExecutable } from "./executables.js"
import { makeNodeSpawner } from "./nodeSpawner.js"
import type { PreparedCommand } from "./prepared.js"
import { prlimitArgv } from "./resourceLimits.js"
import { relativeInside, workspaceMount } from "./sandbox.js"

// Secrets under the bound system dirs that uid 0 could otherwise read.
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

// Used when `wrap` is given no masks; each needs an existing mount point.
export const defaultMasks: ReadonlyArray<Mask> = [
  { path: "/etc/shadow", kind: "file" },
  { path: "/etc/gshadow", kind: "file" }
]

/** The `candidates` present here as a file or a directory; see `Bubblewrap.hostMasks`. */
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

type Issue = { readonly path: string; readonly message: string }


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

/** Bind flags, by descriptor where `fds` (the child's descriptor numbers, by position) has one. */
const bindFlags = (
  writable: boolean,
  binds: ReadonlyArray<Bind> | undefined,
  fds: ReadonlyArray<number | undefined> | undefined
): Array<string> =>
  (binds ?? []).flatMap((bind, index) => {
    const fd = fds?.[index]
    const dest = bind.sandbox ?? bind.host
    return fd === undefined
      ? [writable ? "--bind" : "--ro-bind", bind.host, dest]
      : [writable ? "--bind-fd" : "--ro-bind-fd", String(fd), dest]
  })

/** Checks `policy` and the command, then builds the command to spawn instead; see `Bubblewrap.wrap`. */
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
      : []),
    ...(options?.flockPath !== undefined && options.setprivPath === undefined
      ? [{ path: "setprivPath", message: "is required with flockPath" }]
      : [])
  ]
  const relativeCwd = path.posix.isAbsolute(command.cwd) && path.posix.isAbsolute(policy.workspace)
    ? relativeInside(policy.workspace, command.cwd)
    : undefined
  if (relativeCwd === undefined) {
    // The cwd is a host path; one given as the program sees it (under /workspace) gets the host path it means.
    const seen = path.posix.isAbsolute(command.cwd) ? relativeInside(workspaceMount, command.cwd) : undefined
    const hint = seen === undefined || !path.posix.isAbsolute(policy.workspace)
      ? ""
      : ` (cwd is a host path: for ${command.cwd} inside the sandbox, use ${path.posix.join(policy.workspace, seen)})`
    issues.push({ path: "cwd", message: `must be inside the sandbox workspace ${policy.workspace}${hint}` })
  }
  if (issues.length > 0 || relativeCwd === undefined) {
    return Either.left(
      new InvalidInput({
        message: `Cannot sandbox the command: ${issues.map((issue) => `${issue.path} ${issue.message}`).join("; ")}`,
        issues
      })
    )
  }
  const fds = bwrapArgv.boundFdNumbers(options)
  const workspaceFd = fds.workspace
  const flags = [
    ...bwrapArgv.sandboxFlags(policy.network ?? "none", env, options?.masks ?? defaultMasks),
    ...(workspaceFd === undefined
      ? ["--bind", policy.workspace, workspaceMount]
      : ["--bind-fd", String(workspaceFd), workspaceMount]),
    // Read-only binds last, so one nested in a writable bind stays read-only.
    ...bindFlags(true, policy.readWriteBinds, fds.readWriteBinds),
    ...bindFlags(false, policy.readOnlyBinds, fds.readOnlyBinds),
    // bwrap's root is a writable tmpfs; after the last mount, make it read-only so only binds and /tmp take writes.
    "--remount-ro",
    "/",
    "--chdir",
    path.posix.join(workspaceMount, relativeCwd)
  ]
  const prlimitPath = options?.prlimitPath ?? "/usr/bin/prlimit"
  const limits = policy.limits === undefined ? [] : prlimitArgv(policy.limits, { prlimitPath })
  const lockDir = workspaceFd === undefined ? policy.workspace : `/proc/self/fd/${workspaceFd}`
  return Either.right(bwrapArgv.bwrapCommand(flags, [...limits, ...command.argv], options, lockDir))
}

const installFix =
  "Install bubblewrap (`apt-get install -y bubblewrap`, `dnf install bubblewrap`, `apk add bubblewrap`) or pass " +
  "put it on PATH (the CLI finds it there; the library also takes its location as `bwrapPath`); or run without " +
  "a sandbox."

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

/** Checks that bubblewrap can build the sandbox `wrap` describes; see `Bubblewrap.preflight`. */
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
