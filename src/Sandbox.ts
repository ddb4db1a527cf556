/**
 * The sandbox policy as data: what a sandboxed command may see, write and use. Backends (`Bubblewrap`) turn a
 * `Policy` into the argv to spawn; nothing here touches the host, except the two workspace preparers at the end
 * (`adoptWorkspace`, `makeWorkspace`), which an operator calls before any workload uses the directory.
 */
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type { WorkspaceError } from "./internal/errors.js"
import * as internal from "./internal/sandbox.js"
import * as prep from "./internal/workspacePrep.js"

/** An absolute host or sandbox path; relative paths would depend on the runner's own cwd. */
export const AbsolutePath = Schema.String.pipe(
  Schema.filter((path) => path.startsWith("/") && !path.includes("\0"), {
    message: () => "must be an absolute path without NUL bytes"
  })
)

/** Network access inside the sandbox: `"none"` (own empty namespace, only loopback) or `"host"` (shared). */
export const Network = Schema.Literal("none", "host")
export type Network = typeof Network.Type

/** Which sandbox backend a run uses; `"none"` runs the command directly on the host. */
export const SandboxMode = Schema.Literal("none", "bwrap")
export type SandboxMode = typeof SandboxMode.Type

const PositiveInt = Schema.Int.pipe(Schema.positive())

/**
 * Per-run resource limits. Every field is optional; an unset field means "no limit".
 *
 * - `maxProcesses`: processes and threads of the run together, the sandbox's own helpers included (bwrap uses two).
 *   Enforced by a pids cgroup when running as root (`RLIMIT_NPROC` does not apply to uid 0), else by `RLIMIT_NPROC`,
 *   which counts every process of the user.
 * - `maxMemoryBytes`: address space (`RLIMIT_AS`) of each process; allocations fail beyond it.
 * - `maxFileSizeBytes`: largest file a process may write (`RLIMIT_FSIZE`); a write past it raises SIGXFSZ.
 * - `maxCpuSeconds`: CPU time of each process (`RLIMIT_CPU`); SIGXCPU at the limit, SIGKILL one second later.
 * - `maxOpenFiles`: open file descriptors per process (`RLIMIT_NOFILE`); `open` fails with EMFILE beyond it.
 */
export const ResourceLimits = Schema.Struct({
  maxProcesses: Schema.optional(PositiveInt),
  maxMemoryBytes: Schema.optional(PositiveInt),
  maxFileSizeBytes: Schema.optional(PositiveInt),
  maxCpuSeconds: Schema.optional(PositiveInt),
  maxOpenFiles: Schema.optional(PositiveInt)
})
export type ResourceLimits = typeof ResourceLimits.Type

/** Which limit ended (or visibly constrained) a run. */
export const LimitExceeded = Schema.Literal("cpu", "fileSize", "memory", "processes", "openFiles")
export type LimitExceeded = typeof LimitExceeded.Type

/** A host path made visible inside the sandbox, at `sandbox` (default: the same path). */
export const Bind = Schema.Struct({
  host: AbsolutePath,
  sandbox: Schema.optional(AbsolutePath)
})
export type Bind = typeof Bind.Type

/**
 * The unprivileged host identity a sandboxed program runs as when the host process is root. uid or gid 0 is
 * refused: host root inside the sandbox still owns root's files (`/proc/sys` among them) even without capabilities.
 */
export const SandboxUser = Schema.Struct({
  // 4294967295 is (uid_t)-1, "no change" to setresuid, and larger values wrap: either would leave the program root.
  uid: Schema.Int.pipe(Schema.between(1, 4_294_967_294, {
    message: () => "uid must be a whole number from 1 to 4294967294 (never root)"
  })),
  gid: Schema.Int.pipe(Schema.between(1, 4_294_967_294, {
    message: () => "gid must be a whole number from 1 to 4294967294 (never root)"
  }))
})
export type SandboxUser = typeof SandboxUser.Type

/** The default sandbox user of a root host: `nobody:nogroup` (65534:65534). */
export const defaultSandboxUser: SandboxUser = internal.defaultSandboxUser

/**
 * Who a root host's sandboxed program runs as: a named unprivileged `SandboxUser`, or `"workspace-owner"`, the owner
 * of the workspace directory when the layer is built (refused when that is root).
 */
export const SandboxIdentity = Schema.Union(SandboxUser, Schema.Literal("workspace-owner"))
export type SandboxIdentity = typeof SandboxIdentity.Type

/**
 * What a sandboxed command may see and use.
 *
 * - `workspace`: host directory bound read-write at `/workspace`, the default cwd inside.
 * - `readOnlyBinds` / `readWriteBinds`: further host paths; they must exist. Read-only binds are applied after
 *   read-write ones, so a read-only bind nested in a writable one (e.g. `/workspace/.git`) stays read-only.
 * - `network`: default `"none"`.
 * - `env`: variables set inside the sandbox; they win over the command's own environment.
 * - `limits`: resource limits of the run.
 * - `user`: when the host process is root, the host uid:gid the program runs as (default 65534:65534, supplementary
 *   groups cleared), or `"workspace-owner"`. The runner never changes an owner or mode: the workspace and each
 *   read-write bind must already be directories that user can write (`adoptWorkspace`, `makeWorkspace`), else the
 *   exec fails with `SpawnError` `SandboxSetup` before anything runs. A non-root host runs the sandbox as itself.
 * - `seccomp`: the default seccomp filter (default `true`); `false` only for debugging.
 *
 * @example
 * const policy: Sandbox.Policy = { workspace: "/home/me/project", network: "none", limits: { maxProcesses: 64 } }
 */
export const Policy = Schema.Struct({
  workspace: AbsolutePath,
  readOnlyBinds: Schema.optional(Schema.Array(Bind)),
  readWriteBinds: Schema.optional(Schema.Array(Bind)),
  network: Schema.optional(Network),
  env: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String })),
  limits: Schema.optional(ResourceLimits),
  user: Schema.optional(SandboxIdentity),
  seccomp: Schema.optional(Schema.Boolean)
})
export type Policy = typeof Policy.Type

/** Where the workspace appears inside the sandbox. */
export const workspaceMount = internal.workspaceMount

/** A workspace made ready for the sandbox user. */
export type PreparedWorkspace = prep.PreparedWorkspace

/**
 * Gives an existing tree to the sandbox user (default 65534:65534), once, before any workload touches it: coreutils
 * `chown -R --no-dereference` (it walks with directory descriptors and never follows a link) under an exclusive
 * `flock` on the directory, which every sandboxed run on it holds shared: adoption is refused (`InUse`) while a run
 * holds it, and a run started during adoption fails with `SandboxSetup`. Refused (`WorkspaceError` `Refused`) for
 * `/`, system and shared directories (`/usr`, `/etc`, `/home`, `/tmp`, ...), a tree holding an account's home, a
 * path with a symlink, a tree with a mount point or a hard-linked file inside, a parent the sandbox user could write
 * (it could swap the workspace for a link), a tree the user could not reach, and on a non-root host.
 *
 * @example
 * yield* Sandbox.adoptWorkspace("/srv/jobs/42", { user: { uid: 10001, gid: 10001 } })
 */
export const adoptWorkspace: (
  dir: string,
  options?: prep.PrepOptions
) => Effect.Effect<PreparedWorkspace, WorkspaceError> = prep.adoptWorkspace

/**
 * Creates a fresh, empty workspace (`PARENT/workspace-XXXXXX`, mode 0700) owned by the sandbox user (default
 * 65534:65534; a non-root host: itself) and returns its path. The parent must be a directory the sandbox user can
 * reach but not write. Fails with `WorkspaceError`.
 *
 * @example
 * const { path } = yield* Sandbox.makeWorkspace("/srv/jobs")
 */
export const makeWorkspace: (
  parent: string,
  options?: Pick<prep.PrepOptions, "user">
) => Effect.Effect<PreparedWorkspace, WorkspaceError> = prep.makeWorkspace
