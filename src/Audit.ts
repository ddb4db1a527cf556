/**
 * Where audit records go. Every exec publishes exactly one `AuditRecord` (also returned in `result.audits`) to the
 * `Audit` service when one is provided; by default none is. Records never hold env values or captured output.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import { appendFile } from "node:fs/promises"
import { SpawnFailure } from "./Errors.js"
import * as internal from "./internal/audit.js"
import { LimitExceeded } from "./Sandbox.js"

const Count = Schema.Int.pipe(Schema.nonNegative())

/**
 * The audit record of one exec: the seed's `NativeAuditRecord` fields plus how the run ended. Env values and output
 * never appear. The CLI's `--json` audits and `--audit-log` lines (plus `timestamp`) are this Schema.
 */
export const AuditRecord = Schema.Struct({
  kind: Schema.Literal("native.exec"),
  /** Unique per exec, to join audit lines with logs and spans. */
  runId: Schema.String,
  /** ISO-8601 time the exec started (from Effect's `Clock`). */
  startedAt: Schema.String,
  cmd: Schema.String,
  /** Redacted with the layer's `redactArgv`. Mutable, as in the seed's record. */
  argv: Schema.mutable(Schema.Array(Schema.String)),
  cwd: Schema.String,
  durationMs: Schema.NonNegative,
  timedOut: Schema.Boolean,
  /** Which timeout stopped the run, when one did. */
  timeoutKind: Schema.optionalWith(Schema.Literal("wall", "idle"), { exact: true }),
  signal: Schema.optionalWith(Schema.String, { exact: true }),
  exitCode: Schema.Int,
  stdoutBytes: Count,
  stderrBytes: Count,
  truncatedStdout: Schema.Boolean,
  truncatedStderr: Schema.Boolean,
  /** With `all`: bytes kept in the combined capture (`result.all`). */
  allKeptBytes: Schema.optionalWith(Count, { exact: true }),
  /** True when the calling fiber was interrupted and the process tree was killed. */
  interrupted: Schema.Boolean,
  /** "none" or the sandbox backend ("bwrap"). */
  sandbox: Schema.String,
  /** Network mode inside the sandbox ("none" | "host"), absent without a sandbox. */
  network: Schema.optionalWith(Schema.String, { exact: true }),
  limitExceeded: Schema.optionalWith(LimitExceeded, { exact: true }),
  /** Set when reading stdout or stderr failed ("stderr: EIO: ..."): the output after it was never seen. */
  readError: Schema.optionalWith(Schema.String, { exact: true }),
  /**
   * Set when no process could be started (the exec failed with this `SpawnError` reason); `exitCode` is then 127 for
   * a program not found and 126 otherwise, as shells report them, and nothing ran.
   */
  spawnError: Schema.optionalWith(SpawnFailure, { exact: true })
})
export type AuditRecord = typeof AuditRecord.Type

/** The mode of an audit file `layerJsonl` creates: read and write for its owner only. */
export const AUDIT_FILE_MODE = 0o600

/** A sink for audit records. `publish` must not fail: a sink that cannot write should die loudly instead. */
export interface AuditSink {
  readonly publish: (record: AuditRecord) => Effect.Effect<void>
}

/** The audit sink service the runner publishes to, when present. */
export const Audit: typeof internal.Audit = internal.Audit
export type Audit = internal.Audit

/** Reads what `layerMemory` collected, in publication order. */
export class AuditMemory extends Context.Tag("effect-native-runner/AuditMemory")<AuditMemory, {
  readonly records: Effect.Effect<ReadonlyArray<AuditRecord>>
}>() {}

/** Keeps records in memory, for tests: provides `Audit` and `AuditMemory`. */
export const layerMemory: Layer.Layer<Audit | AuditMemory> = Layer.effectContext(
  Effect.gen(function*() {
    const ref = yield* Ref.make<ReadonlyArray<AuditRecord>>([])
    const sink: AuditSink = { publish: (record) => Ref.update(ref, (records) => [...records, record]) }
    return Context.make(Audit, sink).pipe(Context.add(AuditMemory, { records: Ref.get(ref) }))
  })
)

/**
 * Appends one JSON line per exec to `path`: the audit record plus a `timestamp` (ISO-8601, when it was written).
 * Lines from concurrent execs are written one at a time, so they never interleave. A file it creates is readable by
 * its owner only (mode 0600: argv can hold secrets the redaction missed); an existing file keeps its mode.
 *
 * @example
 * const AppLive = NativeRunner.layerNode().pipe(Layer.provide(Audit.layerJsonl("/var/log/runner.jsonl")))
 */
export const layerJsonl = (path: string): Layer.Layer<Audit> =>
  Layer.effect(
    Audit,
    Effect.gen(function*() {
      const lock = yield* Effect.makeSemaphore(1)
      return {
        publish: (record) =>
          lock.withPermits(1)(
            Effect.promise(() =>
              appendFile(path, JSON.stringify({ ...record, timestamp: new Date().toISOString() }) + "\n", {
                mode: AUDIT_FILE_MODE
              })
            )
          ).pipe(Effect.uninterruptible)
      }
    })
  )

/**
 * An argv redaction hook for audits: masks the value that follows any of `flags` (and `--flag=value` forms).
 *
 * @example
 * NativeRunner.layer({ redactArgv: Audit.redactAfter(["--password", "--token"]) })
 */
export const redactAfter = (flags: ReadonlyArray<string>, mask = "***") =>
(argv: ReadonlyArray<string>): Array<string> => {
  const out: Array<string> = []
  let maskNext = false
  for (const arg of argv) {
    if (maskNext) {
      out.push(mask)
      maskNext = false
      continue
    }
    const eq = arg.indexOf("=")
    if (eq > 0 && flags.includes(arg.slice(0, eq))) {
      out.push(`${arg.slice(0, eq)}=${mask}`)
    } else {
      out.push(arg)
      maskNext = flags.includes(arg)
    }
  }
  return out
}
