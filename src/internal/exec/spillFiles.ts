/** The spill files of one exec (`spill`): every byte of each stream, up to `maxBytes`, in a new 0600 file. */
import * as Effect from "effect/Effect"
import { rm } from "node:fs/promises"
import type * as Scope from "effect/Scope"
import { SpawnError } from "../errors.js"
import type { Spill } from "../../Exec.js"
import type { RunHooks } from "../engine.js"
import { makeSpill } from "../spill.js"
import { perStream } from "./record.js"

/** A chunk sink for the engine plus the paths for the result; `undefined` without `spill`. */
export interface SpillFiles {
  readonly onChunk: NonNullable<RunHooks["onChunk"]>
  readonly stdoutFile: string
  readonly stderrFile: string
  /** Why spilling stopped early (a failed write: ENOSPC, EFBIG), read once the run is over. */
  readonly error: () => string | undefined
}

/** Creates both files (named after the run) before the spawn; a file that cannot be created fails the exec. */
export const openSpillFiles = (
  spill: Spill,
  runId: string,
  program: string,
  cwd: string
): Effect.Effect<SpillFiles, SpawnError, Scope.Scope> =>
  Effect.gen(function*() {
    const open = (stream: "stdout" | "stderr") =>
      makeSpill({ dir: spill.dir, maxBytes: spill.maxBytes, name: `native-runner-${runId}.${stream}` }).pipe(
        Effect.mapError((error) =>
          new SpawnError({ reason: "Unknown", command: program, cwd, message: `cannot spill ${stream}: ${error.message}` })
        )
      )
    const stdout = yield* open("stdout")
    // stdout's file exists by now: when stderr's cannot be made, nothing ran, so leave no empty file behind.
    const stderr = yield* open("stderr").pipe(Effect.tapError(() => Effect.promise(() => rm(stdout.path, { force: true }))))
    return {
      onChunk: (stream, bytes) => (stream === "stdout" ? stdout : stderr).push(bytes),
      stdoutFile: stdout.path,
      stderrFile: stderr.path,
      error: () => perStream(stdout.error(), stderr.error())
    }
  })
