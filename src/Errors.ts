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
 * source missing, a mount refused, a workspace the sandbox user cannot write, a bind source reached through a
 * symlink in a writable place, a workspace being adopted); the message says which, and how to fix it. `HelperLost`:
 * the spawn helper that started the program died or stopped answering while it ran; the program's processes were
 * killed, `stdout` and `stderr` hold what it had written, and later execs spawn without it.
 */
export const SpawnFailure: typeof internal.SpawnFailure = internal.SpawnFailure
export type SpawnFailure = typeof SpawnFailure.Type

/** The process could not be started; `reason` says why. */
export const SpawnError: typeof internal.SpawnError = internal.SpawnError
export type SpawnError = internal.SpawnError

/** The requested sandbox cannot be used on this host; `message` says why and how to fix it. */
export const SandboxUnavailable: typeof internal.SandboxUnavailable = internal.SandboxUnavailable
export type SandboxUnavailable = internal.SandboxUnavailable

/**
 * A run on the fleet (`effect-native-runner/cluster`) could not be completed. `reason`:
 * - `WorkerLost`: the worker that claimed the run died or stopped before it finished. The command may have started;
 *   under at-most-once delivery (the default) it is never started again, and a repeat of its request id fails the same way;
 * - `Busy`: the worker's line for this tenant is full (back-pressure); nothing ran;
 * - `Storage`: the fleet's database could not record the claim or the outcome;
 * - `Unavailable`: the fleet could not be joined (database unreachable, listen address taken, a worker's client
 *   endpoint unreachable or its certificate not the fleet's); no `requestId`;
 * - `Unauthenticated`: the worker refused the client's credential (unknown, wrong or revoked); nothing ran;
 * - `IdempotencyConflict`: the request id was used before by this tenant for another request (other argv, cwd, env,
 *   stdin, limits or delivery); nothing ran, and the stored outcome is not returned.
 * A local runner never fails with it.
 */
export const FleetError: typeof internal.FleetError = internal.FleetError
export type FleetError = internal.FleetError

/**
 * Preparing a workspace (`Sandbox.adoptWorkspace`, `Sandbox.makeWorkspace`) failed; nothing was changed unless the
 * message says so. `reason`: `Refused` (a path that cannot be given to the sandbox user safely: a system or shared
 * directory, a home directory, a symlinked path, a mount point or hard-linked file inside, a parent the sandbox user
 * could write, a non-root host), `InUse` (a sandboxed run holds the workspace), `Failed` (a helper failed).
 */
export const WorkspaceError: typeof internal.WorkspaceError = internal.WorkspaceError
export type WorkspaceError = internal.WorkspaceError

/**
 * A Promise runner's exec (`NativeRunner.toPromiseRunner`) that was stopped before it finished: `Aborted` (its
 * `signal` fired) or `Disposed` (the runner was disposed, by `dispose()` or by the host's SIGTERM, SIGINT or SIGHUP,
 * or the exec came after that). Its process tree was killed before the promise rejected. The Effect API never fails
 * with it: there, the same thing is an interruption.
 */
export const ExecInterrupted: typeof internal.ExecInterrupted = internal.ExecInterrupted
export type ExecInterrupted = internal.ExecInterrupted

/**
 * A run that ended otherwise than with exit code 0 (a non-zero code, a signal, a timeout), from
 * `NativeRunner.execChecked` and `NativeRunner.checkExit` only: `exec` returns such a run as data. `exitCode`,
 * `signal`, `timedOut`, the last 4 KiB of each stream (`stdoutTail`, `stderrTail`) and the whole `result`; the
 * message names the program and how it ended, never its arguments or output.
 */
export const NonZeroExit: typeof internal.NonZeroExit = internal.NonZeroExit
export type NonZeroExit = internal.NonZeroExit

/**
 * Every typed failure of `NativeRunner.exec`. `FleetError` is among them because a fleet client
 * (`effect-native-runner/cluster`) provides the same service; a local layer never fails with it.
 */
export type NativeRunnerError = InvalidInput | SpawnError | SandboxUnavailable | FleetError
