/**
 * The test layer's spawner: every call recorded, answered by the first script entry that matches (a `once` entry
 * used up as it answers), a call nothing answers dying with `UnscriptedCall`. The process it starts is
 * ./fakeProcess.ts; `NativeRunnerTest` owns the script's shapes and re-exports `UnscriptedCall`.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type { Call, Entry, Match, RecorderService, Respond, Response } from "../NativeRunnerTest.js"
import type { Spawner } from "./engine.js"
import { checkCwdNow, defaultSpawnMessage, isSpawnFails, startFake } from "./fakeProcess.js"
import { spawnError } from "./live.js"
import { logStdinDefect } from "./stdinWriter.js"
import type { PreparedCommand } from "./prepared.js"

export class UnscriptedCall extends Schema.TaggedError<UnscriptedCall>("effect-native-runner/UnscriptedCall")(
  "UnscriptedCall",
  {
    argv: Schema.Array(Schema.String),
    cwd: Schema.String,
    /** The script's entries, described, in order. */
    script: Schema.Array(Schema.String),
    message: Schema.String
  }
) {}

export const matches = (match: Match, call: Call): boolean => {
  const argv = call.input.argv
  switch (match._tag) {
    case "Argv":
      return argv.length === match.argv.length && match.argv.every((arg, i) => argv[i] === arg)
    case "Prefix":
      return argv.length >= match.prefix.length && match.prefix.every((arg, i) => argv[i] === arg)
    case "Predicate":
      return match.test(call)
  }
}

export const describeEntry = (entry: Entry, used: boolean): string => {
  const what = entry.match._tag === "Argv"
    ? `exact ${JSON.stringify(entry.match.argv)}`
    : entry.match._tag === "Prefix"
    ? `prefix ${JSON.stringify(entry.match.prefix)}`
    : `when ${JSON.stringify(entry.match.description)}`
  return entry.once ? `${what} (once${used ? ", used" : ""})` : what
}

interface ScriptState {
  readonly calls: ReadonlyArray<Call>
  readonly used: ReadonlyArray<boolean>
}

/** Finds the entry for `call` and uses it up in one step, so concurrent calls never share a `once` entry. */
const takeEntry = (script: ReadonlyArray<Entry>, state: Ref.Ref<ScriptState>, call: Call) =>
  Ref.modify(state, (s): [Option.Option<Entry>, ScriptState] => {
    const index = script.findIndex((entry, i) => !(entry.once && s.used[i] === true) && matches(entry.match, call))
    const entry = script[index]
    if (entry === undefined) return [Option.none(), s]
    return [Option.some(entry), { ...s, used: s.used.map((u, i) => u || (i === index && entry.once)) }]
  })

/** The defect of a call no entry answers, listing the script as it stands. */
const unscripted = (script: ReadonlyArray<Entry>, state: Ref.Ref<ScriptState>, call: Call, cwd: string) =>
  Effect.flatMap(Ref.get(state), ({ used }) => {
    const described = script.map((entry, i) => describeEntry(entry, used[i] === true))
    return Effect.die(
      new UnscriptedCall({
        argv: call.input.argv,
        cwd,
        script: described,
        message: `unscripted call ${JSON.stringify(call.input.argv)} in ${cwd}; the script has ` +
          (described.length === 0 ? "no entries" : `these entries:\n  ${described.join("\n  ")}`)
      })
    )
  })

/** Plays the entry's answer: a failed spawn as the live layer reports it, or a started fake process. */
const answer = (respond: Respond, call: Call, command: PreparedCommand) =>
  Effect.gen(function*() {
    const computed = typeof respond === "function" ? respond(call) : respond
    const response: Response = Effect.isEffect(computed) ? yield* computed : computed
    if (isSpawnFails(response)) {
      return yield* Effect.fail(
        spawnError(command, response.reason, response.message ?? defaultSpawnMessage(response.reason, command))
      )
    }
    return yield* startFake(response)
  })

/** The most bytes the fake reads from a stdin `Stream` before the script sees the call. */
export const MAX_FAKE_STDIN_BYTES = 64 * 1024 * 1024

/**
 * A stdin `Stream` read to its end, so the script sees its bytes. One that fails or dies ends there, as a live child's
 * stdin does (the script sees the bytes before; a defect is logged, as live); one that never ends is read until the
 * run's time is up (`withinMs`: its timeout and grace), then taken as it is; one that never fits dies loudly.
 */
const collectStdin = (stream: Stream.Stream<Uint8Array, unknown>, withinMs: number | undefined) =>
  Effect.gen(function*() {
    const chunks: Array<Uint8Array> = []
    const read = { size: 0, tooBig: false }
    const collect = Stream.runForEach(stream, (chunk) => {
      read.size += chunk.length
      if (read.size > MAX_FAKE_STDIN_BYTES) {
        read.tooBig = true
        return Effect.fail("too big")
      }
      chunks.push(chunk)
      return Effect.void
    }).pipe(
      Effect.catchAllDefect(logStdinDefect),
      Effect.ignore,
      // The spawn is uninterruptible: the collection is not, and it ends with the run's time.
      Effect.interruptible
    )
    yield* withinMs === undefined ? collect : Effect.timeoutOption(collect, Duration.millis(withinMs))
    if (read.tooBig) return yield* Effect.dieMessage(`NativeRunnerTest: a stdin stream larger than ${MAX_FAKE_STDIN_BYTES} bytes`)
    return new Uint8Array(Buffer.concat(chunks))
  })

/** The spawner answering calls from `script`, and the recorder of what it saw. */
export const makeFakeSpawner = (
  script: ReadonlyArray<Entry>,
  checkCwd: boolean
): Effect.Effect<{ readonly spawner: Spawner; readonly recorder: RecorderService }> =>
  Effect.map(Ref.make<ScriptState>({ calls: [], used: script.map(() => false) }), (state) => ({
    spawner: {
      spawn: (command, _stdin, runWithinMs) =>
        Effect.gen(function*() {
          // The runner hands every spawn the decoded input it came from; the call records them apart.
          const { input, ...prepared } = command
          if (input === undefined) return yield* Effect.dieMessage("NativeRunnerTest: spawn outside of exec")
          const { stdin, ...rest } = input
          const bytes = stdin === undefined || stdin instanceof Uint8Array ? stdin : yield* collectStdin(stdin, runWithinMs)
          const call: Call = { input: bytes === undefined ? rest : { ...rest, stdin: bytes }, command: prepared }
          yield* Ref.update(state, (s) => ({ ...s, calls: [...s.calls, call] }))
          if (checkCwd) yield* checkCwdNow(command)
          const found = yield* takeEntry(script, state, call)
          if (Option.isNone(found)) return yield* unscripted(script, state, call, command.cwd)
          return yield* answer(found.value.respond, call, command)
        })
    },
    recorder: {
      calls: Effect.map(Ref.get(state), (s) => s.calls),
      pending: Effect.map(
        Ref.get(state),
        (s) => script.flatMap((entry, i) => (entry.once && s.used[i] !== true ? [describeEntry(entry, false)] : []))
      )
    }
  }))
