/**
 * Where a sandboxed run may write, checked and never changed. The runner gives nothing to the sandbox user: the
 * workspace and each read-write bind must already be a directory that user can write (see `Sandbox.adoptWorkspace`,
 * `Sandbox.makeWorkspace`, `user: "workspace-owner"`), or the exec fails with `SandboxSetup` before anything runs.
 *
 * Why nothing is handed over any more: a walk done as root over a tree the workload controls cannot be made safe in
 * Node (no `openat`/`fchownat`): a directory swapped for a symlink between `lstat` and `lchown` redirects the change
 * to any host file. Checks here only read (`lstat`), and what they decide is enforced again by the kernel: bwrap runs
 * as the sandbox user, so a bind it makes through a swapped path reaches only what that user could reach anyway.
 */
import type { Stats } from "node:fs"
import {
  accessSync,
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  readFileSync,
  readlinkSync,
  realpathSync
} from "node:fs"
import * as path from "node:path"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Bind, Policy, SandboxUser } from "../Sandbox.js"
import { SandboxUnavailable, SpawnError } from "./errors.js"

/** A bind whose source the workload can change between runs (it lies in a writable place): checked at each run. */
export interface VolatileSource {
  /** The writable place it lies in, resolved when the layer was built. */
  readonly root: string
  /** The components below `root`, none of which may be a symlink at run time. */
  readonly components: ReadonlyArray<string>
}

/** A bind of the policy with its host path settled. */
export interface SettledBind {
  readonly host: string
  readonly sandbox: string
  readonly writable: boolean
  readonly volatile: VolatileSource | undefined
}

/** The policy's host paths, settled once when the layer is built. */
export interface Layout {
  /** The workspace as given (cwds are mapped against it) and as resolved (what is bound and locked). */
  readonly workspace: { readonly given: string; readonly host: string }
  readonly binds: ReadonlyArray<SettledBind>
}

/** True when `child` is `parent` or below it (paths already normalised). */
export const isInside = (parent: string, child: string): boolean =>
  child === parent || child.startsWith(parent === "/" ? "/" : `${parent}/`)

/** The real path of `host` when it exists; the normalised path otherwise (the run then fails with bwrap's message). */
export const settle = (host: string): string => {
  const normal = path.resolve(host)
  try {
    return realpathSync(normal)
  } catch {
    return normal
  }
}

const partsOf = (file: string) => file.split("/").filter((part) => part !== "" && part !== ".")

/**
 * Resolves `given` one component at a time, following symlinks only until it enters one of `roots` (a writable
 * place): from there on nothing is followed, and the rest is returned as a volatile source to check at each run.
 */
const resolveBind = (given: string, roots: ReadonlyArray<string>): { host: string; volatile: VolatileSource | undefined } => {
  const pending = partsOf(path.resolve(given))
  let at = "/"
  for (let hops = 0; pending.length > 0;) {
    const root = roots.find((candidate) => isInside(candidate, at))
    if (root !== undefined) {
      const host = path.join(at, ...pending)
      return { host, volatile: { root, components: partsOf(path.relative(root, host)) } }
    }
    const part = pending.shift() ?? ""
    const next = part === ".." ? path.dirname(at) : path.join(at, part)
    let link: string | undefined
    try {
      link = lstatSync(next).isSymbolicLink() ? readlinkSync(next) : undefined
    } catch {
      // Missing: bound as given; bwrap's "Can't find source path" then fails the run with SandboxSetup.
      return { host: path.join(next, ...pending), volatile: undefined }
    }
    if (link === undefined || ++hops > 40) {
      at = next
      continue
    }
    pending.unshift(...partsOf(link))
    if (path.isAbsolute(link)) at = "/"
  }
  const root = roots.find((candidate) => candidate !== at && isInside(candidate, at))
  return { host: at, volatile: root === undefined ? undefined : { root, components: partsOf(path.relative(root, at)) } }
}

/**
 * Settles the policy's paths: the workspace and binds outside any writable place are resolved now (so `/x`, `/x/`
 * and a symlink to it are one workspace); a bind source inside the workspace or inside a read-write bind, which the
 * workload can replace between runs, keeps its components, to be checked without following symlinks at each run.
 */
export const settleLayout = (policy: Policy): Layout => {
  const workspace = settle(policy.workspace)
  // Read-write binds outside the workspace are writable places too, for binds nested in them.
  const roots = [workspace]
  for (const bind of policy.readWriteBinds ?? []) {
    const settled = resolveBind(bind.host, [workspace])
    if (settled.volatile === undefined) roots.push(settled.host)
  }
  const settleBind = (bind: Bind, writable: boolean): SettledBind => {
    const { host, volatile } = resolveBind(bind.host, roots)
    return { host, sandbox: bind.sandbox ?? bind.host, writable, volatile }
  }
  return {
    workspace: { given: path.resolve(policy.workspace), host: workspace },
    binds: [
      ...(policy.readWriteBinds ?? []).map((bind) => settleBind(bind, true)),
      ...(policy.readOnlyBinds ?? []).map((bind) => settleBind(bind, false))
    ]
  }
}

/** The policy bwrap is given: the settled host paths in place of the given ones. */
export const settledPolicy = (policy: Policy, layout: Layout): Policy => ({
  ...policy,
  workspace: layout.workspace.host,
  readWriteBinds: layout.binds.filter((bind) => bind.writable).map(({ host, sandbox }) => ({ host, sandbox })),
  readOnlyBinds: layout.binds.filter((bind) => !bind.writable).map(({ host, sandbox }) => ({ host, sandbox }))
})

const octal = (stats: Stats) => (stats.mode & 0o7777).toString(8).padStart(3, "0")
const ownerOf = (stats: Stats) => `${stats.uid}:${stats.gid}`
const messageOf = (error: unknown) => error instanceof Error ? error.message : String(error)

/** The permission bits that apply to `user` (owner, else primary group: supplementary groups are cleared). */
export const bitsFor = (stats: Stats, user: SandboxUser): number =>
  stats.uid === user.uid ? (stats.mode >> 6) & 7 : stats.gid === user.gid ? (stats.mode >> 3) & 7 : stats.mode & 7

/** Whether the program's user may create entries in the opened directory (write and search). */
const canWrite = (stats: Stats, fd: number, user: SandboxUser | undefined): boolean => {
  if (user !== undefined) return (bitsFor(stats, user) & 3) === 3
  try {
    // A non-root host runs the sandbox as itself: ask the kernel, on the opened directory (no path looked up again).
    accessSync(`/proc/self/fd/${fd}`, constants.W_OK | constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** The user a message names: the sandbox user, or this process's own for a non-root host. */
const who = (user: SandboxUser | undefined) =>
  user === undefined ? `this process's user ${process.getuid?.() ?? "?"}` : `the sandbox user ${user.uid}:${user.gid}`

export const prepareHint = (dir: string) =>
  `prepare it once with \`native-runner workspace adopt ${dir}\` (Sandbox.adoptWorkspace), create a fresh one with ` +
  "`native-runner workspace new PARENT` (Sandbox.makeWorkspace), or run as its owner with " +
  "`user: \"workspace-owner\"` (`--sandbox-user workspace-owner`)"

/** Why `user` cannot reach `host` (a directory above it it cannot search), or `undefined`. */
export const reachProblem = (host: string, user: SandboxUser): string | undefined => {
  for (let dir = path.dirname(host); ; dir = path.dirname(dir)) {
    let stats: Stats
    try {
      stats = lstatSync(dir)
    } catch (error) {
      return `${host} cannot be reached: ${messageOf(error)}`
    }
    if ((bitsFor(stats, user) & 1) === 0) {
      return `the sandbox user ${user.uid}:${user.gid} cannot reach ${host}: ${dir} (owner ${ownerOf(stats)}, mode ` +
        `${octal(stats)}) is not searchable by it; put it under a directory it can search`
    }
    if (dir === "/") return undefined
  }
}

/** The first component of a volatile source that is a symlink (or missing), in words; `undefined` when none is. */
const linkedComponent = (source: VolatileSource): string | undefined => {
  let at = source.root
  for (const component of source.components) {
    at = path.join(at, component)
    try {
      if (lstatSync(at).isSymbolicLink()) return `${at} is a symbolic link`
    } catch (error) {
      return `${at}: ${messageOf(error)}`
    }
  }
  return undefined
}

/** A place a run binds by descriptor: the workspace or a bind source. */
interface Place {
  readonly host: string
  readonly what: string
  readonly writable: boolean
  readonly volatile: VolatileSource | undefined
}

const placeOf = (bind: SettledBind): Place => ({
  host: bind.host,
  what: bind.writable ? "read-write bind" : "read-only bind",
  writable: bind.writable,
  volatile: bind.volatile
})

const closeQuietly = (fd: number) => {
  try {
    closeSync(fd)
  } catch {
    // Already closed: nothing to release.
  }
}

/**
 * Opens a place as it is now and checks it, reading only: the descriptor must name exactly `place.host` (a symlink
 * in any component, or a path swapped while opening, names something else), be a directory (a read-only bind may
 * be a regular file) and, when writable, be writable by the program's user. Returns the descriptor or the problem.
 */
const openPlace = (place: Place, user: SandboxUser | undefined): number | string => {
  const linked = place.volatile === undefined ? undefined : linkedComponent(place.volatile)
  const viaLink = (detail: string) =>
    `the ${place.what} ${place.host} lies in a writable place and ${detail}; a bind source there is never reached ` +
    "through a link (the workload could point it anywhere)"
  if (linked !== undefined) return viaLink(linked)
  let fd: number
  try {
    // O_NOFOLLOW for the last component, O_NONBLOCK so a FIFO put there cannot stall the host.
    fd = openSync(place.host, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch (error) {
    const code = error instanceof Error && "code" in error ? error.code : undefined
    return code === "ELOOP"
      ? (place.volatile === undefined ? `the ${place.what} ${place.host} is a symbolic link; give the directory itself` : viaLink(`${place.host} is a symbolic link`))
      : `the ${place.what} ${place.host} cannot be used: ${messageOf(error)}`
  }
  const check = (): string | undefined => {
    let opened: string
    try {
      opened = readlinkSync(`/proc/self/fd/${fd}`)
    } catch (error) {
      // ENAMETOOLONG: what was opened lies deeper than a path can name, so not where it should.
      return viaLink(`it was reached through a link (${messageOf(error)})`)
    }
    if (opened !== place.host) return viaLink(`it was reached through a link (it is ${opened})`)
    const stats = fstatSync(fd)
    if (!stats.isDirectory() && (place.writable || !stats.isFile())) {
      return `the ${place.what} ${place.host} is not a directory${place.writable ? "" : " or a regular file"}`
    }
    if (!place.writable || canWrite(stats, fd, user)) return undefined
    return `${who(user)} cannot write the ${place.what} ${place.host} (owner ${ownerOf(stats)}, mode ${octal(stats)}); ` +
      `the runner changes no owner or mode: ${prepareHint(place.host)}`
  }
  let problem: string | undefined
  try {
    problem = check()
  } catch (error) {
    problem = `the ${place.what} ${place.host} cannot be used: ${messageOf(error)}`
  }
  if (problem === undefined) return fd
  closeQuietly(fd)
  return problem
}

/** The descriptors a run binds: one per place and use (bwrap closes each after its mount). */
export interface OpenedLayout {
  readonly workspace: number
  readonly readWriteBinds: ReadonlyArray<number>
  readonly readOnlyBinds: ReadonlyArray<number>
}

const allOf = (opened: OpenedLayout): ReadonlyArray<number> =>
  [opened.workspace, ...opened.readWriteBinds, ...opened.readOnlyBinds]

/**
 * Opens the workspace and every bind source (each use its own descriptor) and checks them; the descriptors, or
 * every problem found (then nothing is left open). Every source is bound by descriptor: one outside the workspace
 * can be swapped too, by whoever may write a directory above it.
 */
const inspect = (layout: Layout, user: SandboxUser | undefined) => {
  const opened: Array<number> = []
  const problems: Array<string> = []
  const open = (place: Place): number => {
    const fd = openPlace(place, user)
    if (typeof fd === "string") {
      problems.push(fd)
      return -1
    }
    opened.push(fd)
    return fd
  }
  let result: OpenedLayout | undefined
  try {
    result = {
      workspace: open({ host: layout.workspace.host, what: "workspace", writable: true, volatile: undefined }),
      readWriteBinds: layout.binds.filter((bind) => bind.writable).map((bind) => open(placeOf(bind))),
      readOnlyBinds: layout.binds.filter((bind) => !bind.writable).map((bind) => open(placeOf(bind)))
    }
  } catch (error) {
    // Nothing above should throw; if it does, what was opened is closed and the run refused, never a leak.
    problems.push(`the sandbox's directories could not be checked: ${messageOf(error)}`)
  }
  if (user !== undefined) {
    // bwrap (as the sandbox user) still looks every source up by path, a descriptor's too, before checking it.
    for (const host of new Set([layout.workspace.host, ...layout.binds.map((bind) => bind.host)])) {
      const problem = reachProblem(host, user)
      if (problem !== undefined) problems.push(problem)
    }
  }
  if (problems.length > 0 || result === undefined) {
    opened.forEach(closeQuietly)
    return { opened: undefined, problems }
  }
  return { opened: result, problems }
}

/** Every problem of this layout for `user` (`undefined`: a non-root host, which runs as itself); for `doctor`. */
export const layoutProblems = (layout: Layout, user: SandboxUser | undefined): ReadonlyArray<string> => {
  const { opened, problems } = inspect(layout, user)
  if (opened !== undefined) allOf(opened).forEach(closeQuietly)
  return problems
}

/**
 * Before anything is spawned: opens the workspace and every bind source, checks them (see `openPlace`) and keeps
 * them open for the scope, so bwrap binds exactly what was checked (`--bind-fd`, `--ro-bind-fd`). Fails with `SandboxSetup` naming every problem. Reads only: no owner or mode is changed.
 */
export const openLayout = (
  layout: Layout,
  user: SandboxUser | undefined,
  command: { readonly argv: ReadonlyArray<string>; readonly cwd: string }
): Effect.Effect<OpenedLayout, SpawnError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.suspend(() => {
      const { opened, problems } = inspect(layout, user)
      return opened !== undefined ? Effect.succeed(opened) : Effect.fail(
        new SpawnError({
          reason: "SandboxSetup",
          command: command.argv[0] ?? "",
          cwd: command.cwd,
          message: `the sandbox was not set up, nothing ran: ${problems.join("; ")}`
        })
      )
    }),
    (opened) => Effect.sync(() => allOf(opened).forEach(closeQuietly))
  )

/**
 * The identity of a root host's sandboxed program: `user`, the default, or with `"workspace-owner"` the owner of the
 * workspace (refused when that is root). A non-root host runs the sandbox as itself (`undefined`).
 */
export const resolveIdentity = (
  policy: Policy,
  isRoot: boolean,
  fallback: SandboxUser
): Effect.Effect<SandboxUser | undefined, SandboxUnavailable> =>
  Effect.suspend(() => {
    if (!isRoot) return Effect.succeed(undefined)
    if (policy.user !== "workspace-owner") return Effect.succeed(policy.user ?? fallback)
    const workspace = settle(policy.workspace)
    let stats: Stats
    try {
      stats = lstatSync(workspace)
    } catch (error) {
      return Effect.fail(new SandboxUnavailable({
        backend: "bwrap",
        message: `user "workspace-owner": the workspace ${workspace} cannot be read: ${
          error instanceof Error ? error.message : String(error)
        }`,
        fix: "Create the workspace before building the layer, or name the sandbox user."
      }))
    }
    if (!stats.isDirectory() || stats.uid === 0 || stats.gid === 0) {
      return Effect.fail(new SandboxUnavailable({
        backend: "bwrap",
        message: `user "workspace-owner": the workspace ${workspace} is ${
          stats.isDirectory() ? `owned by ${ownerOf(stats)}, and a sandbox never runs as root` : "not a directory"
        }.`,
        fix: `Give the workspace to an unprivileged owner first (\`native-runner workspace adopt ${workspace} ` +
          "--sandbox-user UID:GID`), or name the sandbox user."
      }))
    }
    // The owner's own primary group (the directory's may be one the owner is not in, e.g. from a set-gid parent).
    const gid = primaryGroupOf(stats.uid) ?? (stats.gid === stats.uid ? stats.gid : undefined)
    if (gid === undefined || gid === 0) {
      return Effect.fail(new SandboxUnavailable({
        backend: "bwrap",
        message: `user "workspace-owner": the owner ${stats.uid} of ${workspace} has ${
          gid === 0 ? "group 0 as its primary group" : "no account in /etc/passwd, and the directory's group is not its uid"
        }, so its group cannot be settled safely.`,
        fix: "Name the sandbox user (uid and gid) instead."
      }))
    }
    return Effect.succeed({ uid: stats.uid, gid })
  })

/** The primary gid of `uid` in /etc/passwd, or `undefined` without an entry. */
const primaryGroupOf = (uid: number): number | undefined => passwdEntries().find((entry) => entry.uid === uid)?.gid

/** The accounts of /etc/passwd (uid, primary gid, home); none where it cannot be read. */
export const passwdEntries = (): ReadonlyArray<{ readonly uid: number; readonly gid: number; readonly home: string }> => {
  try {
    return readFileSync("/etc/passwd", "utf8").split("\n").flatMap((line) => {
      const [, , uid, gid, , home] = line.split(":")
      const entry = { uid: Number(uid), gid: Number(gid), home: home ?? "" }
      return uid === undefined || !Number.isInteger(entry.uid) || !Number.isInteger(entry.gid) ? [] : [entry]
    })
  } catch {
    return []
  }
}
