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
import { accessSync, constants, lstatSync, readlinkSync, realpathSync } from "node:fs"
import * as path from "node:path"
import * as Effect from "effect/Effect"
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

const isInside = (parent: string, child: string): boolean =>
  child === parent || child.startsWith(parent === "/" ? "/" : `${parent}/`)

/** The real path of `host` when it exists; the normalised path otherwise (the run then fails with bwrap's message). */
const settle = (host: string): string => {
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

/** The permission bits that apply to `user` (owner, else primary group: supplementary groups are cleared). */
const bitsFor = (stats: Stats, user: SandboxUser): number =>
  stats.uid === user.uid ? (stats.mode >> 6) & 7 : stats.gid === user.gid ? (stats.mode >> 3) & 7 : stats.mode & 7

/** Whether the program's user may create entries in a directory with these stats (write and search). */
const canWrite = (stats: Stats, file: string, user: SandboxUser | undefined): boolean => {
  if (user !== undefined) return (bitsFor(stats, user) & 3) === 3
  try {
    accessSync(file, constants.W_OK | constants.X_OK)
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

/** Why a writable place cannot be used, or `undefined` when the program's user can write it. */
const writableProblem = (dir: string, what: string, user: SandboxUser | undefined): string | undefined => {
  let stats: Stats
  try {
    stats = lstatSync(dir)
  } catch (error) {
    return `the ${what} ${dir} cannot be used: ${error instanceof Error ? error.message : String(error)}`
  }
  if (stats.isSymbolicLink()) return `the ${what} ${dir} is a symbolic link; give the directory itself`
  if (!stats.isDirectory()) return `the ${what} ${dir} is not a directory`
  if (canWrite(stats, dir, user)) return undefined
  return `${who(user)} cannot write the ${what} ${dir} (owner ${ownerOf(stats)}, mode ${octal(stats)}); ` +
    `the runner changes no owner or mode: ${prepareHint(dir)}`
}

/** Why `user` cannot reach `host` (a directory above it it cannot search), or `undefined`. */
export const reachProblem = (host: string, user: SandboxUser): string | undefined => {
  for (let dir = path.dirname(host); ; dir = path.dirname(dir)) {
    let stats: Stats
    try {
      stats = lstatSync(dir)
    } catch (error) {
      return `${host} cannot be reached: ${error instanceof Error ? error.message : String(error)}`
    }
    if ((bitsFor(stats, user) & 1) === 0) {
      return `the sandbox user ${user.uid}:${user.gid} cannot reach ${host}: ${dir} (owner ${ownerOf(stats)}, mode ` +
        `${octal(stats)}) is not searchable by it; put it under a directory it can search`
    }
    if (dir === "/") return undefined
  }
}

/** Why a volatile bind source cannot be used now: a component is a symlink (or missing), or `undefined`. */
const volatileProblem = (bind: SettledBind, source: VolatileSource): string | undefined => {
  let at = source.root
  for (const component of source.components) {
    at = path.join(at, component)
    let stats: Stats
    try {
      stats = lstatSync(at)
    } catch (error) {
      return `the bind source ${bind.host} cannot be used: ${error instanceof Error ? error.message : String(error)}`
    }
    if (stats.isSymbolicLink()) {
      return `the bind source ${bind.host} lies in a writable place and ${at} is a symbolic link; a bind source there ` +
        "is never reached through a link (the workload could point it anywhere)"
    }
  }
  return undefined
}

/** Every problem of this run's layout, for `user` (`undefined`: a non-root host, which runs as itself). */
export const layoutProblems = (layout: Layout, user: SandboxUser | undefined): Array<string> => {
  const problems: Array<string> = []
  const push = (problem: string | undefined) => {
    if (problem !== undefined) problems.push(problem)
  }
  push(writableProblem(layout.workspace.host, "workspace", user))
  for (const bind of layout.binds) {
    if (bind.volatile !== undefined) push(volatileProblem(bind, bind.volatile))
    if (bind.writable) push(writableProblem(bind.host, "read-write bind", user))
  }
  if (user !== undefined) {
    for (const host of [layout.workspace.host, ...layout.binds.map((bind) => bind.host)]) push(reachProblem(host, user))
  }
  return problems
}

/**
 * Checks, before anything is spawned, that the program's user can write the workspace and each read-write bind, can
 * reach every bind source, and that no bind source in a writable place is reached through a symlink. Reads only.
 */
export const checkLayout = (
  layout: Layout,
  user: SandboxUser | undefined,
  command: { readonly argv: ReadonlyArray<string>; readonly cwd: string }
): Effect.Effect<void, SpawnError> =>
  Effect.suspend(() => {
    const problems = layoutProblems(layout, user)
    return problems.length === 0 ? Effect.void : Effect.fail(
      new SpawnError({
        reason: "SandboxSetup",
        command: command.argv[0] ?? "",
        cwd: command.cwd,
        message: `the sandbox was not set up, nothing ran: ${problems.join("; ")}`
      })
    )
  })

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
    return Effect.succeed({ uid: stats.uid, gid: stats.gid })
  })
