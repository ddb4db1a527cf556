/**
 * Preparing a workspace, explicitly and before any workload touches it: `adoptWorkspace` gives an existing tree to
 * the sandbox user once (coreutils `chown -R --no-dereference`, which walks with directory descriptors and never
 * follows a link, under an exclusive `flock` that every sandboxed run on it holds shared), `makeWorkspace` creates a
 * fresh, empty one. `Sandbox.ts` re-exports both with their documentation.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { Stats } from "node:fs"
import { constants, lstatSync, readFileSync, realpathSync } from "node:fs"
import * as fs from "node:fs/promises"
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import type { SandboxUser } from "../Sandbox.js"
import { runProcess } from "./engine.js"
import { WorkspaceError } from "./errors.js"
import { resolveExecutable } from "./executables.js"
import { makeNodeSpawner } from "./nodeSpawner.js"
import { defaultSandboxUser, LOCK_CONFLICT } from "./sandbox.js"
import { bitsFor, isInside, passwdEntries, reachProblem } from "./workspaceAccess.js"

/** Where the helpers are; each defaults to the host's PATH. */
export interface PrepOptions {
  readonly user?: SandboxUser | undefined
  readonly chownPath?: string | undefined
  readonly flockPath?: string | undefined
  readonly findPath?: string | undefined
}

/** What a prepared workspace is. */
export interface PreparedWorkspace {
  readonly path: string
  readonly user: SandboxUser
}

/** System trees: never a workspace, nor anything in them. */
const systemTrees = ["/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
  "/sys", "/usr",
  // State that root later runs or trusts (package managers' scripts, logs, spools, caches).
  "/var/backups", "/var/cache", "/var/lib/apt", "/var/lib/dpkg", "/var/lib/systemd", "/var/lib/ucf", "/var/log",
  "/var/mail", "/var/spool"]
/** Shared directories that are never a workspace themselves (a directory below them may be). */
const sharedDirs = ["/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var", "/var/lib", "/var/tmp"]

const refused = (dir: string, message: string) => new WorkspaceError({ reason: "Refused", path: dir, message })
const failed = (dir: string, message: string) => new WorkspaceError({ reason: "Failed", path: dir, message })


/** Home directories of the host's accounts: giving one (or a tree holding one) to the sandbox user is refused. */
const homes = (): ReadonlyArray<string> =>
  passwdEntries().flatMap(({ home }) => home === "" || home === "/" || home === "/nonexistent" ? [] : [path.resolve(home)])

/** Mount points strictly below `dir` (a bind mount could bring any host tree into it). */
const mountsBelow = (dir: string): ReadonlyArray<string> => {
  let text = ""
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8")
  } catch {
    return []
  }
  return text.split("\n").map((line) => (line.split(" ")[4] ?? "").replace(/\\([0-7]{3})/g, (_, code: string) =>
    String.fromCharCode(parseInt(code, 8)))).filter((point) => point.startsWith(`${dir}/`))
}

/** True when `user` could rename entries of a directory with these stats (write and search; sticky: its own). */
const userCanWrite = (stats: Stats, user: SandboxUser) => (bitsFor(stats, user) & 3) === 3

/**
 * The directory as an absolute path with no symlink in any component (so what is checked is what is changed), a
 * directory, not a system path; `role` names it in messages.
 */
const checkedDir = (given: string, role: string): Effect.Effect<string, WorkspaceError> =>
  Effect.suspend(() => {
    const dir = path.resolve(given)
    let real: string
    let stats: Stats
    try {
      real = realpathSync(dir)
      stats = lstatSync(dir)
    } catch (error) {
      return Effect.fail(failed(dir, `${role} ${dir} cannot be used: ${error instanceof Error ? error.message : String(error)}`))
    }
    if (real !== dir) return Effect.fail(refused(dir, `${role} ${dir} has a symbolic link in its path (${real}); give the real path`))
    if (!stats.isDirectory()) return Effect.fail(refused(dir, `${role} ${dir} is not a directory`))
    return Effect.succeed(dir)
  })

/**
 * Why the path to `dir` could be changed by someone other than root while it is prepared, or `undefined`: every
 * directory above it must be root's and writable by no one else (a sticky one, like /tmp, only lets others rename
 * their own entries, and every entry on the path is root's). Else a local user could swap `dir` (or the directory
 * being created) for another one between the checks and the change.
 */
const ancestorsProblem = (dir: string): string | undefined => {
  for (let at = path.dirname(dir); ; at = path.dirname(at)) {
    const stats = lstatSync(at)
    if (stats.uid !== 0 || ((stats.mode & 0o022) !== 0 && (stats.mode & 0o1000) === 0)) {
      return `${at} (owner ${stats.uid}:${stats.gid}, mode ${(stats.mode & 0o7777).toString(8)}) could be changed by ` +
        "a user other than root while it is prepared; every directory above a workspace must be root's and " +
        "writable by no one else (or sticky)"
    }
    if (at === "/") return undefined
  }
}

/** Why `dir` may not be given to `user`, or `undefined`. */
const adoptProblem = (dir: string, user: SandboxUser): string | undefined => {
  if (sharedDirs.includes(dir) || systemTrees.some((tree) => isInside(tree, dir))) {
    return `${dir} is a system or shared directory`
  }
  const home = homes().find((home) => isInside(dir, home))
  if (home !== undefined) return `${dir} holds the home directory ${home} of an account`
  const mount = mountsBelow(dir)[0]
  if (mount !== undefined) return `${mount}, below it, is a mount point (another file system would be changed)`
  const parent = lstatSync(path.dirname(dir))
  if (userCanWrite(parent, user)) {
    return `its parent ${path.dirname(dir)} is writable by ${user.uid}:${user.gid}, which could then swap the ` +
      "workspace for a link; put it in a directory the sandbox user cannot write"
  }
  return ancestorsProblem(dir) ?? reachProblem(dir, user)
}

const locate = (name: string, explicit: string | undefined) =>
  Effect.flatMap(explicit === undefined ? resolveExecutable(name) : Effect.succeed(explicit), (found) =>
    found === undefined
      ? Effect.fail(failed("", `${name} (coreutils/util-linux/findutils) was not found on PATH`))
      : Effect.succeed(found))

/** Runs a helper with an empty environment from `/`, bounded; its exit code and stderr. */
const helper = (argv: readonly [string, ...Array<string>], timeout: Duration.DurationInput) =>
  runProcess(makeNodeSpawner(), { argv, cwd: "/", env: {} }, undefined, {
    maxStdoutBytes: 4096,
    maxStderrBytes: 16384,
    timeout: Duration.decode(timeout),
    killGrace: Duration.seconds(1),
    drainTimeout: Duration.seconds(1)
  }).pipe(
    Effect.map((outcome) => ({
      exitCode: outcome.exitCode,
      timedOut: outcome.timedOut,
      stdout: new TextDecoder().decode(outcome.stdout.bytes()),
      stderr: new TextDecoder().decode(outcome.stderr.bytes()).trim()
    })),
    Effect.mapError((error) => failed("", `${argv[0]} could not be started: ${error.message}`))
  )

const notRoot = (dir: string) =>
  refused(dir, "only root can give a tree to another user; a non-root host runs the sandbox as itself, so a " +
    "directory this user can write is a workspace already")

/**
 * Holds an exclusive lock on `dir` for the scope: `flock --exclusive --nonblock DIR sh -c 'echo locked; exec cat'`,
 * whose stdin the host keeps open (closing it, or this process dying, ends it and releases the lock). Fails with
 * `InUse` at once when a run (or anything else) holds the lock.
 */
const holdExclusive = (flock: string, dir: string) =>
  Effect.acquireRelease(
    Effect.async<ChildProcess, WorkspaceError>((resume) => {
      const child = spawn(flock, ["--exclusive", "--nonblock", "--conflict-exit-code", String(LOCK_CONFLICT), dir,
        "/bin/sh", "-c", "echo locked; exec cat"], { cwd: "/", env: {}, stdio: ["pipe", "pipe", "pipe"] })
      let stderr = ""
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString()
      })
      child.stdout.once("data", () => resume(Effect.succeed(child)))
      child.once("error", (error) => resume(Effect.fail(failed(dir, `flock could not be started: ${error.message}`))))
      child.once("exit", (code) =>
        resume(Effect.fail(
          code === LOCK_CONFLICT
            ? new WorkspaceError({
              reason: "InUse",
              path: dir,
              message: `${dir} is not adopted: its lock is held by another process (a sandboxed run using it, or ` +
                "another adoption); try again when none holds it"
            })
            : failed(dir, `flock ${dir} failed (exit ${code}): ${stderr.trim()}`)
        )))
    }),
    (child) =>
      Effect.async<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        child.stdin?.end()
      })
  )

/** Refuses the tree unless only root can change it, and unless no regular file in it has another link. */
const checkTree = (find: string, dir: string) =>
  Effect.gen(function*() {
    // Only root may change the tree while it is adopted: a directory someone else may write could get a hard link to
    // a host file, or a directory swapped in, after the checks and before chown reaches it.
    const open = yield* helper([find, dir, "-xdev", "-type", "d", "(", "!", "-uid", "0", "-o", "-perm", "/022", ")",
      "-print", "-quit"], "5 minutes")
    if (open.exitCode !== 0) return yield* Effect.fail(failed(dir, `find failed: ${open.stderr}`))
    if (open.stdout !== "") {
      return yield* Effect.fail(refused(dir, `${dir} is not adopted: ${open.stdout.trim()} is a directory someone ` +
        "other than root may write (a hard link or a swapped directory could be put in while it is adopted); adopt " +
        "a tree only root can change, or copy it into a fresh workspace (native-runner workspace new)"))
    }
    // A regular file with several links may be a host file outside the tree: chown would change that file too.
    const linked = yield* helper([find, dir, "-xdev", "-type", "f", "-links", "+1", "-print", "-quit"], "5 minutes")
    if (linked.exitCode !== 0) return yield* Effect.fail(failed(dir, `find failed: ${linked.stderr}`))
    if (linked.stdout !== "") {
      return yield* Effect.fail(refused(dir, `${dir} is not adopted: ${linked.stdout.trim()} has several hard links ` +
        "(it may be a file outside the tree); remove or copy it first"))
    }
  })

/** `Sandbox.adoptWorkspace`. */
export const adoptWorkspace = (
  given: string,
  options: PrepOptions = {}
): Effect.Effect<PreparedWorkspace, WorkspaceError> =>
  Effect.scoped(Effect.gen(function*() {
    const user = options.user ?? defaultSandboxUser
    const dir = yield* checkedDir(given, "the workspace")
    if (process.getuid?.() !== 0) return yield* Effect.fail(notRoot(dir))
    const [find, flock, chown] = [
      yield* locate("find", options.findPath),
      yield* locate("flock", options.flockPath),
      yield* locate("chown", options.chownPath)
    ]
    // The lock first: no run starts on the tree, and none is running, from the checks to the end of chown.
    yield* holdExclusive(flock, dir)
    const problem = adoptProblem(dir, user)
    if (problem !== undefined) return yield* Effect.fail(refused(dir, `${dir} is not adopted: ${problem}`))
    yield* checkTree(find, dir)
    const owner = `${user.uid}:${user.gid}`
    const chowned = yield* helper([chown, "-R", "--no-dereference", owner, dir], "30 minutes")
    if (chowned.exitCode !== 0 || chowned.timedOut) {
      return yield* Effect.fail(failed(dir, `chown -R ${owner} ${dir} failed: ${chowned.stderr || "timed out"}`))
    }
    yield* ownerMayWrite(dir)
    return { path: dir, user }
  }))

/** The owner of the (now adopted) top directory gets rwx on it, through a descriptor that follows no link. */
const ownerMayWrite = (dir: string) =>
  Effect.tryPromise({
    try: async () => {
      const handle = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW)
      try {
        const stats = await handle.stat()
        if ((stats.mode & 0o700) !== 0o700) await handle.chmod((stats.mode & 0o7777) | 0o700)
      } finally {
        await handle.close()
      }
    },
    catch: (error) => failed(dir, `cannot give the owner of ${dir} write access: ${String(error)}`)
  })

/** `Sandbox.makeWorkspace`. */
export const makeWorkspace = (
  parentGiven: string,
  options: Pick<PrepOptions, "user"> = {}
): Effect.Effect<PreparedWorkspace, WorkspaceError> =>
  Effect.gen(function*() {
    const parent = yield* checkedDir(parentGiven, "the parent")
    const isRoot = process.getuid?.() === 0
    const self = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }
    const user = isRoot ? options.user ?? defaultSandboxUser : self
    if (!isRoot && options.user !== undefined && (options.user.uid !== self.uid || options.user.gid !== self.gid)) {
      return yield* Effect.fail(notRoot(parent))
    }
    const stats = lstatSync(parent)
    if (isRoot && userCanWrite(stats, user)) {
      return yield* Effect.fail(refused(parent, `the parent ${parent} is writable by ${user.uid}:${user.gid}, which ` +
        "could swap the workspace for a link; use a parent the sandbox user cannot write"))
    }
    const swappable = isRoot ? ancestorsProblem(path.join(parent, "workspace")) : undefined
    if (swappable !== undefined) return yield* Effect.fail(refused(parent, swappable))
    const unreachable = isRoot ? reachProblem(path.join(parent, "x"), user) : undefined
    if (unreachable !== undefined) return yield* Effect.fail(refused(parent, unreachable))
    const dir = yield* Effect.tryPromise({
      try: () => fs.mkdtemp(path.join(parent, "workspace-")),
      catch: (error) => failed(parent, `cannot create a workspace in ${parent}: ${String(error)}`)
    })
    if (!isRoot) return { path: dir, user }
    // A directory this call just made, in a parent the sandbox user cannot write: changed through its descriptor.
    yield* Effect.tryPromise({
      try: async () => {
        const handle = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW)
        try {
          await handle.chown(user.uid, user.gid)
          await handle.chmod(0o700)
        } finally {
          await handle.close()
        }
      },
      catch: (error) => failed(dir, `cannot give ${dir} to ${user.uid}:${user.gid}: ${String(error)}`)
    }).pipe(Effect.tapError(() => Effect.promise(() => fs.rmdir(dir).catch(() => undefined))))
    return { path: dir, user }
  })
