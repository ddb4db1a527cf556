/**
 * Found in review (2026-12-04), kept as tests: `run --cluster ... --json --all --max-all N --max-stdout M` must send both caps to the worker.
 * fleet.clusterInput builds `limits` from --max-stdout/--max-stderr alone, over the one toExecInput put --max-all in.
 */
import * as CliCommand from "@effect/cli/Command"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Ref from "effect/Ref"
import * as Cli from "../../src/cli/Cli.js"
import { clusterInput } from "../../src/cli/fleet.js"
import { toWire } from "../../src/cluster/protocol.js"

const parseRun = (args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const parsed = yield* Ref.make<{ config: Cli.RunConfig; request: Either.Either<Cli.RunRequest, Cli.UsageError> } | undefined>(undefined)
    const command = CliCommand.withHandler(Cli.runCommand, (config) =>
      Ref.set(parsed, { config, request: Cli.toRunRequest(config, ["run", ...args], "/home/me") }))
    yield* CliCommand.run(command, { name: "native-runner", version: Cli.VERSION })(["node", "bin", ...args])
    const got = yield* Ref.get(parsed)
    return got === undefined ? yield* Effect.dieMessage("the handler did not run") : got
  }).pipe(Effect.provide(NodeContext.layer))

describe("the CLI's --max-all with --cluster", () => {
  it.live("--max-all reaches the wire next to --max-stdout", () =>
    Effect.gen(function*() {
      const { config, request } = yield* parseRun([
        "--cluster", "https://fleet.example:8443", "--credentials", "/tmp/creds.json",
        "--json", "--all", "--max-all", "100", "--max-stdout", "1000", "--", "echo", "hi"
      ])
      const req = Either.getOrThrow(request)
      const wire = yield* toWire(clusterInput(req, config, Cli.toExecInput(req, undefined)))
      expect([wire.all, wire.limits]).toStrictEqual([true, { maxStdoutBytes: 1000, maxAllBytes: 100 }])
    }))
})
