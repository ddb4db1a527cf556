/** Host helper programs (bwrap, setpriv, prlimit), resolved to absolute paths once, never on a workload's PATH. */
import * as Effect from "effect/Effect"
import { accessSync, constants, statSync } from "node:fs"
import * as path from "node:path"

/** True for a regular file this process may execute (two local syscalls: done synchronously). */
export const isExecutableFile = (file: string): boolean => {
  try {
    return statSync(file).isFile() && (accessSync(file, constants.X_OK), true)
  } catch {
    return false
  }
}

/**
 * The first executable `name` on `searchPath` (default: this process's PATH), as an absolute path. Relative and empty
 * PATH entries are skipped: they mean "the current directory", which is not the host's to choose.
 */
export const resolveExecutable = (
  name: string,
  searchPath: string | undefined = process.env["PATH"]
): Effect.Effect<string | undefined> =>
  Effect.sync(() => {
    for (const dir of (searchPath ?? "").split(":")) {
      if (!path.isAbsolute(dir)) continue
      const candidate = path.join(dir, name)
      if (isExecutableFile(candidate)) return candidate
    }
    return undefined
  })

/** `file` itself when it is an absolute path to an executable file, else `undefined`. */
export const checkExecutable = (file: string): Effect.Effect<string | undefined> =>
  Effect.sync(() => path.isAbsolute(file) && isExecutableFile(file) ? file : undefined)
