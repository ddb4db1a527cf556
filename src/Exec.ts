/**
 * The data of one exec: the input (decoded once, at the edge, with `effect/Schema`), the result and the audit record.
 * The input accepts everything the seed's `NativeExecInput` has; the result is a superset of `NativeExecResult`.
 */
import type * as Data from "effect/Data"
import type * as Effect from "effect/Effect"
import type * as ParseResult from "effect/ParseResult"
import type { InvalidInput } from "./Errors.js"
import { execEvent } from "./internal/exec/events.js"
import * as internal from "./internal/exec/input.js"
import { toInvalidInput as invalidInputOf } from "./internal/invalidInput.js"
import type * as Sandbox from "./Sandbox.js"
import type { AuditRecord } from "./Audit.js"

/** Largest byte cap accepted: Node's largest Buffer. */
export const MAX_BYTES_CAP = internal.MAX_BYTES_CAP
/** Largest timeout accepted, in milliseconds: the largest delay a Node timer honours (about 24.8 days). */
export const MAX_TIMEOUT_MS = internal.MAX_TIMEOUT_MS

/** A string that can be passed to `execve` or `chdir`: no NUL bytes. */
export const ArgString = internal.ArgString

/**
 * Environment variables: names non-empty without `=` or NUL, values strings without NUL. Checked on the object's own
 * keys (a `Schema.Record` would silently drop a `__proto__` key from parsed JSON instead of rejecting it).
 */
export const Env = internal.Env

/** A byte cap: a whole number from 0 to 4 GiB. */
export const ByteCap = internal.ByteCap

/** A timeout in milliseconds: a whole number from 1 to `MAX_TIMEOUT_MS`. */
export const TimeoutMs = internal.TimeoutMs

/** Any `Duration.DurationInput` ("500 millis", 1000, `Duration.seconds(2)`, ...) that is finite and not negative. */
export const DurationInput = internal.DurationInput

/** Per-call limits, as in the seed: every field optional, a missing one takes the layer's default. */
export const Limits = internal.Limits
export type Limits = typeof Limits.Type

/** A duration above 0. */
export const PositiveDuration = internal.PositiveDuration

/**
 * Which bytes of each stream the cap keeps: `"head"` the first ones (default), `"tail"` the last ones, `"both"` the
 * first and the last half of the cap (the result's `stdoutOmitted` / `stderrOmitted` say where the cut is).
 */
export const Keep = internal.Keep
export type Keep = typeof Keep.Type

/**
 * Each stream, whole (up to `maxBytes`), also written to a new file (mode 0600) in `dir`; the result gives
 * `stdoutFile` / `stderrFile`. The caller owns the files.
 */
export const Spill = internal.Spill
export type Spill = typeof Spill.Type

/**
 * The input of `NativeRunner.exec`. Everything the seed's `NativeExecInput` has, plus Effect-style durations
 * (`timeout` wins over `limits.timeoutMs`; `killGrace` overrides the layer's grace period).
 */
export const ExecInput = internal.ExecInput
export type ExecInput = typeof ExecInput.Type

/** Decodes untrusted input once; failures become `InvalidInput` listing every problem with its path. */
export const decodeInput: (input: unknown) => Effect.Effect<ExecInput, InvalidInput> = internal.decodeInput

/**
 * Turns a Schema `ParseError` into `InvalidInput` naming each offending field and what it expected, never the value.
 * Messages written by our schemas (filters, `message` annotations) are kept, so they must not quote values either.
 */
export const toInvalidInput = (what: string): (error: ParseResult.ParseError) => InvalidInput => invalidInputOf(what)

/** Which resource limit ended a run, when that can be known from how it ended. */
export type LimitExceeded = Sandbox.LimitExceeded

/** The audit record of one exec; its Schema is `Audit.AuditRecord`. */
export type { AuditRecord } from "./Audit.js"

/**
 * One event of `NativeRunner.execStream`: `Started` first, then `Stdout` / `Stderr` chunks in the order they arrived
 * on each pipe, and last `Exit` with the same `result` `exec` returns. Chunks are bounded (up to 64 KiB each) and read
 * only: they are the capture's own bytes. `Exit.dropped` counts chunks a slow consumer missed (see `execStream`).
 */
export type ExecEvent = Data.TaggedEnum<{
  Started: { readonly runId: string; readonly pid: number }
  Stdout: { readonly bytes: Uint8Array }
  Stderr: { readonly bytes: Uint8Array }
  Exit: { readonly result: ExecResult; readonly dropped: { readonly chunks: number; readonly bytes: number } }
}>
export const ExecEvent = execEvent

/** Which timeout stopped a run. */
export type TimeoutKind = "wall" | "idle"

/** Bytes cut out of a captured stream: `bytes` of them, at `offset` in the kept bytes. */
export interface Omitted {
  readonly offset: number
  readonly bytes: number
}

/** What one run produced. Assignable to the seed's `NativeExecResult`. */
export interface ExecResult {
  /** The child's exit code; 124 on timeout; 128+n when killed by signal n. */
  exitCode: number
  /** The first `maxStdoutBytes` bytes of stdout, byte-exact. */
  stdout: Uint8Array
  stderr: Uint8Array
  truncatedStdout: boolean
  truncatedStderr: boolean
  /** Name of the signal that ended the process (e.g. "SIGKILL"), if one did. */
  signal?: string
  timedOut: boolean
  /** Which timeout stopped the run, when one did: the wall-clock `timeout` or the `idleTimeout`. */
  timeoutKind?: TimeoutKind
  durationMs: number
  /** Total bytes the child wrote to stdout, kept or not. */
  stdoutBytes: number
  stderrBytes: number
  /** Where bytes were cut out of `stdout` (`keep` tail or both, or head past the cap): at `offset`, `bytes` of them. */
  stdoutOmitted?: Omitted
  stderrOmitted?: Omitted
  /**
   * With `all`: stdout and stderr together, chunk by chunk in the order they reached the runner (within each stream,
   * byte order; across the two, the order their reads completed), capped at `maxAllBytes` with the run's `keep`.
   */
  all?: Uint8Array
  /** Where bytes were cut out of `all`, as `stdoutOmitted` says it for stdout. */
  allOmitted?: Omitted
  /** The spill files (`spill`), with every byte up to `spill.maxBytes`. */
  stdoutFile?: string
  stderrFile?: string
  /** Set when writing a spill file failed (ENOSPC, EFBIG): that file stops there; the result is unaffected. */
  spillError?: string
  limitExceeded?: LimitExceeded
  /**
   * Set when reading stdout or stderr failed ("stderr: EIO: ..."); that stream is then also marked truncated, since
   * what came after the failure was never read.
   */
  readError?: string
  audits: Array<AuditRecord>
  /** Set by a fleet client (`effect-native-runner/cluster`): the worker that ran it; spill files are on its disk. */
  worker?: string
}
