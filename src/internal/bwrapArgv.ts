/**
 * bwrap's command line, as `Bubblewrap.wrap` and `Bubblewrap.preflight` build it: the sandbox's flags (namespaces,
 * environment, the read-only system view, masks) and the spawnable command around them (setpriv first when given,
 * the flags on descriptor 3, the status and seccomp descriptors after it).
 */
import type { BoundFds, Mask, WrapOptions } from "../Bubblewrap.js"
import type { Network } from "../Sandbox.js"
import type { ExtraFd, PreparedCommand } from "./prepared.js"
import { LOCK_CONFLICT } from "./sandbox.js"

/** Host directories bound read-only (when present) so programs and their libraries run. */
export const systemDirs: ReadonlyArray<string> = ["/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc"]

const maskFlags = (mask: Mask): Array<string> =>
  mask.kind === "file"
    ? ["--ro-bind", "/dev/null", mask.path]
    : ["--tmpfs", mask.path, "--remount-ro", mask.path]

/** Everything but the workspace: namespaces, environment and the read-only system view. Order matters to bwrap. */
export const sandboxFlags = (
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

/** NUL-terminated strings, as bwrap's `--args FD` reads them. */
const nulSeparated = (args: ReadonlyArray<string>): Uint8Array =>
  new TextEncoder().encode(args.map((arg) => `${arg}\0`).join(""))

/**
 * The spawnable command: setpriv (when given), bwrap reading `flags` from descriptor 3, then `inner` on the command
 * line (bwrap takes the program only there; it is the workload's own argv, visible in its /proc entry anyway).
 * Status and seccomp descriptors follow, numbered in order.
 */
/** The host descriptors of `options.boundFds` in the order they are handed to the child. */
const boundInOrder = (options: WrapOptions | undefined): ReadonlyArray<number | undefined> => {
  const fds = options?.boundFds
  return [fds?.workspace, ...(fds?.readWriteBinds ?? []), ...(fds?.readOnlyBinds ?? [])]
}

/**
 * The child's descriptor number for each of `options.boundFds`, in the same shape: they follow descriptor 3 (the
 * flags), the status and the seccomp descriptors, in the order workspace, read-write binds, read-only binds.
 */
export const boundFdNumbers = (options: WrapOptions | undefined): BoundFds => {
  let next = 4 + (options?.onStatus === undefined ? 0 : 1) + (options?.seccomp === undefined ? 0 : 1)
  const number = (fd: number | undefined) => fd === undefined ? undefined : next++
  const fds = options?.boundFds
  return {
    workspace: number(fds?.workspace),
    readWriteBinds: (fds?.readWriteBinds ?? []).map(number),
    readOnlyBinds: (fds?.readOnlyBinds ?? []).map(number)
  }
}

export const bwrapCommand = (
  flags: ReadonlyArray<string>,
  inner: ReadonlyArray<string>,
  options: WrapOptions | undefined,
  /** The workspace (a path, or `/proc/self/fd/N` of its bound descriptor), locked shared with `options.flockPath`. */
  lockDir?: string
): PreparedCommand => {
  const extraFds: Array<ExtraFd> = [{ _tag: "Input", bytes: new Uint8Array(0) }]
  const fdFlags: Array<string> = []
  if (options?.onStatus !== undefined) {
    fdFlags.push("--json-status-fd", String(3 + extraFds.length))
    extraFds.push({ _tag: "Output", onData: options.onStatus })
  }
  if (options?.seccomp !== undefined) {
    fdFlags.push("--seccomp", String(3 + extraFds.length))
    extraFds.push({ _tag: "Input", bytes: options.seccomp })
  }
  for (const fd of boundInOrder(options)) if (fd !== undefined) extraFds.push({ _tag: "Directory", fd })
  extraFds[0] = { _tag: "Input", bytes: nulSeparated([...flags, ...fdFlags]) }
  const identity = options?.identity
  const bwrap = [options?.bwrapPath ?? "/usr/bin/bwrap", "--args", "3", "--", ...inner] as const
  const switchUser = identity === undefined
    ? []
    : [`--reuid=${identity.uid}`, `--regid=${identity.gid}`, "--clear-groups"]
  const setpriv = options?.setprivPath
  const sandbox = setpriv === undefined ? bwrap : [setpriv, ...switchUser, "--pdeathsig", "KILL", ...bwrap] as const
  const locked = setpriv === undefined || options?.flockPath === undefined || lockDir === undefined
    ? sandbox
    // flock holds the lock as the host's user and waits for the sandbox (--close: bwrap never gets the descriptor);
    // the first setpriv makes flock die with the host, the second makes bwrap die with flock.
    : [setpriv, "--pdeathsig", "KILL", options.flockPath, "--shared", "--nonblock", "--close",
      "--conflict-exit-code", String(LOCK_CONFLICT), lockDir, ...sandbox] as const
  // The spawner puts our descriptors at 3.. (replacing whatever was inherited there); above them, each inherited
  // one is covered with /dev/null, the numbers between left as they are.
  const close = options?.closeFds
  const stray = new Set((close?.fds ?? []).filter((fd) => fd >= 3 + extraFds.length))
  const top = Math.max(-1, ...stray)
  for (let fd = 3 + extraFds.length; close !== undefined && fd <= top; fd++) {
    extraFds.push(stray.has(fd) ? { _tag: "Directory", fd: close.devNull } : { _tag: "Inherited" })
  }
  return { argv: locked, cwd: "/", env: {}, extraFds }
}

/** `Bubblewrap.expandArgs`. */
export const expandArgs = (command: PreparedCommand): Array<string> => {
  const index = command.argv.indexOf("--args")
  const fd = command.extraFds?.[0]
  if (index < 0 || fd === undefined || fd._tag !== "Input") return [...command.argv]
  const flags = new TextDecoder().decode(fd.bytes).split("\0").slice(0, -1)
  return [...command.argv.slice(0, index), ...flags, ...command.argv.slice(index + 2)]
}

