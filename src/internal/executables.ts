/** Host helper programs (bwrap, setpriv, prlimit), resolved to absolute paths once, never on a workload's PATH. */
import * as Effect from "effect/Effect"
import { constants } from "node:fs"
import { access, stat } from "node:fs/promises"
import * as path from "node:path"

const isExecutableFile = (file: string): Promise<boolean> =>
  stat(file).then(
    (stats) => stats.isFile() && access(file, constants.X_OK).then(() => true, () => false),
    () => false
  )

/**
 * The first executable `name` on `searchPath` (default: this process's PATH), as an absolute path. Relative and empty
 * PATH entries are skipped: they mean "the current directory", which is not the host's to choose.
 */
export const resolveExecutable = (
  name: string,
  searchPath: string | undefined = process.env["PATH"]
): Effect.Effect<string | undefined> =>
  Effect.promise(async () => {
    for (const dir of (searchPath ?? "").split(":")) {
      if (!path.isAbsolute(dir)) continue
      const candidate = path.join(dir, name)
      if (await isExecutableFile(candidate)) return candidate
    }
    return undefined
  })

/** `file` itself when it is an absolute path to an executable file, else `undefined`. */
export const checkExecutable = (file: string): Effect.Effect<string | undefined> =>
  Effect.promise(async () => path.isAbsolute(file) && await isExecutableFile(file) ? file : undefined)
