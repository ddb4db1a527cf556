/**
 * The runner as an Effect service. `layer` spawns real processes through `@effect/platform`'s `CommandExecutor`;
 * `layerNode` comes with the Node context; `toPromiseRunner` bridges to the seed's Promise `NativeRunner`.
 */
import * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import type { NativeRunnerError } from "./Errors.js"
import type { ExecInput, ExecResult } from "./Exec.js"
import { makeSpawner } from "./internal/live.js"
import { makePolicy, type PolicyOptions } from "./internal/policy.js"
import { makeRunner, type RunnerOptions, type RunnerService } from "./internal/runner.js"
import type * as Types from "./types.js"

export type { SandboxOptions } from "./internal/policy.js"
export type { RunnerService as Service } from "./internal/runner.js"

/** Options of the live layer: the shared runner options plus a sandbox or resource limits. */
export interface Options extends RunnerOptions, PolicyOptions {}
export { DEFAULTS } from "./internal/runner.js"

/** The runner service. Its `exec` returns `Effect<ExecResult, NativeRunnerError>`. */
export class NativeRunner extends Context.Tag("effect-native-runner/NativeRunner")<NativeRunner, RunnerService>() {}

/**
 * Runs one command with the `NativeRunner` in context.
 *
 * @example
 * const result = yield* NativeRunner.exec({ argv: ["git", "status"], timeout: "10 seconds" })
 */
export const exec = (input: ExecInput): Effect.Effect<ExecResult, NativeRunnerError, NativeRunner> =>
  Effect.flatMap(NativeRunner, (runner) => runner.exec(input))

/**
 * Builds the live runner over the `CommandExecutor` in context. Bad options fail with `InvalidInput`; a sandbox
 * that cannot run here fails with `SandboxUnavailable` (unless `sandbox.fallback` is `"unsandboxed"`).
 *
 * @example
 * const runner = yield* NativeRunner.make({ sandbox: { policy: { workspace: "/srv/job" } } })
 */
export const make = (
  options: Options = {}
): Effect.Effect<RunnerService, NativeRunnerError, CommandExecutor.CommandExecutor> =>
  Effect.gen(function*() {
    const executor = yield* CommandExecutor.CommandExecutor
    return yield* makeRunner({
      spawner: makeSpawner(executor),
      policy: yield* makePolicy(options),
      hostEnv: process.env,
      hostCwd: process.cwd()
    }, options)
  })

/** The live layer; needs a `CommandExecutor` (e.g. `NodeContext.layer`). */
export const layer = (
  options: Options = {}
): Layer.Layer<NativeRunner, NativeRunnerError, CommandExecutor.CommandExecutor> => Layer.effect(NativeRunner, make(options))

/** The live layer with Node's `CommandExecutor` (and file system) provided. */
export const layerNode = (options: Options = {}): Layer.Layer<NativeRunner, NativeRunnerError> =>
  layer(options).pipe(Layer.provide(NodeContext.layer))

/** A Promise runner backed by a layer, for code outside Effect. Call `dispose` to release the layer. */
export interface PromiseRunner extends Types.NativeRunner {
  /** Runs one command; rejects with the typed error (`InvalidInput`, `SpawnError`, ...) on failure. */
  readonly exec: (input: Types.NativeExecInput) => Promise<ExecResult>
  readonly dispose: () => Promise<void>
}

/**
 * Bridges a runner layer to the seed's Promise `NativeRunner`.
 *
 * @example
 * const runner = NativeRunner.toPromiseRunner(NativeRunner.layerNode())
 * const { exitCode, stdout } = await runner.exec({ argv: ["ls"], limits: { timeoutMs: 5000 } })
 * await runner.dispose()
 */
export const toPromiseRunner = <E>(runnerLayer: Layer.Layer<NativeRunner, E>): PromiseRunner => {
  const runtime = ManagedRuntime.make(runnerLayer)
  return {
    exec: (input) =>
      runtime.runPromiseExit(exec(input)).then((exit) => {
        if (Exit.isSuccess(exit)) return exit.value
        throw Cause.squash(exit.cause)
      }),
    dispose: () => runtime.dispose()
  }
}
