/**
 * How `run` reports a run: in plain mode the command's own bytes (the part the caps let through as it arrives, the
 * kept tail at the end), then one notice line per event on stderr; with `--json` one object matching
 * `CliJsonResult`; with `--jsonl` one `CliJsonlEvent` per line.
 */
import * as Schema from "effect/Schema"
import { ExecEvent, type ExecResult, type Keep, type Omitted } from "../Exec.js"
import { AuditRecord } from "../Audit.js"
import { LimitExceeded } from "../Sandbox.js"
import { formatMillis } from "./parse.js"

/** How captured bytes appear in JSON. */
export const OutputEncoding = Schema.Literal("utf8", "base64")
export type OutputEncoding = typeof OutputEncoding.Type

const Count = Schema.Int.pipe(Schema.nonNegative())

/** Which timeout stopped a run. */
const TimeoutKind = Schema.Literal("wall", "idle")

/** Bytes cut out of a kept stream: `bytes` of them at `offset` in the kept bytes. */
const CliJsonOmitted = Schema.Struct({ offset: Count, bytes: Count })

/** One audit record as it appears in `--json` output (and, plus `timestamp`, in `--audit-log` lines). */
export const CliJsonAudit = AuditRecord

/**
 * The single JSON object `native-runner run --json` prints. Keys are always present; what did not happen is null
 * (`signal`, `timeoutKind`, the cuts, the spill files).
 */
export const CliJsonResult = Schema.Struct({
  exitCode: Schema.Int,
  signal: Schema.NullOr(Schema.String),
  timedOut: Schema.Boolean,
  /** "wall" (`--timeout`) or "idle" (`--idle-timeout`) when `timedOut`. */
  timeoutKind: Schema.NullOr(TimeoutKind),
  durationMs: Schema.NonNegative,
  truncatedStdout: Schema.Boolean,
  truncatedStderr: Schema.Boolean,
  stdoutBytes: Count,
  stderrBytes: Count,
  stdout: Schema.String,
  stdoutEncoding: OutputEncoding,
  stderr: Schema.String,
  stderrEncoding: OutputEncoding,
  /** Where the cap cut bytes out of `stdout` (the end for head, 0 for tail, the middle for both). */
  stdoutOmitted: Schema.NullOr(CliJsonOmitted),
  stderrOmitted: Schema.NullOr(CliJsonOmitted),
  /** With `--all`: stdout and stderr together in arrival order (UTF-8 or base64), and where its cap cut; else null. */
  all: Schema.NullOr(Schema.String),
  allEncoding: Schema.NullOr(OutputEncoding),
  allOmitted: Schema.NullOr(CliJsonOmitted),
  /** The `--spill-dir` files, with every byte up to `--spill-max`. */
  stdoutFile: Schema.NullOr(Schema.String),
  stderrFile: Schema.NullOr(Schema.String),
  /** Why a spill file stops early (ENOSPC, EFBIG), when one does. */
  spillError: Schema.NullOr(Schema.String),
  /** The resource limit that ended or visibly constrained the run, when the kernel told us. */
  limitExceeded: Schema.NullOr(LimitExceeded),
  audits: Schema.Array(CliJsonAudit)
})
export type CliJsonResult = typeof CliJsonResult.Type

// `ignoreBOM` keeps a leading BOM as a character, so the text still round-trips to the same bytes.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** Captured bytes as a JSON string: UTF-8 text when the bytes are valid UTF-8, else base64. */
export const encodeOutput = (bytes: Uint8Array): { readonly text: string; readonly encoding: OutputEncoding } => {
  try {
    return { text: utf8.decode(bytes), encoding: "utf8" }
  } catch {
    // Not valid UTF-8 (binary output, or a character cut by truncation): base64 is byte-exact.
    return { text: Buffer.from(bytes).toString("base64"), encoding: "base64" }
  }
}

/** The `--json` object of a result. */
export const toJsonResult = (result: ExecResult): CliJsonResult => {
  const stdout = encodeOutput(result.stdout)
  const stderr = encodeOutput(result.stderr)
  const all = result.all === undefined ? undefined : encodeOutput(result.all)
  return {
    exitCode: result.exitCode,
    signal: result.signal ?? null,
    timedOut: result.timedOut,
    timeoutKind: result.timeoutKind ?? null,
    durationMs: result.durationMs,
    truncatedStdout: result.truncatedStdout,
    truncatedStderr: result.truncatedStderr,
    stdoutBytes: result.stdoutBytes,
    stderrBytes: result.stderrBytes,
    stdout: stdout.text,
    stdoutEncoding: stdout.encoding,
    stderr: stderr.text,
    stderrEncoding: stderr.encoding,
    stdoutOmitted: result.stdoutOmitted ?? null,
    stderrOmitted: result.stderrOmitted ?? null,
    all: all?.text ?? null,
    allEncoding: all?.encoding ?? null,
    allOmitted: result.allOmitted ?? null,
    stdoutFile: result.stdoutFile ?? null,
    stderrFile: result.stderrFile ?? null,
    spillError: result.spillError ?? null,
    limitExceeded: result.limitExceeded ?? null,
    audits: result.audits
  }
}

/** Chunks `execStream` could not hand us in time, and their bytes (`Exit.dropped`). */
const CliJsonDropped = Schema.Struct({ chunks: Count, bytes: Count })

/**
 * One line of `native-runner run --jsonl`: `started`, then `stdout` / `stderr` chunks as they arrive (what plain mode
 * prints live: up to the cap, half of it with `--keep both`, none with `--keep tail`), last `exit`: the `--json`
 * object plus `dropped`.
 */
/**
 * A run that did not happen or did not end normally (command not found, a cwd that is not there, the sandbox not
 * available, a fleet failure), as `--json` prints it instead of the result and `--jsonl` as its last event: the
 * error's tag, its `reason` when it has one, the same message stderr gets, and our exit code.
 */
export const CliJsonError = Schema.Struct({
  error: Schema.Struct({
    _tag: Schema.String,
    reason: Schema.NullOr(Schema.String),
    message: Schema.String
  }),
  exitCode: Schema.Int
})
export type CliJsonError = typeof CliJsonError.Type

/** The `--json` object of a failure (see `CliJsonError`). */
export const toJsonError = (
  error: { readonly _tag: string; readonly message: string; readonly reason?: unknown },
  exitCode: number
): CliJsonError => ({
  error: { _tag: error._tag, reason: typeof error.reason === "string" ? error.reason : null, message: error.message },
  exitCode
})

export const CliJsonlEvent = Schema.Union(
  Schema.Struct({ event: Schema.Literal("started"), runId: Schema.String, pid: Schema.Int }),
  Schema.Struct({ event: Schema.Literal("stdout", "stderr"), data: Schema.String, encoding: OutputEncoding }),
  Schema.Struct({ event: Schema.Literal("exit"), ...CliJsonResult.fields, dropped: CliJsonDropped }),
  Schema.Struct({ event: Schema.Literal("error"), ...CliJsonError.fields })
)
export type CliJsonlEvent = typeof CliJsonlEvent.Type

/** The `--jsonl` line of an event; an output chunk is encoded as `--json` encodes output (UTF-8, else base64). */
export const toJsonlEvent = (event: ExecEvent): CliJsonlEvent =>
  ExecEvent.$match(event, {
    Started: ({ pid, runId }) => ({ event: "started" as const, runId, pid }),
    Stdout: ({ bytes }) => {
      const { encoding, text } = encodeOutput(bytes)
      return { event: "stdout" as const, data: text, encoding }
    },
    Stderr: ({ bytes }) => {
      const { encoding, text } = encodeOutput(bytes)
      return { event: "stderr" as const, data: text, encoding }
    },
    Exit: ({ dropped, result }) => ({ event: "exit" as const, ...toJsonResult(result), dropped })
  })

/**
 * Bytes of a stream printed as they arrive: the whole cap for `head`, its first half for `both` (the kept head), none
 * for `tail` (which bytes are the last ones is known only at the end).
 */
export const liveLimit = (keep: Keep, cap: number): number =>
  keep === "head" ? cap : keep === "both" ? Math.floor(cap / 2) : 0

/**
 * Cuts a run's events to what is printed as it arrives: each stream's chunks in order until `liveLimit` bytes have
 * passed; an output event with nothing left is `undefined`; `Started` and `Exit` pass as they are. It counts: one per
 * run.
 *
 * @example
 * const live = liveEvents("head", { stdout: 10, stderr: 10 })
 * live(ExecEvent.Stdout({ bytes: new Uint8Array(100) })) // Stdout with the first 10 bytes; any later one: undefined
 */
export const liveEvents = (keep: Keep, caps: { readonly stdout: number; readonly stderr: number }) => {
  const left = { stdout: liveLimit(keep, caps.stdout), stderr: liveLimit(keep, caps.stderr) }
  return (event: ExecEvent): ExecEvent | undefined => {
    if (event._tag !== "Stdout" && event._tag !== "Stderr") return event
    const stream = event._tag === "Stdout" ? "stdout" : "stderr"
    if (left[stream] === 0) return undefined
    const bytes = event.bytes.length <= left[stream] ? event.bytes : event.bytes.subarray(0, left[stream])
    left[stream] -= bytes.length
    return bytes.length === 0
      ? undefined
      : event._tag === "Stdout"
      ? ExecEvent.Stdout({ bytes })
      : ExecEvent.Stderr({ bytes })
  }
}

/**
 * The kept bytes of a stream not printed as they arrived: what plain mode prints when the run ends (the kept tail
 * with `tail` and `both`; nothing with `head`). Printed after the live part, it makes exactly the kept bytes.
 */
export const afterLive = (kept: Uint8Array, keep: Keep, cap: number): Uint8Array =>
  kept.subarray(Math.min(kept.length, liveLimit(keep, cap)))

/** What a limit did to the run, as a notice says it. CPU and file size stop a process; the others refuse it. */
export const limitNotice = (limit: LimitExceeded): string => {
  switch (limit) {
    case "cpu":
      return "stopped by the CPU-time limit"
    case "fileSize":
      return "stopped by the file-size limit"
    case "memory":
      return "hit the memory limit"
    case "processes":
      return "hit the process limit (forks were refused)"
    case "openFiles":
      return "hit the open-files limit"
  }
}

/** What the cap cut out of a stream: the end (head), the start (tail) or the middle (both). */
const cutNotice = (stream: "stdout" | "stderr", kept: number, total: number, omitted: Omitted | undefined): string =>
  omitted === undefined || omitted.offset >= kept
    ? `${stream} truncated at ${kept} of ${total} bytes`
    : omitted.offset === 0
    ? `${stream}: the first ${omitted.bytes} of ${total} bytes omitted`
    : `${stream}: ${omitted.bytes} bytes omitted after byte ${omitted.offset}`

/**
 * The short lines plain mode adds on stderr when something happened besides a normal exit, and where the spill files
 * are. `timeoutMs` and `idleTimeoutMs` are the timeouts in force, for the timeout lines.
 */
export const notices = (result: ExecResult, timeoutMs: number, idleTimeoutMs?: number): Array<string> => {
  const lines: Array<string> = []
  if (result.timedOut && result.timeoutKind === "idle") {
    const idle = idleTimeoutMs === undefined ? "too long" : formatMillis(idleTimeoutMs)
    lines.push(`no output for ${idle}: stopped (exit ${result.exitCode})`)
  } else if (result.timedOut) lines.push(`timed out after ${formatMillis(timeoutMs)} (exit ${result.exitCode})`)
  else if (result.signal !== undefined) lines.push(`killed by ${result.signal} (exit ${result.exitCode})`)
  if (result.limitExceeded !== undefined) lines.push(limitNotice(result.limitExceeded))
  if (result.truncatedStdout) {
    lines.push(cutNotice("stdout", result.stdout.length, result.stdoutBytes, result.stdoutOmitted))
  }
  if (result.truncatedStderr) {
    lines.push(cutNotice("stderr", result.stderr.length, result.stderrBytes, result.stderrOmitted))
  }
  if (result.readError !== undefined) lines.push(`output could not be read to its end: ${result.readError}`)
  if (result.stdoutFile !== undefined) lines.push(`stdout written to ${result.stdoutFile}`)
  if (result.stderrFile !== undefined) lines.push(`stderr written to ${result.stderrFile}`)
  if (result.spillError !== undefined) lines.push(`spill file incomplete: ${result.spillError}`)
  return lines.map((line) => `native-runner: ${line}`)
}

/**
 * The plain-mode line when `execStream` dropped chunks before we could print them (our stdout or stderr was slower
 * than the command): the live output may lack them. Nothing when none were dropped.
 */
export const droppedNotice = (dropped: { readonly chunks: number; readonly bytes: number }): Array<string> =>
  dropped.chunks === 0 ? [] : [
    `native-runner: output came faster than we could print it: up to ${dropped.bytes} bytes ` +
    `(${dropped.chunks} chunks) may be missing above`
  ]
