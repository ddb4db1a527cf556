/**
 * Typed failures of the runner. Outcomes of a run (non-zero exit, timeout, signal, truncation) are data in the
 * result, never errors; these are the failures a caller can act on.
 */
import * as Schema from "effect/Schema"

/** The input was rejected while decoding; nothing was spawned. `issues` lists each problem with its path. */
export class InvalidInput extends Schema.TaggedError<InvalidInput>("effect-native-runner/InvalidInput")(
  "InvalidInput",
  {
    message: Schema.String,
    issues: Schema.Array(Schema.Struct({ path: Schema.String, message: Schema.String }))
  }
) {}

/**
 * Why a spawn failed. `SandboxSetup`: the sandbox itself could not be set up before the program started (a bind
 * source missing, a mount refused, a workspace that cannot be handed to the sandbox user); the message is bwrap's.
 */
export const SpawnFailure = Schema.Literal(
  "NotFound",
  "PermissionDenied",
  "CwdNotFound",
  "CwdNotDirectory",
  "SandboxSetup",
  "Unknown"
)
export type SpawnFailure = typeof SpawnFailure.Type

/** The process could not be started; `reason` says why. */
export class SpawnError extends Schema.TaggedError<SpawnError>("effect-native-runner/SpawnError")("SpawnError", {
  reason: SpawnFailure,
  command: Schema.String,
  cwd: Schema.String,
  message: Schema.String
}) {}

/** The requested sandbox cannot be used on this host; `message` says why and how to fix it. */
export class SandboxUnavailable extends Schema.TaggedError<SandboxUnavailable>(
  "effect-native-runner/SandboxUnavailable"
)("SandboxUnavailable", {
  backend: Schema.String,
  message: Schema.String,
  fix: Schema.String
}) {}

/** Every typed failure of `NativeRunner.exec`. */
export type NativeRunnerError = InvalidInput | SpawnError | SandboxUnavailable
