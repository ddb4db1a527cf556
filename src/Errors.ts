/**
 * Typed failures of the runner. Outcomes of a run (non-zero exit, timeout, signal, truncation) are data in the
 * result, never errors; these are the failures a caller can act on.
 */
import * as internal from "./internal/errors.js"

/** The input was rejected while decoding; nothing was spawned. `issues` lists each problem with its path. */
export const InvalidInput: typeof internal.InvalidInput = internal.InvalidInput
export type InvalidInput = internal.InvalidInput

/**
 * Why a spawn failed. `SandboxSetup`: the sandbox itself could not be set up before the program started (a bind
 * source missing, a mount refused, a workspace that cannot be handed to the sandbox user); the message is bwrap's.
 */
export const SpawnFailure: typeof internal.SpawnFailure = internal.SpawnFailure
export type SpawnFailure = typeof SpawnFailure.Type

/** The process could not be started; `reason` says why. */
export const SpawnError: typeof internal.SpawnError = internal.SpawnError
export type SpawnError = internal.SpawnError

/** The requested sandbox cannot be used on this host; `message` says why and how to fix it. */
export const SandboxUnavailable: typeof internal.SandboxUnavailable = internal.SandboxUnavailable
export type SandboxUnavailable = internal.SandboxUnavailable

/** Every typed failure of `NativeRunner.exec`. */
export type NativeRunnerError = InvalidInput | SpawnError | SandboxUnavailable
