/**
 * The CLI's own I/O: our standard streams as a service (so tests can record them), and the files and directories
 * `run` reads, appends to or writes in, checked before anything is spawned.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { fstatSync } from "node:fs"
import { access, constants, open, readFile, stat } from "node:fs/promises"
import { AUDIT_FILE_MODE } from "../Audit.js"
import { UsageError } from "./failures.js"
import { brokenPipe, stdoutFailed } from "./signals.js"

/** Our standard streams as the CLI uses them: everything it prints goes through here, so tests can record it. */
export class Stdio extends Context.Tag("effect-native-runner/Cli/Stdio")<Stdio, {
  /** Writes and waits until the bytes are handed to the OS, so exiting right after loses nothing. */
  readonly stdout: (data: Uint8Array | string) => Effect.Effect<void>
  readonly stderr: (data: Uint8Array | string) => Effect.Effect<void>
  /** Our stdin, read to the end (for `--stdin-file -`). */
  readonly stdin: Effect.Effect<Uint8Array, UsageError>
  /** Whether stdout is a terminal (help keeps its ANSI styles only then). */
  readonly stdoutIsTerminal: boolean
  /**
   * What our stdin is: a `"terminal"` (a local command reads it only when asked: `--stdin pass`, `--stdin-file -`),
   * a `"stream"` (a pipe or a file: passed on by default, as it arrives), or `"recorded"` (tests: `stdin` holds its
   * bytes, which a command gets whole when asked).
   */
  readonly stdinKind: "terminal" | "stream" | "recorded"
  /** Whether our stdout and stderr are the same file (one terminal, or \`2>&1\`): their lines interleave. */
  readonly sharedSink: boolean
}>() {}

const sameFile = (a: number, b: number): boolean => {
  try {
    const [x, y] = [fstatSync(a), fstatSync(b)]
    return x.dev === y.dev && x.ino === y.ino
  } catch {
    return false
  }
}

const errorText = (error: unknown): string => error instanceof Error ? error.message : String(error)

const writeTo = (stream: NodeJS.WriteStream, onError: (error: NodeJS.ErrnoException) => void) => (data: Uint8Array | string) =>
  Effect.async<void>((resume) => {
    if (stream.destroyed) return resume(Effect.void)
    stream.write(data, (error) => {
      if (error !== null && error !== undefined) onError(error)
      resume(Effect.void)
    })
  })

/** What a failed write to our stdout means: its reader went away (EPIPE), or the output is being lost. */
const onStdoutError = (error: NodeJS.ErrnoException) =>
  error.code === "EPIPE" ? brokenPipe() : stdoutFailed(error.code ?? error.message)

/**
 * `Stdio` over the process's own streams. Our stdout's reader going away (EPIPE) ends the run quietly, exit 141
 * (`brokenPipe`); any other failure to write it stops the run, exit 125 (`stdoutFailed`); on stderr a failure is
 * ignored: there is nobody left to tell.
 */
export const layerStdio: Layer.Layer<Stdio> = Layer.sync(Stdio, () => {
  process.stdout.on("error", onStdoutError)
  process.stderr.on("error", () => undefined)
  return makeStdio()
})

const makeStdio = (): Stdio["Type"] => ({
  stdout: writeTo(process.stdout, onStdoutError),
  // A failed write to stderr leaves nobody to tell.
  stderr: writeTo(process.stderr, () => undefined),
  stdin: Effect.tryPromise({
    try: async () => {
      const chunks: Array<Uint8Array> = []
      for await (const chunk of process.stdin) {
        chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)))
      }
      return new Uint8Array(Buffer.concat(chunks))
    },
    catch: (error) => new UsageError({ message: `cannot read our stdin: ${errorText(error)}`, command: "run" })
  }),
  stdoutIsTerminal: process.stdout.isTTY === true && process.env["NO_COLOR"] === undefined,
  stdinKind: process.stdin.isTTY === true ? "terminal" : "stream",
  sharedSink: sameFile(1, 2)
})

/** The bytes of `--stdin-file`: none, our own stdin ("-"), or a file. */
export const readStdinFile = (file: string | undefined): Effect.Effect<Uint8Array | undefined, UsageError, Stdio> =>
  file === undefined
    ? Effect.succeed(undefined)
    : file === "-"
    ? Effect.flatMap(Stdio, (io) => io.stdin)
    : Effect.tryPromise({
      try: async () => new Uint8Array(await readFile(file)),
      catch: (error) => new UsageError({ message: `cannot read --stdin-file: ${errorText(error)}`, command: "run" })
    })

/**
 * Opens the log up front, so an unwritable path is bad usage before anything runs. A new file gets the audit sink's
 * mode (0600), as if the sink had created it.
 */
export const checkAuditLog = (file: string | undefined): Effect.Effect<void, UsageError> =>
  file === undefined ? Effect.void : Effect.tryPromise({
    try: () => open(file, "a", AUDIT_FILE_MODE).then((handle) => handle.close()),
    catch: (error) => new UsageError({ message: `cannot write --audit-log: ${errorText(error)}`, command: "run" })
  })

/**
 * Checks `--spill-dir` up front: a directory we can create files in. The runner would refuse it too, but only as a
 * spawn failure (exit 125); a wrong directory is the caller's mistake, so it is bad usage, as a missing `--cwd` is.
 */
export const checkSpillDir = (dir: string | undefined): Effect.Effect<void, UsageError> =>
  dir === undefined ? Effect.void : Effect.tryPromise({
    try: async () => {
      if (!(await stat(dir)).isDirectory()) throw new Error(`${dir} is not a directory`)
      await access(dir, constants.W_OK | constants.X_OK)
    },
    catch: (error) => new UsageError({ message: `cannot use --spill-dir: ${errorText(error)}`, command: "run" })
  })
