/**
 * A spill file: every byte of one stream (up to `maxBytes`) written to a new file the caller owns. Writes are
 * synchronous, from the pipe's own events, so a slow disk slows the reader down instead of growing memory.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as path from "node:path"

/** The spill file could not be created (missing directory, a name already taken, no permission). */
export class SpillError extends Data.TaggedError("SpillError")<{
  readonly message: string
  /** The file that could not be created. */
  readonly path: string
}> {}

export interface SpillOptions {
  /** The directory of the new file. */
  readonly dir: string
  /** Bytes written at most; the rest is only counted. Default: no limit. */
  readonly maxBytes?: number | undefined
  /** The file's name in `dir`: one path component. */
  readonly name: string
}

/** An open spill file. Nothing here throws: a failed write is recorded in `error` and ends the spilling. */
export interface Spill {
  /** Writes the chunk (or the part of it within `maxBytes`) before returning. */
  readonly push: (chunk: Uint8Array) => void
  readonly path: string
  /** Bytes in the file. */
  readonly written: () => number
  /** True when more than `maxBytes` arrived. */
  readonly truncated: () => boolean
  /** Why writing stopped early ("ENOSPC: ..."), if it did; bytes after it were not written. */
  readonly error: () => string | undefined
}

const describeError = (error: unknown): string =>
  error instanceof Error ? error.message : String(error)

// O_EXCL with O_CREAT refuses every existing name, a symlink included (dangling or not), so nothing is followed or
// overwritten; O_NOFOLLOW says so again. Node adds O_CLOEXEC, so children spawned meanwhile do not inherit the file.
const CREATE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW

/** Creates the file, mode 0600 whatever the umask; on failure nothing is left behind. */
const create = (file: string): Effect.Effect<number, SpillError> =>
  Effect.try({
    try: () => {
      const fd = fs.openSync(file, CREATE, 0o600)
      try {
        // The umask may have taken bits from 0600 (umask 0277 leaves 0400, which the owner cannot write back).
        fs.fchmodSync(fd, 0o600)
      } catch (error) {
        fs.closeSync(fd)
        fs.rmSync(file, { force: true })
        throw error
      }
      return fd
    },
    catch: (error) => new SpillError({ path: file, message: `cannot create spill file ${file}: ${describeError(error)}` })
  })

/** The open file, and why writing stopped (a failed write, or a close that reported one). */
interface OpenFile {
  fd: number | undefined
  error: string | undefined
}

const close = (open: OpenFile) =>
  Effect.sync(() => {
    if (open.fd === undefined) return
    const fd = open.fd
    open.fd = undefined
    try {
      fs.closeSync(fd)
    } catch (error) {
      open.error ??= describeError(error)
    }
  })

const isPlainName = (name: string) =>
  name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\u0000")

/**
 * Creates `path.join(dir, name)` as a new file (never an existing name, never through a symlink), mode 0600, and
 * closes it when the scope closes. The file stays: the caller owns it.
 *
 * @example
 * const spill = yield* makeSpill({ dir: "/var/tmp/runs", maxBytes: 1 << 30, name: "run-1.stdout" })
 * spill.push(chunk) // written before it returns
 */
export const makeSpill = (options: SpillOptions): Effect.Effect<Spill, SpillError, Scope.Scope> =>
  Effect.gen(function*() {
    const file = path.join(options.dir, options.name)
    if (!isPlainName(options.name)) {
      return yield* new SpillError({ path: file, message: `spill file name ${JSON.stringify(options.name)} is not one path component` })
    }
    const maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY
    const open = yield* Effect.acquireRelease(Effect.map(create(file), (fd): OpenFile => ({ fd, error: undefined })), close)
    let arrived = 0
    let written = 0
    return {
      push: (chunk) => {
        arrived += chunk.length
        const room = maxBytes - written
        if (open.error !== undefined || chunk.length === 0 || room <= 0) return
        if (open.fd === undefined) {
          open.error = "the spill file was closed before the stream ended"
          return
        }
        const part = chunk.length <= room ? chunk : chunk.subarray(0, room)
        try {
          // A regular file takes the whole chunk at once unless the disk is full or a limit is hit: then the next
          // write says why.
          for (let offset = 0; offset < part.length;) {
            const n = fs.writeSync(open.fd, part, offset, part.length - offset)
            if (n <= 0) throw new Error(`write returned ${n}`)
            offset += n
            written += n
          }
        } catch (error) {
          open.error = describeError(error)
        }
      },
      path: file,
      written: () => written,
      truncated: () => arrived > maxBytes,
      error: () => open.error
    } satisfies Spill
  })
