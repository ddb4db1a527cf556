/**
 * How `run` reports a result: in plain mode the command's own bytes, then one notice line per event on stderr; with
 * `--json` one object matching `CliJsonResult`.
 */
import * as Schema from "effect/Schema"
import type { ExecResult } from "../../Exec.js"
import { SpawnFailure } from "../../Errors.js"
import { LimitExceeded } from "../../Sandbox.js"
import { formatMillis } from "./parse.js"

/** How captured bytes appear in JSON. */
export const OutputEncoding = Schema.Literal("utf8", "base64")
export type OutputEncoding = typeof OutputEncoding.Type

const Count = Schema.Int.pipe(Schema.nonNegative())

/** One audit record as it appears in `--json` output (and, plus `timestamp`, in `--audit-log` lines). */
export const CliJsonAudit = Schema.Struct({
  kind: Schema.Literal("native.exec"),
  runId: Schema.String,
  startedAt: Schema.String,
  cmd: Schema.String,
  argv: Schema.Array(Schema.String),
  cwd: Schema.String,
  durationMs: Schema.NonNegative,
  timedOut: Schema.Boolean,
  signal: Schema.optional(Schema.String),
  exitCode: Schema.Int,
  stdoutBytes: Count,
  stderrBytes: Count,
  truncatedStdout: Schema.Boolean,
  truncatedStderr: Schema.Boolean,
  interrupted: Schema.Boolean,
  /** "none" or "bwrap". */
  sandbox: Schema.String,
  /** "none" or "host"; present only for a sandboxed run. */
  network: Schema.optional(Schema.String),
  limitExceeded: Schema.optional(LimitExceeded),
  /** Why stdout or stderr could not be read to its end, when that happened. */
  readError: Schema.optional(Schema.String),
  spawnError: Schema.optional(SpawnFailure)
})

/** The single JSON object `native-runner run --json` prints. Keys are always present; `signal` may be null. */
export const CliJsonResult = Schema.Struct({
  exitCode: Schema.Int,
  signal: Schema.NullOr(Schema.String),
  timedOut: Schema.Boolean,
  durationMs: Schema.NonNegative,
  truncatedStdout: Schema.Boolean,
  truncatedStderr: Schema.Boolean,
  stdoutBytes: Count,
  stderrBytes: Count,
  stdout: Schema.String,
  stdoutEncoding: OutputEncoding,
  stderr: Schema.String,
  stderrEncoding: OutputEncoding,
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
  return {
    exitCode: result.exitCode,
    signal: result.signal ?? null,
    timedOut: result.timedOut,
    durationMs: result.durationMs,
    truncatedStdout: result.truncatedStdout,
    truncatedStderr: result.truncatedStderr,
    stdoutBytes: result.stdoutBytes,
    stderrBytes: result.stderrBytes,
    stdout: stdout.text,
    stdoutEncoding: stdout.encoding,
    stderr: stderr.text,
    stderrEncoding: stderr.encoding,
    limitExceeded: result.limitExceeded ?? null,
    audits: result.audits
  }
}

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

/** The short lines plain mode adds on stderr when something happened besides a normal exit. */
export const notices = (result: ExecResult, timeoutMs: number): Array<string> => {
  const lines: Array<string> = []
  if (result.timedOut) lines.push(`timed out after ${formatMillis(timeoutMs)} (exit ${result.exitCode})`)
  else if (result.signal !== undefined) lines.push(`killed by ${result.signal} (exit ${result.exitCode})`)
  if (result.limitExceeded !== undefined) lines.push(limitNotice(result.limitExceeded))
  if (result.truncatedStdout) {
    lines.push(`stdout truncated at ${result.stdout.length} of ${result.stdoutBytes} bytes`)
  }
  if (result.truncatedStderr) {
    lines.push(`stderr truncated at ${result.stderr.length} of ${result.stderrBytes} bytes`)
  }
  if (result.readError !== undefined) lines.push(`output could not be read to its end: ${result.readError}`)
  return lines.map((line) => `native-runner: ${line}`)
}
