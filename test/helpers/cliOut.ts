/** The CLI run in-process with a recorded stdin and its stdout collected: what `native-runner <args>` printed. */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Cli from "../../src/cli/Cli.js"

export const cliStdout = (args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const out: Array<string> = []
    const stdio = Layer.succeed(Cli.Stdio, {
      stdout: (data) => Effect.sync(() => void out.push(typeof data === "string" ? data : new TextDecoder().decode(data))),
      stderr: () => Effect.void,
      stdin: Effect.succeed(new Uint8Array()),
      stdoutIsTerminal: false,
      stdinKind: "recorded",
      sharedSink: false
    })
    yield* Cli.main(args).pipe(Effect.provide([stdio, NodeContext.layer]))
    return out.join("")
  })
