/**
 * What `native-runner run` was asked to do: the parsed options validated into a `RunRequest`, and the one place a
 * request becomes `NativeRunner` options and an exec input.
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as path from "node:path"
import * as Audit from "../Audit.js"
import type { ExecInput, Keep, Spill } from "../Exec.js"
import type * as NativeRunner from "../NativeRunner.js"
import type * as Sandbox from "../Sandbox.js"
import { UsageError } from "./failures.js"
import type { RunConfig } from "./options.js"
import { checkForcedArgv, formatMillis } from "./parse.js"

/** The sandbox the user asked for. */
export type SandboxRequest =
  | { readonly backend: "none" }
  | {
    readonly backend: "bwrap"
    /** Absolute host directory, bound at `/workspace`. */
    readonly workspace: string
    readonly network: Sandbox.Network
    /** Given only with `--sandbox-user`; else the policy's default applies. */
    readonly user?: Sandbox.SandboxIdentity
    /** `false` only with `--no-seccomp`; absent means the policy's default (on). */
    readonly seccomp?: false
  }

/** Everything `native-runner run` was asked to do, validated, paths absolute. */
export interface RunRequest {
  readonly argv: readonly [string, ...Array<string>]
  /** One object at the end (`--json`); never with `jsonl`. */
  readonly json: boolean
  /** One object per event as it happens (`--jsonl`); never with `json`. */
  readonly jsonl: boolean
  readonly timeoutMs?: number | undefined
  readonly killGraceMs?: number | undefined
  readonly idleTimeoutMs?: number | undefined
  readonly maxStdoutBytes?: number | undefined
  readonly maxStderrBytes?: number | undefined
  /** Absent means the runner's default (head). */
  readonly keep?: Keep | undefined
  /** `--all`: the combined capture, in the JSON result; `--max-all` its cap (absent: the runner's default). */
  readonly all: boolean
  readonly maxAllBytes?: number | undefined
  /** The spill directory is absolute; it is checked to exist just before the run (`checkSpillDir`). */
  readonly spill?: Spill | undefined
  readonly cwd?: string | undefined
  readonly env: Readonly<Record<string, string>>
  readonly inheritEnv: "none" | "core" | "all"
  /** An absolute path, or "-" for our own stdin. */
  readonly stdinFile?: string | undefined
  /** `--stdin`: absent means "pass when our stdin is not a terminal". */
  readonly stdin?: "pass" | "none" | undefined
  readonly auditLog?: string | undefined
  /** Flags whose values are masked in audit records (`--redact-after`); `[]` for none. */
  readonly redactAfter: ReadonlyArray<string>
  /** Only the limits that were given; `{}` for none. They apply with or without a sandbox. */
  readonly limits: Sandbox.ResourceLimits
  readonly sandbox: SandboxRequest
}

/** What makes a parsed `run` command line bad usage, if anything. */
const usageProblem = (config: RunConfig, raw: ReadonlyArray<string>): string | undefined => {
  const forced = checkForcedArgv(raw, config.argv)
  if (Either.isLeft(forced)) return forced.left
  const sandboxOnly = [
    ["--workspace", Option.isSome(config.workspace)],
    ["--network", Option.isSome(config.network)],
    ["--sandbox-user", Option.isSome(config.sandboxUser)],
    ["--no-seccomp", config.noSeccomp]
  ] as const
  const given = sandboxOnly.find(([, isSet]) => isSet)
  // A sandbox setting that is silently ignored is worse than an error.
  if (config.sandbox === "none" && given !== undefined) return `${given[0]} only applies with --sandbox bwrap`
  if (config.json && config.jsonl) return "use either --json or --jsonl, not both"
  if (Option.isSome(config.stdin) && Option.isSome(config.stdinFile)) return "use either --stdin or --stdin-file, not both"
  if (Option.isSome(config.spillMax) && Option.isNone(config.spillDir)) return "--spill-max only applies with --spill-dir"
  if (config.all && !config.json && !config.jsonl) return "--all only applies with --json or --jsonl"
  if (Option.isSome(config.maxAll) && !config.all) return "--max-all only applies with --all"
  const maxCpu = Option.getOrUndefined(config.maxCpu)
  if (maxCpu !== undefined && maxCpu % 1000 !== 0) return `--max-cpu must be whole seconds (got ${formatMillis(maxCpu)})`
  return undefined
}

const only = <A extends object>(value: Option.Option<number>, field: (n: number) => A): A | {} =>
  Option.match(value, { onNone: () => ({}), onSome: field })

/** Only the limits that were given; `{}` for none. */
const limitsOf = (config: RunConfig): Sandbox.ResourceLimits => ({
  ...only(config.maxProcs, (maxProcesses) => ({ maxProcesses })),
  ...only(config.maxMemory, (maxMemoryBytes) => ({ maxMemoryBytes })),
  ...only(config.maxFileSize, (maxFileSizeBytes) => ({ maxFileSizeBytes })),
  ...only(config.maxCpu, (ms) => ({ maxCpuSeconds: ms / 1000 })),
  ...only(config.maxOpenFiles, (maxOpenFiles) => ({ maxOpenFiles }))
})

/** Validates what @effect/cli parsed into a `RunRequest`; `raw` is the command line, for the `--` rule. */
export const toRunRequest = (
  config: RunConfig,
  raw: ReadonlyArray<string>,
  hostCwd: string
): Either.Either<RunRequest, UsageError> => {
  const problem = usageProblem(config, raw)
  if (problem !== undefined) return Either.left(new UsageError({ message: problem, command: "run" }))
  const absolute = (p: Option.Option<string>) =>
    Option.getOrUndefined(Option.map(p, (s) => (s === "-" ? s : path.resolve(hostCwd, s))))
  return Either.right({
    argv: config.argv,
    json: config.json,
    jsonl: config.jsonl,
    env: Object.fromEntries(config.env),
    // A sandbox has its own PATH, HOME and TMPDIR and, like the library's sandbox, inherits nothing unless asked.
    inheritEnv: Option.getOrElse(config.inheritEnv, () => (config.sandbox === "bwrap" ? "none" : "core")),
    timeoutMs: Option.getOrUndefined(config.timeout),
    killGraceMs: Option.getOrUndefined(config.killGrace),
    idleTimeoutMs: Option.getOrUndefined(config.idleTimeout),
    maxStdoutBytes: Option.getOrUndefined(config.maxStdout),
    maxStderrBytes: Option.getOrUndefined(config.maxStderr),
    keep: Option.getOrUndefined(config.keep),
    all: config.all,
    maxAllBytes: Option.getOrUndefined(config.maxAll),
    spill: Option.getOrUndefined(Option.map(config.spillDir, (dir) => ({
      dir: path.resolve(hostCwd, dir),
      ...only(config.spillMax, (maxBytes) => ({ maxBytes }))
    }))),
    cwd: absolute(config.cwd),
    stdinFile: absolute(config.stdinFile),
    ...Option.match(config.stdin, { onNone: () => ({}), onSome: (stdin) => ({ stdin }) }),
    auditLog: absolute(config.auditLog),
    redactAfter: config.redactAfter,
    limits: limitsOf(config),
    sandbox: config.sandbox === "none" ? { backend: "none" } : {
      backend: "bwrap",
      workspace: path.resolve(hostCwd, Option.getOrElse(config.workspace, () => ".")),
      network: Option.getOrElse(config.network, () => "none" as const),
      ...Option.match(config.sandboxUser, { onNone: () => ({}), onSome: (user) => ({ user }) }),
      ...(config.noSeccomp ? { seccomp: false as const } : {})
    }
  })
}

/**
 * The one place CLI flags become `NativeRunner` options. A bwrap sandbox never falls back (`fallback: "fail"`):
 * when bubblewrap cannot be used the layer fails with `SandboxUnavailable` and nothing runs. Limits go into the
 * sandbox policy, or, without a sandbox, into `resourceLimits`. `--redact-after` flags become `redactArgv`.
 *
 * @example
 * toRunnerOptions(request) // { ..., sandbox: { policy: { workspace: "/srv/job", network: "none" }, fallback: "fail" } }
 */
export const toRunnerOptions = (request: RunRequest): NativeRunner.Options => {
  const hasLimits = Object.keys(request.limits).length > 0
  const base: NativeRunner.Options = {
    inheritEnv: request.inheritEnv,
    timeout: request.timeoutMs === undefined ? undefined : Duration.millis(request.timeoutMs),
    killGrace: request.killGraceMs === undefined ? undefined : Duration.millis(request.killGraceMs),
    maxStdoutBytes: request.maxStdoutBytes,
    maxStderrBytes: request.maxStderrBytes,
    cwd: request.cwd,
    ...(request.redactAfter.length === 0 ? {} : { redactArgv: Audit.redactAfter(request.redactAfter) })
  }
  const { sandbox } = request
  if (sandbox.backend === "none") return hasLimits ? { ...base, resourceLimits: request.limits } : base
  const policy: Sandbox.Policy = {
    workspace: sandbox.workspace,
    network: sandbox.network,
    ...(hasLimits ? { limits: request.limits } : {}),
    ...(sandbox.user === undefined ? {} : { user: sandbox.user }),
    ...(sandbox.seccomp === undefined ? {} : { seccomp: sandbox.seccomp })
  }
  return { ...base, sandbox: { policy, fallback: "fail" } }
}

/**
 * The exec input of a request: the command and what is about this run only (`--idle-timeout`, `--keep`,
 * `--spill-dir`); `stdin` is read by the caller (it may be our own stdin).
 */
export const toExecInput = (request: RunRequest, stdin: Uint8Array | undefined): ExecInput => ({
  argv: request.argv,
  ...(Object.keys(request.env).length === 0 ? {} : { env: request.env }),
  ...(stdin === undefined ? {} : { stdin }),
  ...(request.idleTimeoutMs === undefined ? {} : { idleTimeout: Duration.millis(request.idleTimeoutMs) }),
  ...(request.keep === undefined ? {} : { keep: request.keep }),
  ...(request.spill === undefined ? {} : { spill: request.spill }),
  ...(request.all ? { all: true } : {}),
  ...(request.maxAllBytes === undefined ? {} : { limits: { maxAllBytes: request.maxAllBytes } })
})
