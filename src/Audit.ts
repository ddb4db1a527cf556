/**
 * Where audit records go. Every exec publishes exactly one `AuditRecord` (also returned in `result.audits`) to the
 * `Audit` service when one is provided; by default none is. Records never hold env values or captured output.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import { appendFile } from "node:fs/promises"
import type { AuditRecord } from "./Exec.js"

/** The mode of an audit file `layerJsonl` creates: read and write for its owner only. */
export const AUDIT_FILE_MODE = 0o600

/** A sink for audit records. `publish` must not fail: a sink that cannot write should die loudly instead. */
export interface AuditSink {
  readonly publish: (record: AuditRecord) => Effect.Effect<void>
}

/** The audit sink service the runner publishes to, when present. */
export class Audit extends Context.Tag("effect-native-runner/Audit")<Audit, AuditSink>() {}

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
