/**
 * The runner's error classes, declared once here so internal code can construct them; `Errors.ts` re-exports each
 * under the same name with its documentation.
 */
import * as Data from "effect/Data"
import type { ExecResult } from "../Exec.js"
import * as Schema from "effect/Schema"

export class InvalidInput extends Schema.TaggedError<InvalidInput>("effect-native-runner/InvalidInput")(
  "InvalidInput",
  {
    message: Schema.String,
    issues: Schema.Array(Schema.Struct({ path: Schema.String, message: Schema.String }))
  }
) {}

export const SpawnFailure = Schema.Literal(
  "NotFound",
  "PermissionDenied",
  "CwdNotFound",
  "CwdNotDirectory",
  "SandboxSetup",
  "HelperLost",
  "Unknown"
)

export class SpawnError extends Schema.TaggedError<SpawnError>("effect-native-runner/SpawnError")("SpawnError", {
  reason: SpawnFailure,
  command: Schema.String,
  cwd: Schema.String,
  message: Schema.String,
  /** With `HelperLost`: what the run had written before its helper was lost. */
  stdout: Schema.optionalWith(Schema.Uint8ArrayFromSelf, { exact: true }),
  stderr: Schema.optionalWith(Schema.Uint8ArrayFromSelf, { exact: true })
}) {}

export class SandboxUnavailable extends Schema.TaggedError<SandboxUnavailable>(
  "effect-native-runner/SandboxUnavailable"
)("SandboxUnavailable", {
  backend: Schema.String,
  message: Schema.String,
  fix: Schema.String
}) {}

export class FleetError extends Schema.TaggedError<FleetError>("effect-native-runner/FleetError")("FleetError", {
  reason: Schema.Literal("WorkerLost", "Busy", "Storage", "Unavailable", "Unauthenticated", "IdempotencyConflict"),
  requestId: Schema.optionalWith(Schema.String, { exact: true }),
  message: Schema.String
}) {}

export class WorkspaceError extends Schema.TaggedError<WorkspaceError>("effect-native-runner/WorkspaceError")(
  "WorkspaceError",
  {
    reason: Schema.Literal("Refused", "InUse", "Failed"),
    path: Schema.String,
    message: Schema.String
  }
) {}

export class ExecInterrupted extends Schema.TaggedError<ExecInterrupted>("effect-native-runner/ExecInterrupted")(
  "ExecInterrupted",
  {
    reason: Schema.Literal("Aborted", "Disposed"),
    message: Schema.String
  }
) {}

/**
 * A run that ended but not with exit code 0 (a non-zero code, a signal, a timeout), for callers who want that to be a
 * failure (`NativeRunner.execChecked`, `NativeRunner.checkExit`). The message names the program and how it ended,
 * never its arguments or output (either may hold secrets); the tails and the whole result are fields.
 */
export class NonZeroExit extends Data.TaggedError("NonZeroExit")<{
  readonly message: string
  readonly exitCode: number
  readonly signal: string | undefined
  readonly timedOut: boolean
  /** The last (up to 4 KiB) kept bytes of stdout and stderr. */
  readonly stdoutTail: Uint8Array
  readonly stderrTail: Uint8Array
  /** The run's whole result, as `exec` returns it. */
  readonly result: ExecResult
}> {}
