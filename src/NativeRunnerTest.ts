/**
 * A `NativeRunner` over scripted fake processes, for testing code that runs commands. The fake is a `Spawner`
 * handed to the same `makeRunner` and run engine as the live layer, so decoding, env policy, bounded capture,
 * timeouts, TERM -> grace -> KILL and audits are the very code that runs live; the cwd is checked by the live rules.
 * Only the process is scripted: what it writes (and when, on Effect's `Clock`), how it ends, whether it ignores
 * SIGTERM, or how its spawn fails. Calls nothing in the script answers die loudly with `UnscriptedCall`; every call is
 * recorded.
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type { InvalidInput, SpawnFailure } from "./Errors.js"
import type { ExecInput } from "./Exec.js"
import * as internal from "./internal/fakeSpawner.js"
import type { PreparedCommand } from "./internal/prepared.js"
import { makeRunner, plainPolicy, type RunnerService } from "./internal/runner.js"
import * as NativeRunner from "./NativeRunner.js"

export type { PreparedCommand } from "./internal/prepared.js"

// ---------------------------------------------------------------------------------------------------------------
// What a fake process does
// ---------------------------------------------------------------------------------------------------------------

/** Bytes a fake writes; a string is written as UTF-8. */
export type Data = string | Uint8Array

/** One step of a fake's output, in order: a write to stdout or stderr, or a pause on Effect's `Clock`. */
export type Step =
  | { readonly _tag: "Stdout"; readonly data: Data }
  | { readonly _tag: "Stderr"; readonly data: Data }
  | { readonly _tag: "Sleep"; readonly duration: Duration.DurationInput }

/** Writes `data` to stdout as one chunk. */
export const stdout = (data: Data): Step => ({ _tag: "Stdout", data })
/** Writes `data` to stderr as one chunk. */
export const stderr = (data: Data): Step => ({ _tag: "Stderr", data })
/** Waits `duration` on Effect's `Clock` (so `TestClock.adjust` moves it on, and no real time passes). */
export const sleep = (duration: Duration.DurationInput): Step => ({ _tag: "Sleep", duration })

/**
 * A started fake process. Output is written in this order: `stdout`, `stderr`, then the `output` steps; then it ends
 * as `exit` says. `{}` is a process that writes nothing and exits 0.
 *
 * @example
 * { stdout: "ready\n", output: [NativeRunnerTest.sleep("2 seconds"), NativeRunnerTest.stdout("done\n")], exit: 0 }
 */
export interface FakeProcess {
  /** Written to stdout first; an array is written chunk by chunk. */
  readonly stdout?: Data | ReadonlyArray<Data> | undefined
  /** Written to stderr after `stdout`; an array is written chunk by chunk. */
  readonly stderr?: Data | ReadonlyArray<Data> | undefined
  /** Interleaved, timed output, written after `stdout` and `stderr`. */
  readonly output?: ReadonlyArray<Step> | undefined
  /**
   * How the process ends once its output is written: an exit code (default 0), `{ signal }` to die by that signal
   * (reported as exit code 128+n), or `"never"` to run until it is killed.
   */
  readonly exit?: number | { readonly signal: NodeJS.Signals } | "never" | undefined
  /** When true, SIGTERM does nothing and only SIGKILL ends the process (default false). */
  readonly ignoreTerm?: boolean | undefined
}

/** A spawn that fails with `SpawnError`, as the live layer reports it. */
export interface SpawnFails {
  readonly _tag: "SpawnFails"
  readonly reason: SpawnFailure
  readonly message: string | undefined
}

/**
 * The spawn fails with `SpawnError` and `reason` (e.g. `"NotFound"` for a missing program).
 *
 * @example
 * NativeRunnerTest.exact(["git", "status"], NativeRunnerTest.spawnFails("NotFound"))
 */
export const spawnFails = (reason: SpawnFailure, message?: string): SpawnFails => ({
  _tag: "SpawnFails",
  reason,
  message
})

/** What the fake does for one call: start a process or fail the spawn. */
export type Response = FakeProcess | SpawnFails

/** A response, or a function of the call that computes one (e.g. from `call.input.stdin`), possibly effectfully. */
export type Respond = Response | ((call: Call) => Response | Effect.Effect<Response>)

// ---------------------------------------------------------------------------------------------------------------
// The script
// ---------------------------------------------------------------------------------------------------------------

/** The exec input of a call: as decoded, with stdin as bytes. */
export type CallInput = Omit<ExecInput, "stdin"> & { readonly stdin?: Uint8Array }

/** One call the fake saw. */
export interface Call {
  /** The exec input, as decoded; a stdin `Stream` has been read to its end (up to 64 MiB): here it is its bytes. */
  readonly input: CallInput
  /** What would have been spawned: argv, cwd and the complete env after the env policy. */
  readonly command: PreparedCommand
}

/** Which calls an entry answers. `Argv` and `Prefix` compare the input's argv element by element. */
export type Match =
  | { readonly _tag: "Argv"; readonly argv: ReadonlyArray<string> }
  | { readonly _tag: "Prefix"; readonly prefix: ReadonlyArray<string> }
  | { readonly _tag: "Predicate"; readonly description: string; readonly test: (call: Call) => boolean }

/** One line of a script: which calls it answers, how, and whether only once. */
export interface Entry {
  readonly match: Match
  readonly respond: Respond
  /** A `once` entry answers one call and is then used up; entries are tried in script order. */
  readonly once: boolean
}

/** Options of one script entry. */
export interface EntryOptions {
  /** Answer only the first matching call (default false: answer every matching call). */
  readonly once?: boolean | undefined
}

/**
 * Answers calls whose argv is exactly `argv`.
 *
 * @example
 * NativeRunnerTest.exact(["git", "rev-parse", "HEAD"], { stdout: "4b825dc\n" })
 */
export const exact = (argv: ReadonlyArray<string>, respond: Respond, options: EntryOptions = {}): Entry => ({
  match: { _tag: "Argv", argv },
  respond,
  once: options.once ?? false
})

/**
 * Answers calls whose argv starts with `prefix`.
 *
 * @example
 * NativeRunnerTest.prefix(["git", "push"], { stderr: "rejected\n", exit: 1 }, { once: true })
 */
export const prefix = (argvPrefix: ReadonlyArray<string>, respond: Respond, options: EntryOptions = {}): Entry => ({
  match: { _tag: "Prefix", prefix: argvPrefix },
  respond,
  once: options.once ?? false
})

/**
 * Answers calls `test` accepts; `description` names the entry in `UnscriptedCall` messages.
 *
 * @example
 * NativeRunnerTest.when("cat-like", (call) => call.input.argv[0] === "cat", (call) => ({ stdout: call.input.stdin ?? "" }))
 */
export const when = (
  description: string,
  test: (call: Call) => boolean,
  respond: Respond,
  options: EntryOptions = {}
): Entry => ({
  match: { _tag: "Predicate", description, test },
  respond,
  once: options.once ?? false
})

/**
 * A call no script entry answers. It is a bug in the test's script, not an outcome the code under test should
 * handle, so the fake dies with it (a defect) instead of disguising it as a `SpawnError`.
 */
export const UnscriptedCall: typeof internal.UnscriptedCall = internal.UnscriptedCall
export type UnscriptedCall = internal.UnscriptedCall

// ---------------------------------------------------------------------------------------------------------------
// The recorder
// ---------------------------------------------------------------------------------------------------------------

/** Reads what a `layerTest` runner saw. */
export interface RecorderService {
  /** Every call that reached the spawn step, in order, including spawns that failed and unscripted calls. */
  readonly calls: Effect.Effect<ReadonlyArray<Call>>
  /** The `once` entries not used yet, described; empty when every scripted one-off call happened. */
  readonly pending: Effect.Effect<ReadonlyArray<string>>
}

/** The recorder of the `layerTest` runner in context. */
export class Recorder extends Context.Tag("effect-native-runner/NativeRunnerTest/Recorder")<
  Recorder,
  RecorderService
>() {}

/** Every call the test runner saw, in order. Invalid inputs never get here: nothing was spawned for them. */
export const calls: Effect.Effect<ReadonlyArray<Call>, never, Recorder> = Effect.flatMap(Recorder, (r) => r.calls)

/** The `once` entries not used yet. */
export const pending: Effect.Effect<ReadonlyArray<string>, never, Recorder> = Effect.flatMap(Recorder, (r) => r.pending)

// ---------------------------------------------------------------------------------------------------------------
// The layer
// ---------------------------------------------------------------------------------------------------------------

/** The host environment the fake's inherit policy reads by default: fixed, so tests never see the real one. */
export const DEFAULT_HOST_ENV: Readonly<Record<string, string>> = {
  PATH: "/usr/local/bin:/usr/bin:/bin",
  HOME: "/home/test",
  LANG: "C.UTF-8",
  TZ: "UTC",
  TMPDIR: "/tmp",
  USER: "test",
  SHELL: "/bin/sh"
}

/**
 * Options of `layerTest`: the runner's options (`NativeRunner.runnerFields`) plus what the fake stands in for:
 * - `hostEnv`: the host environment the inherit policy reads (default `DEFAULT_HOST_ENV`; the real one is never read);
 * - `hostCwd`: the host cwd, used when `cwd` is not given (default: the test process's cwd);
 * - `checkCwd`: check the cwd on the real file system like the live layer does: missing -> `SpawnError`
 *   "CwdNotFound", not a directory -> "CwdNotDirectory" (default true). Set false to script calls in directories
 *   that do not exist here.
 * Like the live layer's, a misspelt or unknown key fails with `InvalidInput` naming it.
 */
export const TestOptions = Schema.Struct({
  ...NativeRunner.runnerFields,
  hostEnv: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.UndefinedOr(Schema.String) })),
  hostCwd: Schema.optional(Schema.String),
  checkCwd: Schema.optional(Schema.Boolean)
})
export type TestOptions = { readonly [K in keyof typeof TestOptions.Type]?: (typeof TestOptions.Type)[K] | undefined }

/**
 * Builds the test runner and its recorder. `layerTest` is this as a layer; use `make` to build several runners in
 * one test.
 */
export const make = (
  script: ReadonlyArray<Entry>,
  options: TestOptions = {}
): Effect.Effect<{ readonly runner: RunnerService; readonly recorder: RecorderService }, InvalidInput> =>
  Effect.gen(function*() {
    const { checkCwd, hostCwd, hostEnv, ...runnerOptions } = yield* NativeRunner.decodeOptions(TestOptions, options)
    const { recorder, spawner } = yield* internal.makeFakeSpawner(script, checkCwd !== false)
    const runner = yield* makeRunner({
      spawner,
      policy: plainPolicy,
      hostEnv: hostEnv ?? DEFAULT_HOST_ENV,
      hostCwd: hostCwd ?? process.cwd()
    }, runnerOptions)
    return { runner, recorder }
  })

/**
 * Provides `NativeRunner` answered by `script`, and the `Recorder` of its calls. Entries are tried in order; the
 * first one that matches (and is not a used-up `once` entry) answers. Options are those of `NativeRunner.layer`,
 * plus `hostEnv`, `hostCwd` and `checkCwd`.
 *
 * @example
 * const TestRunner = NativeRunnerTest.layerTest([
 *   NativeRunnerTest.exact(["git", "status", "--porcelain"], { stdout: " M src/index.ts\n" }),
 *   NativeRunnerTest.prefix(["git", "push"], { stderr: "rejected\n", exit: 1 }, { once: true })
 * ])
 */
export const layerTest = (
  script: ReadonlyArray<Entry>,
  options: TestOptions = {}
): Layer.Layer<NativeRunner.NativeRunner | Recorder, InvalidInput> =>
  Layer.effectContext(
    Effect.map(make(script, options), ({ recorder, runner }) =>
      Context.make(NativeRunner.NativeRunner, runner).pipe(Context.add(Recorder, recorder)))
  )
