/**
 * The live layer's policy: resource limits (prlimit, a pids cgroup as root) and the bubblewrap sandbox, checked once
 * when the layer is built (fail closed) and applied to every command as a pure argv rewrite.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as Bubblewrap from "../Bubblewrap.js"
import { type InvalidInput, type SandboxUnavailable, SpawnError, type SpawnFailure } from "../Errors.js"
import { toInvalidInput } from "../Exec.js"
import * as Sandbox from "../Sandbox.js"
import type { Outcome } from "./engine.js"
import { checkCwd } from "./live.js"
import type { PreparedCommand } from "./prepared.js"
import { limitExceeded, pidsCgroup, prlimitArgv, processLimitRoute } from "./resourceLimits.js"
import { plainPolicy, type Policy, type PreparedRun } from "./runner.js"

/** The sandbox of a live layer. */
export interface SandboxOptions {
  /** What the sandboxed command may see and use. */
  readonly policy: Sandbox.Policy
  /** The bwrap executable (default `"bwrap"` on `PATH`). */
  readonly bwrapPath?: string | undefined
  /**
   * When bubblewrap is unusable: `"fail"` (default) fails the layer with `SandboxUnavailable`; `"unsandboxed"`
   * logs a warning and runs commands directly on the host (resource limits still apply).
   */
  readonly fallback?: "fail" | "unsandboxed" | undefined
}

/** Live-only options: a sandbox, or resource limits without one. */
export interface PolicyOptions {
  readonly sandbox?: SandboxOptions | undefined
  /** Resource limits of every run without a sandbox (with one, use `sandbox.policy.limits`). */
  readonly resourceLimits?: Sandbox.ResourceLimits | undefined
}

const PolicyOptionsData = Schema.Struct({
  sandbox: Schema.optional(Schema.Struct({
    policy: Sandbox.Policy,
    bwrapPath: Schema.optional(Schema.String),
    fallback: Schema.optional(Schema.Literal("fail", "unsandboxed"))
  })),
  resourceLimits: Schema.optional(Sandbox.ResourceLimits)
})

/** PATH, HOME and TMPDIR inside the sandbox; nothing of the host's environment is inherited there by default. */
export const SANDBOX_BASE_ENV: Readonly<Record<string, string>> = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  HOME: Sandbox.workspaceMount,
  TMPDIR: "/tmp"
}

// A wrapper (bwrap, prlimit, the cgroup shell) reports a program it could not exec on stderr, not as a spawn error.
const WRAPPED_EXEC_FAILURE =
  /^(?:bwrap: execvp [^\n]*|prlimit: failed to execute [^\n]*|(?:\/bin\/)?sh: \d+: exec: [^\n]*): (No such file or directory|not found|Permission denied)\s*$/

/** Turns "the wrapper could not exec the program" back into the `SpawnError` a direct spawn would give. */
const wrappedSpawnFailure = (command: PreparedCommand, outcome: Outcome): SpawnError | undefined => {
  if (outcome.exitCode !== 1 && outcome.exitCode !== 126 && outcome.exitCode !== 127) return undefined
  if (outcome.stdout.total() !== 0) return undefined
  const stderr = new TextDecoder().decode(outcome.stderr.bytes())
  const match = WRAPPED_EXEC_FAILURE.exec(stderr)
  if (match === null) return undefined
  const reason: SpawnFailure = match[1] === "Permission denied" ? "PermissionDenied" : "NotFound"
  return new SpawnError({
    reason,
    command: command.argv[0],
    cwd: command.cwd,
    message: reason === "NotFound"
      ? `command not found: ${command.argv[0]}`
      : `permission denied: ${command.argv[0]}`
  })
}

const limitsPolicy = (
  limits: Sandbox.ResourceLimits | undefined,
  wrap: (command: PreparedCommand) => Either.Either<PreparedCommand, InvalidInput>,
  useCgroup: boolean
): Policy["prepare"] =>
(command) =>
  Effect.gen(function*() {
    const wrapped = yield* wrap(command)
    yield* checkCwd(command)
    const cgroup = useCgroup && limits?.maxProcesses !== undefined ? yield* pidsCgroup(limits.maxProcesses) : undefined
    const run: PreparedRun = {
      command: cgroup === undefined ? wrapped : cgroup.enter(wrapped),
      finish: (outcome) =>
        Effect.gen(function*() {
          const failure = wrapped === command && cgroup === undefined ? undefined : wrappedSpawnFailure(command, outcome)
          if (failure !== undefined) return yield* Effect.fail(failure)
          if (limits === undefined) return undefined
          const refusedForks = cgroup === undefined ? 0 : yield* cgroup.refusedForks
          return limitExceeded(limits, { exitCode: outcome.exitCode, signal: outcome.signal, refusedForks })
        })
    }
    return run
  })

const withPrlimit = (limits: Sandbox.ResourceLimits) => (command: PreparedCommand) => {
  const prefix = prlimitArgv(limits)
  const [program, ...rest] = prefix
  return Either.right<PreparedCommand>(
    program === undefined ? command : { ...command, argv: [program, ...rest, ...command.argv] }
  )
}

/**
 * Builds the policy of a live layer. With a sandbox, runs bubblewrap's preflight first and fails with
 * `SandboxUnavailable` (or falls back, only if asked to) when it cannot confine commands here.
 */
export const makePolicy = (
  options: PolicyOptions
): Effect.Effect<Policy, InvalidInput | SandboxUnavailable> =>
  Effect.gen(function*() {
    yield* Schema.decodeUnknown(PolicyOptionsData, { errors: "all" })(options).pipe(
      Effect.mapError(toInvalidInput("invalid runner options"))
    )
    const useCgroup = (yield* processLimitRoute) === "cgroup"
    const unsandboxed = (limits: Sandbox.ResourceLimits | undefined): Policy =>
      limits === undefined ? plainPolicy : { sandbox: "none", prepare: limitsPolicy(limits, withPrlimit(limits), useCgroup) }
    const sandbox = options.sandbox
    if (sandbox === undefined) return unsandboxed(options.resourceLimits)

    const bwrapOptions = sandbox.bwrapPath === undefined ? {} : { bwrapPath: sandbox.bwrapPath }
    const masks = yield* Bubblewrap.hostMasks()
    const available = yield* Effect.either(Bubblewrap.preflight({ ...bwrapOptions, masks }))
    if (Either.isLeft(available)) {
      if (sandbox.fallback !== "unsandboxed") return yield* Effect.fail(available.left)
      yield* Effect.logWarning(`sandbox unavailable, running unsandboxed as asked: ${available.left.message}`)
      return unsandboxed(sandbox.policy.limits)
    }
    const { policy } = sandbox
    return {
      sandbox: "bwrap",
      network: policy.network ?? "none",
      defaultCwd: policy.workspace,
      defaultInheritEnv: "none",
      baseEnv: SANDBOX_BASE_ENV,
      prepare: limitsPolicy(
        policy.limits,
        (command) => Bubblewrap.wrap(policy, command, { ...bwrapOptions, masks }),
        useCgroup
      )
    }
  })
