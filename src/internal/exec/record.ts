/** Step 4 of an exec: the audit record, the metrics and the result, all from the outcome. */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type { SpawnError } from "../../Errors.js"
import type { AuditRecord, ExecResult, LimitExceeded } from "../../Exec.js"
import type { Outcome as MetricsOutcome } from "../../Metrics.js"
import * as metrics from "../metrics.js"
import type { Outcome } from "../engine.js"

/** What every record of one exec shares, fixed before it runs. */
export interface RunMeta {
  readonly runId: string
  readonly startedAt: string
  readonly startedMillis: number
  readonly cmd: string
  /** Already redacted (`redactArgv`), once per exec. */
  readonly argv: ReadonlyArray<string>
  readonly cwd: string
  readonly sandbox: string
  readonly network: string | undefined
}

/** What the run learnt besides the outcome. */
export interface RunExtras {
  readonly limitExceeded?: LimitExceeded | undefined
  readonly stdoutFile?: string | undefined
  readonly stderrFile?: string | undefined
  readonly spillError?: string | undefined
}

type RunFields = Omit<AuditRecord, "kind" | "runId" | "startedAt" | "cmd" | "argv" | "cwd" | "sandbox" | "network">

const recordOf = (meta: RunMeta, run: RunFields): AuditRecord => ({
  kind: "native.exec",
  runId: meta.runId,
  startedAt: meta.startedAt,
  cmd: meta.cmd,
  argv: [...meta.argv],
  cwd: meta.cwd,
  ...run,
  sandbox: meta.sandbox,
  ...(meta.network === undefined ? {} : { network: meta.network })
})

/** A problem per stream as one line ("stdout: ...; stderr: ..."), or `undefined` when neither had one. */
export const perStream = (stdout: string | undefined, stderr: string | undefined): string | undefined => {
  const text = [["stdout", stdout], ["stderr", stderr]].flatMap(([stream, problem]) =>
    problem === undefined ? [] : [`${stream}: ${problem}`]
  )
  return text.length === 0 ? undefined : text.join("; ")
}

/** Which stream could not be read to its end, and why. */
const readErrorOf = (outcome: Outcome): { readonly readError?: string } => {
  const readError = perStream(outcome.stdout.readError(), outcome.stderr.readError())
  return readError === undefined ? {} : { readError }
}

/** The audit record of a run that started (also of one interrupted: `outcome.interrupted`). */
export const auditOf = (meta: RunMeta, outcome: Outcome, extras: RunExtras = {}): AuditRecord =>
  recordOf(meta, {
    durationMs: outcome.durationMs,
    timedOut: outcome.timedOut,
    ...(outcome.timeoutKind === undefined ? {} : { timeoutKind: outcome.timeoutKind }),
    ...(outcome.signal === undefined ? {} : { signal: outcome.signal }),
    exitCode: outcome.exitCode,
    stdoutBytes: outcome.stdout.total(),
    stderrBytes: outcome.stderr.total(),
    truncatedStdout: outcome.stdout.truncated(),
    truncatedStderr: outcome.stderr.truncated(),
    ...(outcome.all === undefined ? {} : { allKeptBytes: outcome.all.kept() }),
    interrupted: outcome.interrupted,
    ...(extras.limitExceeded === undefined ? {} : { limitExceeded: extras.limitExceeded }),
    ...readErrorOf(outcome)
  })

/** Nothing ran: no output, no timeout; the exit code a shell would report for the failed start. */
export const spawnFailureAuditOf = (meta: RunMeta, error: SpawnError, durationMs: number): AuditRecord =>
  recordOf(meta, {
    durationMs,
    timedOut: false,
    exitCode: error.reason === "NotFound" ? 127 : 126,
    stdoutBytes: 0,
    stderrBytes: 0,
    truncatedStdout: false,
    truncatedStderr: false,
    interrupted: false,
    spawnError: error.reason
  })

export const recordMetrics = (record: AuditRecord, outcome: Outcome): Effect.Effect<void> => {
  const kept = outcome.stdout.kept() + outcome.stderr.kept()
  const seen = record.stdoutBytes + record.stderrBytes
  const label: MetricsOutcome = record.interrupted
    ? "interrupted"
    : record.timedOut
    ? "timeout"
    : record.signal !== undefined
    ? "signal"
    : record.exitCode === 0
    ? "ok"
    : "non_zero"
  return Effect.all([
    metrics.recordOutcome(label),
    Metric.update(metrics.duration, record.durationMs),
    Metric.incrementBy(metrics.bytesCaptured, kept),
    Metric.incrementBy(metrics.bytesDropped, seen - kept)
  ], { discard: true })
}

/** The result the caller gets: the outcome's bytes and facts, and the record that was published. */
export const resultOf = (outcome: Outcome, record: AuditRecord, extras: RunExtras = {}): ExecResult => {
  const stdoutOmitted = outcome.stdout.omitted()
  const stderrOmitted = outcome.stderr.omitted()
  const allOmitted = outcome.all?.omitted()
  return {
  exitCode: outcome.exitCode,
  stdout: outcome.stdout.bytes(),
  stderr: outcome.stderr.bytes(),
  truncatedStdout: record.truncatedStdout,
  truncatedStderr: record.truncatedStderr,
  ...(outcome.signal === undefined ? {} : { signal: outcome.signal }),
  timedOut: outcome.timedOut,
  ...(outcome.timeoutKind === undefined ? {} : { timeoutKind: outcome.timeoutKind }),
  durationMs: outcome.durationMs,
  stdoutBytes: record.stdoutBytes,
  stderrBytes: record.stderrBytes,
  ...(stdoutOmitted === undefined ? {} : { stdoutOmitted }),
  ...(stderrOmitted === undefined ? {} : { stderrOmitted }),
  ...(outcome.all === undefined ? {} : { all: outcome.all.bytes() }),
  ...(allOmitted === undefined ? {} : { allOmitted }),
  ...(extras.stdoutFile === undefined ? {} : { stdoutFile: extras.stdoutFile }),
  ...(extras.stderrFile === undefined ? {} : { stderrFile: extras.stderrFile }),
  ...(extras.spillError === undefined ? {} : { spillError: extras.spillError }),
  ...(record.limitExceeded === undefined ? {} : { limitExceeded: record.limitExceeded }),
  ...(record.readError === undefined ? {} : { readError: record.readError }),
  audits: [record]
  }
}
