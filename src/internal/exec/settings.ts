/** Step 1 of an exec: from the decoded input and the layer's options to what the engine runs with. */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as path from "node:path"
import { SpawnError } from "../errors.js"
import type { ExecInput } from "../../Exec.js"
import type { RunSettings } from "../engine.js"
import type { RunnerOptions } from "../runner.js"

/** The run's limits: the input's where given, else the layer's (whose decode applied the defaults). */
export const settingsOf = (input: ExecInput, options: RunnerOptions): RunSettings => {
  const idle = input.idleTimeout ?? options.idleTimeout
  return {
    maxStdoutBytes: input.limits?.maxStdoutBytes ?? options.maxStdoutBytes,
    maxStderrBytes: input.limits?.maxStderrBytes ?? options.maxStderrBytes,
    timeout: input.timeout !== undefined
      ? Duration.decode(input.timeout)
      : input.limits?.timeoutMs !== undefined
      ? Duration.millis(input.limits.timeoutMs)
      : Duration.decode(options.timeout),
    killGrace: Duration.decode(input.killGrace ?? options.killGrace),
    drainTimeout: Duration.decode(options.drainTimeout),
    ...(idle === undefined ? {} : { idleTimeout: Duration.decode(idle) }),
    keep: input.keep ?? options.keep,
    ...((input.all ?? options.all) ? { maxAllBytes: input.limits?.maxAllBytes ?? options.maxAllBytes } : {})
  }
}

/**
 * The exec's cwd. `base` is undefined when the host's own cwd was already gone when the layer was built: then only an
 * absolute cwd works, anything else is the `SpawnError` a deleted cwd gives.
 */
export const resolveCwd = (
  base: string | undefined,
  cwd: string | undefined,
  program: string
): Effect.Effect<string, SpawnError> =>
  base !== undefined
    ? Effect.succeed(cwd === undefined ? base : path.resolve(base, cwd))
    : cwd !== undefined && path.isAbsolute(cwd)
    ? Effect.succeed(cwd)
    : Effect.fail(
      new SpawnError({
        reason: "CwdNotFound",
        command: program,
        cwd: cwd ?? "",
        message: "the host process's working directory no longer exists: give an absolute cwd"
      })
    )
