/**
 * Handing the workspace (and read-write binds) to the sandbox user for a run, when the host is root: the program runs
 * as an unprivileged uid, which must still write where the policy says it may. Ownership goes to the sandbox user when
 * the first run on a path starts and back to the path's original owner when the last one ends, so between runs the
 * tree looks as the host left it: each entry handed over gets its own owner back, what the sandbox made goes to the
 * owner of the workspace, and what already belonged to the sandbox user stays so.
 *
 * What is never touched: anything across a mount point (another device), symlink targets (links are changed
 * themselves, never followed), and, on the way in, regular files with more than one link (a hard link could be a
 * host file outside the workspace). On the way back only entries owned by the sandbox user change, and set-uid/set-gid
 * bits are cleared on them, so nothing the sandbox made becomes a privileged program of the original owner.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Stats } from "node:fs"
import { chmod, lchown, lstat, readdir, readFile } from "node:fs/promises"
import * as path from "node:path"
import { SpawnError } from "./errors.js"
import type { SandboxUser } from "../Sandbox.js"

interface Owner {
  readonly uid: number
  readonly gid: number
}

interface Holding {
  /** The owner of `host` itself: what entries the sandbox created are given to. */
  readonly original: Owner
  /** The owner of every entry that was handed over, to give each its own back. */
  readonly changed: ReadonlyMap<string, Owner>
  /** Every entry that existed before: those not handed over are left as they are on the way back. */
  readonly existing: ReadonlySet<string>
  readonly user: SandboxUser
  count: number
}

// Per host path, across every layer of this process; one walk at a time keeps the counts and walks consistent.
const holdings = new Map<string, Holding>()
const lock = Effect.unsafeMakeSemaphore(1)

/** Mount points strictly below `root` (a bind mount of the same file system has the same device number). */
const mountsBelow = async (root: string): Promise<ReadonlySet<string>> => {
  const text = await readFile("/proc/self/mountinfo", "utf8").catch(() => "")
  // Field 5 is the mount point, with spaces and friends octal-escaped.
  const points = text.split("\n").map((line) => line.split(" ")[4] ?? "")
    .map((point) => point.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))))
  return new Set(points.filter((point) => point.startsWith(`${root}/`)))
}

/**
 * Visits `root` and every entry below it on the same mount, parents before children, never following links: another
 * device or a mount point (a bind mount could bring in any host directory) is not entered.
 */
const walk = async (root: string, visit: (entry: string, stats: Stats) => Promise<void>): Promise<void> => {
  const rootStats = await lstat(root)
  await visit(root, rootStats)
  if (!rootStats.isDirectory()) return
  const mounts = await mountsBelow(root)
  const pending = [root]
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    const names = await readdir(dir)
    await Promise.all(names.map(async (name) => {
      const entry = path.join(dir, name)
      const stats = await lstat(entry)
      if (stats.dev !== rootStats.dev || mounts.has(entry)) return
      await visit(entry, stats)
      if (stats.isDirectory()) pending.push(entry)
    }))
  }
}

const giveTo = (user: SandboxUser, changed: Map<string, Owner>, existing: Set<string>) =>
async (entry: string, stats: Stats) => {
  existing.add(entry)
  if (stats.isFile() && stats.nlink > 1) return
  if (stats.uid === user.uid && stats.gid === user.gid) return
  changed.set(entry, { uid: stats.uid, gid: stats.gid })
  await lchown(entry, user.uid, user.gid)
}

/**
 * Entries still owned by the sandbox user go back: to their own owner if they were handed over, to the owner of the
 * workspace if the sandbox made them. Entries that were the sandbox user's before the run stay so.
 */
const giveBack = (user: SandboxUser, holding: Pick<Holding, "original" | "changed" | "existing">) =>
async (entry: string, stats: Stats) => {
  if (stats.uid !== user.uid && stats.gid !== user.gid) return
  const before = holding.changed.get(entry)
  if (before === undefined && holding.existing.has(entry)) return
  if (stats.isFile() && (stats.mode & 0o6000) !== 0) await chmod(entry, stats.mode & 0o1777)
  const owner = before ?? holding.original
  await lchown(entry, owner.uid, owner.gid)
}

const setupError = (host: string, what: string, error: unknown) =>
  new SpawnError({
    reason: "SandboxSetup",
    command: "bwrap",
    cwd: host,
    message: `cannot ${what} ${host}: ${error instanceof Error ? error.message : String(error)}`
  })

const acquire = (host: string, user: SandboxUser): Effect.Effect<void, SpawnError> =>
  lock.withPermits(1)(Effect.tryPromise({
    try: async () => {
      const held = holdings.get(host)
      if (held !== undefined) {
        if (held.user.uid !== user.uid || held.user.gid !== user.gid) {
          throw new Error(`it is in use by a run as ${held.user.uid}:${held.user.gid}`)
        }
        held.count++
        return
      }
      const stats = await lstat(host)
      const changed = new Map<string, Owner>()
      const existing = new Set<string>()
      const holding: Holding = { original: { uid: stats.uid, gid: stats.gid }, changed, existing, user, count: 1 }
      await walk(host, giveTo(user, changed, existing)).catch(async (error: unknown) => {
        // Undo what was handed before the failure, then report it.
        await walk(host, giveBack(user, holding)).catch(() => undefined)
        throw error
      })
      holdings.set(host, holding)
    },
    catch: (error) => setupError(host, `hand to uid ${user.uid}`, error)
  }))

const release = (host: string): Effect.Effect<void> =>
  lock.withPermits(1)(Effect.promise(async () => {
    const held = holdings.get(host)
    if (held === undefined || --held.count > 0) return
    holdings.delete(host)
    // Best effort: a path removed meanwhile has nothing left to give back.
    await walk(host, giveBack(held.user, held)).catch(() => undefined)
  }))

/** True when `user` may search a directory with these stats (owner, group, then other execute bit). */
const searchable = (stats: Stats, user: SandboxUser): boolean =>
  (stats.uid === user.uid ? stats.mode & 0o100 : stats.gid === user.gid ? stats.mode & 0o010 : stats.mode & 0o001) !== 0

/**
 * Fails with `SpawnError` (`SandboxSetup`) naming the first directory above a bind source that `user` cannot search:
 * bwrap runs as that user and must reach every source path (root's 0700 temp and home directories are the usual
 * case). Said plainly here instead of bwrap's "Can't find source path ...: Permission denied".
 */
export const checkReachable = (hosts: ReadonlyArray<string>, user: SandboxUser): Effect.Effect<void, SpawnError> =>
  Effect.forEach(hosts, (host) =>
    Effect.tryPromise({
      try: async () => {
        for (let dir = path.dirname(host); ; dir = path.dirname(dir)) {
          const stats = await lstat(dir)
          if (!searchable(stats, user)) {
            throw new Error(
              `the sandbox user ${user.uid}:${user.gid} cannot reach it: ${dir} (mode ${
                (stats.mode & 0o777).toString(8)
              }, owner ${stats.uid}:${stats.gid}) is not searchable by it; put it under a directory it can search`
            )
          }
          if (dir === "/") return
        }
      },
      catch: (error) => setupError(host, "bind", error)
    }), { discard: true })

/**
 * Hands each of `hosts` to `user` for as long as the scope is open. Fails with `SpawnError` (`SandboxSetup`) when
 * ownership cannot be changed (a read-only file system, no CAP_CHOWN), before anything runs.
 */
export const handOver = (
  hosts: ReadonlyArray<string>,
  user: SandboxUser
): Effect.Effect<void, SpawnError, Scope.Scope> =>
  Effect.forEach(hosts, (host) => Effect.acquireRelease(acquire(host, user), () => release(host)), { discard: true })
