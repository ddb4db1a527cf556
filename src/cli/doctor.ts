/**
 * `native-runner doctor`: facts are gathered with the checks the live layer itself makes (bubblewrap's preflight
 * with this host's masks, the `--max-procs` route and its pids cgroup); the table and verdict are a pure function of
 * them, so the verdict cannot contradict what `run --sandbox bwrap` does.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { existsSync } from "node:fs"
import { readFile } from "node:fs/promises"
import * as path from "node:path"
import type { NativeRunnerError, SandboxUnavailable } from "../Errors.js"
import * as NativeRunner from "../NativeRunner.js"
import type { SandboxIdentity, SandboxUser } from "../Sandbox.js"
import { pidsCgroup, processLimitRoute } from "../internal/resourceLimits.js"
import { makeRunCgroups } from "../internal/runCgroup.js"
import { preflightHost, resolveSandboxHost, type SandboxHost } from "../internal/sandboxHost.js"
import { deniedSyscalls } from "../internal/seccomp.js"
import { defaultSandboxUser } from "../internal/sandbox.js"
import { layoutProblems, resolveIdentity, settleLayout } from "../internal/workspaceAccess.js"

/** How `--max-procs` is enforced here; for the cgroup route, whether a pids cgroup could be created. */
export type ProcessLimitFact =
  | { readonly route: "rlimit" }
  | { readonly route: "cgroup"; readonly pidsCgroup: Either.Either<string, SandboxUnavailable> }

/** What `doctor` found on this host. Probe fields: `Right` with a detail line, or `Left` with why it failed. */
export interface DoctorFacts {
  readonly nodeVersion: string
  readonly isRoot: boolean
  readonly bwrapVersion: Either.Either<string, string>
  /** What `run --sandbox bwrap` settles when its layer is built: helper paths, identity, seccomp program. */
  readonly sandboxHost: Either.Either<SandboxHost, SandboxUnavailable>
  /** `Bubblewrap.preflight` with this host's masks: the check `run --sandbox bwrap` makes before running anything. */
  readonly bwrapPreflight: Either.Either<string, SandboxUnavailable>
  readonly processLimit: ProcessLimitFact
  readonly prlimitVersion: Either.Either<string, string>
  /** Contents of the /proc/sys files, trimmed; absent when the file does not exist. */
  readonly unprivilegedUsernsClone: string | undefined
  readonly maxUserNamespaces: string | undefined
  readonly apparmorRestrictUserns: string | undefined
  /** Who a sandboxed program runs as here (`undefined`: this process's own user), or why that cannot be settled. */
  readonly identity: Either.Either<SandboxUser | undefined, SandboxUnavailable>
  /**
   * The cgroup version runs get here (a cgroup per run) and whether it has `cgroup.kill` (what kills a dead host's
   * direct spawns), or `undefined` when this host can make none.
   */
  readonly runCgroups: { readonly version: 1 | 2; readonly kill: boolean } | undefined
  /** With `--workspace`: the directory and why a run there would be refused (empty: accepted). */
  readonly workspace: { readonly dir: string; readonly problems: ReadonlyArray<string> } | undefined
}

/** One line of the doctor table. */
export interface DoctorRow {
  readonly check: string
  readonly status: "ok" | "warn" | "FAIL" | "info" | "skip"
  readonly detail: string
}

/** The table, and whether `run --sandbox bwrap` would work. */
export interface DoctorReport {
  readonly rows: ReadonlyArray<DoctorRow>
  readonly bwrapUsable: boolean
  readonly bwrapVerdict: string
}

const oneLine = (text: string): string => text.replace(/\s*\n\s*/g, " ").trim()

const row = (check: string, status: DoctorRow["status"], detail: string): DoctorRow => ({ check, status, detail })

const processLimitRow = (facts: DoctorFacts): DoctorRow => {
  const fact = facts.processLimit
  if (fact.route === "rlimit") {
    return Either.isRight(facts.prlimitVersion)
      ? row("max-procs", "ok", "RLIMIT_NPROC (counts every process of this user)")
      : row("max-procs", "warn", "RLIMIT_NPROC, but prlimit is missing")
  }
  return Either.match(fact.pidsCgroup, {
    onRight: (root) => row("max-procs", "ok", `pids cgroup (root): ${root} is writable`),
    onLeft: (error) => row("max-procs", "FAIL", `pids cgroup (root): ${oneLine(error.message)}`)
  })
}

const sandboxHostRows = (facts: DoctorFacts): Array<DoctorRow> =>
  Either.match(facts.sandboxHost, {
    onLeft: (error) => [row("sandbox paths", "FAIL", oneLine(error.message))],
    onRight: (host) => [
      row(
        "sandbox paths",
        "ok",
        `bwrap ${host.bwrap}, setpriv ${host.setpriv ?? "(none: no parent-death signal)"}, prlimit ${
          host.prlimit ?? "(none: --max-* unavailable)"
        }`
      ),
      Either.match(facts.identity, {
        onLeft: (error) => row("sandbox user", "FAIL", `${oneLine(error.message)} ${oneLine(error.fix)}`),
        onRight: (identity) =>
          identity === undefined
            ? row("sandbox user", "ok", "this process's own user (not root); it must be able to write the workspace")
            : row(
              "sandbox user",
              "ok",
              `${identity.uid}:${identity.gid} (host is root; never root inside; the runner chowns nothing: the ` +
                "workspace and read-write binds must be writable by it, see 'native-runner workspace')"
            )
      }),
      ...(facts.workspace === undefined ? [] : [
        facts.workspace.problems.length === 0
          ? row("workspace", "ok", `${facts.workspace.dir}: accepted`)
          : row("workspace", "FAIL", facts.workspace.problems.join("; "))
      ]),
      host.seccomp === undefined
        ? row("seccomp", "warn", "off (policy seccomp: false)")
        : row(
          "seccomp",
          "ok",
          `default filter (${host.seccomp.arch}): ${
            deniedSyscalls(host.seccomp.arch).length
          } syscalls refused, namespace flags of clone/unshare refused, clone3 ENOSYS`
        )
    ]
  })

/** Judges the facts. The verdict is `Bubblewrap.preflight`'s: "unavailable" carries the message `run` would print. */
export const doctorReport = (facts: DoctorFacts): DoctorReport => {
  const major = Number(/^v(\d+)/.exec(facts.nodeVersion)?.[1] ?? 0)
  const rows: Array<DoctorRow> = [
    row("node", major >= 20 ? "ok" : "warn", major >= 20 ? facts.nodeVersion : `${facts.nodeVersion} (needs >= 20)`),
    Either.match(facts.bwrapVersion, {
      onRight: (version) => row("bwrap present", "ok", version),
      onLeft: (why) => row("bwrap present", "FAIL", `${why} (install bubblewrap)`)
    }),
    ...sandboxHostRows(facts),
    Either.match(facts.bwrapPreflight, {
      onRight: (detail) => row("bwrap works", "ok", detail),
      onLeft: (error) => row("bwrap works", "FAIL", oneLine(error.message))
    }),
    facts.unprivilegedUsernsClone === undefined
      ? row("userns clone", "info", "kernel.unprivileged_userns_clone absent (no such switch on this kernel)")
      : row(
        "userns clone",
        facts.unprivilegedUsernsClone !== "0" ? "ok" : facts.isRoot ? "info" : "FAIL",
        `kernel.unprivileged_userns_clone = ${facts.unprivilegedUsernsClone}${
          facts.unprivilegedUsernsClone === "0" && facts.isRoot ? " (root does not need it)" : ""
        }`
      ),
    facts.maxUserNamespaces === undefined
      ? row("max userns", "warn", "user.max_user_namespaces unreadable")
      : row(
        "max userns",
        facts.maxUserNamespaces === "0" ? "FAIL" : "ok",
        `user.max_user_namespaces = ${facts.maxUserNamespaces}${facts.maxUserNamespaces === "0" ? " (disabled)" : ""}`
      ),
    ...(facts.apparmorRestrictUserns === undefined ? [] : [
      row(
        "apparmor userns",
        facts.apparmorRestrictUserns === "0" || facts.isRoot ? "ok" : "warn",
        `kernel.apparmor_restrict_unprivileged_userns = ${facts.apparmorRestrictUserns}`
      )
    ]),
    Either.match(facts.prlimitVersion, {
      onRight: (version) => row("prlimit present", "ok", version),
      onLeft: (why) => row("prlimit present", "warn", `${why} (--max-* limits need it)`)
    }),
    processLimitRow(facts),
    facts.runCgroups === undefined
      ? row("teardown", "warn", "no cgroup per run here (not root, no writable hierarchy): a process that leaves its " +
        "group (setsid, a double fork) outlives its run, and this process if killed; --sandbox bwrap's PID namespace " +
        "holds it")
      : row(
        "teardown",
        "ok",
        `a cgroup per run (v${facts.runCgroups.version}${facts.runCgroups.version === 1 ? " freezer" : ""}): ` +
          "setsid and double-fork escapes die with the run" + (facts.runCgroups.kill
            ? ", and with a killed host (the spawn helper, or for direct spawns a watcher, writes cgroup.kill)"
            : "; with a killed host, only through the spawn helper (the library's default, not the CLI's direct " +
              "spawns: a later start sweeps those)") +
          "; --sandbox bwrap adds a PID namespace"
      )
  ]
  // Limits are checked per run, not when the layer is built: the sandbox works, runs using them fail (never unlimited).
  const caveats = [
    ...(Either.isLeft(facts.prlimitVersion) ? ["--max-* limits fail here (prlimit missing)"] : []),
    ...(facts.processLimit.route === "cgroup" && Either.isLeft(facts.processLimit.pidsCgroup)
      ? ["--max-procs fails here (no writable pids cgroup)"]
      : [])
  ]
  const bwrapVerdict = Either.match(facts.bwrapPreflight, {
    onLeft: (error) => `unavailable: ${oneLine(error.message)}`,
    onRight: () => caveats.length === 0 ? "available" : `available, but ${caveats.join("; ")}`
  })
  const workspaceOk = facts.workspace === undefined || facts.workspace.problems.length === 0
  return {
    rows,
    bwrapUsable: Either.isRight(facts.bwrapPreflight) && Either.isRight(facts.identity) && workspaceOk,
    bwrapVerdict: workspaceOk || Either.isLeft(facts.bwrapPreflight)
      ? bwrapVerdict
      : `available, but not with the workspace ${facts.workspace?.dir ?? ""}`
  }
}

/** The doctor table, padded columns, then the verdict line. */
export const renderDoctor = (report: DoctorReport): string => {
  const width = Math.max(...report.rows.map((row) => row.check.length))
  const lines = report.rows.map((row) => `${row.check.padEnd(width)}  ${row.status.padEnd(4)}  ${row.detail}`)
  return [...lines, "", `--sandbox bwrap: ${report.bwrapVerdict}`].join("\n") + "\n"
}

const firstLine = (bytes: Uint8Array): string => new TextDecoder().decode(bytes).trim().split("\n")[0] ?? ""

// A probe is any command: `Right` with its first output line when it exits 0, else `Left` with why not.
const probe = (
  argv: readonly [string, ...Array<string>]
): Effect.Effect<Either.Either<string, string>, NativeRunnerError, NativeRunner.NativeRunner> =>
  NativeRunner.exec({ argv, timeout: "5 seconds" }).pipe(
    Effect.map((result): Either.Either<string, string> =>
      result.exitCode === 0
        ? Either.right(firstLine(result.stdout) || `${argv.join(" ")}: exit 0`)
        : Either.left(
          `${result.timedOut ? "timed out" : `exit ${result.exitCode}`}${
            firstLine(result.stderr) === "" ? "" : `: ${firstLine(result.stderr)}`
          }`
        )
    ),
    Effect.catchTag("SpawnError", (error) =>
      Effect.succeed(Either.left(error.reason === "NotFound" ? "not found on PATH" : error.message)))
  )

const readSysctl = (file: string): Effect.Effect<string | undefined> =>
  Effect.promise(() => readFile(file, "utf8").then((text) => text.trim(), () => undefined))

/** The live layer's own sandbox check, as `NativeRunner.makeNode` runs it for `sandbox.policy`. */
const bwrapPreflight = (host: Either.Either<SandboxHost, SandboxUnavailable>) =>
  Effect.gen(function*() {
    const settled = yield* host
    yield* preflightHost(settled)
    return `preflight passed: the sandbox of 'run --sandbox bwrap' runs /bin/true (${settled.masks.length} host secrets masked)`
  }).pipe(Effect.either)

/** What `--max-procs` will use; as root, a pids cgroup is created and removed again to prove the hierarchy writable. */
const processLimitFact: Effect.Effect<ProcessLimitFact> = Effect.flatMap(
  processLimitRoute,
  (route): Effect.Effect<ProcessLimitFact> =>
    route === "rlimit"
      ? Effect.succeed({ route })
      : Effect.scoped(pidsCgroup(10)).pipe(
        Effect.map((cgroup) => path.dirname(cgroup.path)),
        Effect.either,
        Effect.map((result) => ({ route, pidsCgroup: result }))
      )
)

/**
 * Gathers the facts on this host. `bwrapPath` (default `bwrap` on `PATH`), `user` and `seccomp` are what the layer
 * would be given.
 */
export const doctorFacts = (
  options: {
    readonly bwrapPath?: string
    readonly user?: SandboxIdentity
    readonly seccomp?: boolean
    readonly workspace?: string
  } = {}
): Effect.Effect<DoctorFacts, NativeRunnerError> =>
  Effect.gen(function*() {
    const isRoot = process.getuid?.() === 0
    const named = options.user === "workspace-owner" ? undefined : options.user
    const sandboxHost = yield* Effect.either(resolveSandboxHost(
      { workspace: "/", ...(named === undefined ? {} : { user: named }), ...(options.seccomp === undefined ? {} : { seccomp: options.seccomp }) },
      { bwrapPath: options.bwrapPath }
    ))
    const workspace = options.workspace === undefined ? undefined : path.resolve(options.workspace)
    const policy = { workspace: workspace ?? "/", ...(options.user === undefined ? {} : { user: options.user }) }
    const identity = yield* Effect.either(resolveIdentity(policy, isRoot, defaultSandboxUser))
    return {
      nodeVersion: process.version,
      isRoot,
      bwrapVersion: yield* probe([Either.isRight(sandboxHost) ? sandboxHost.right.bwrap : options.bwrapPath ?? "bwrap", "--version"]),
      sandboxHost,
      bwrapPreflight: yield* bwrapPreflight(sandboxHost),
      processLimit: yield* processLimitFact,
      prlimitVersion: yield* probe(["prlimit", "--version"]),
      unprivilegedUsernsClone: yield* readSysctl("/proc/sys/kernel/unprivileged_userns_clone"),
      maxUserNamespaces: yield* readSysctl("/proc/sys/user/max_user_namespaces"),
      apparmorRestrictUserns: yield* readSysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
      identity,
      runCgroups: yield* Effect.scoped(Effect.map(makeRunCgroups, (made) =>
        made === undefined
          ? undefined
          : { version: made.version, kill: made.version === 2 && existsSync(path.join(made.dir, "cgroup.kill")) })),
      workspace: workspace === undefined ? undefined : {
        dir: workspace,
        problems: Either.isLeft(identity)
          ? [oneLine(identity.left.message)]
          : layoutProblems(settleLayout(policy), identity.right)
      }
    }
  }).pipe(Effect.provide(NativeRunner.layerNode({ maxStdoutBytes: 4096, maxStderrBytes: 4096 })))
