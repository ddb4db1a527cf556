/**
 * The runner as an Effect service. `layerNode` spawns real processes with the project's own Node spawner (and is the
 * only live layer that can sandbox); `layer` runs over any `@effect/platform` `CommandExecutor` you bring;
 * `toPromiseRunner` bridges to the seed's Promise `NativeRunner`.
 */
import * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { NativeRunnerError } from "./Errors.js"
import type { ExecInput, ExecResult } from "./Exec.js"
import type { Spawner } from "./internal/engine.js"
import { makeSpawner } from "./internal/live.js"
import { makeNodeSpawner } from "./internal/nodeSpawner.js"
import { makeRunCgroups, type RunCgroups } from "./internal/runCgroup.js"
import { makePolicy, type PolicyOptions } from "./internal/policy.js"
import { hostCwd, makeRunner, type RunnerOptions, type RunnerService } from "./internal/runner.js"
import { type PromiseRunner, type PromiseRunnerOptions, toPromiseRunner as promiseRunner } from "./internal/promiseRunner.js"

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

const makeWith = (
  spawner: Spawner,
  capabilities: { readonly canSandbox: boolean; readonly runCgroups?: RunCgroups | undefined },
  options: Options
) =>
  Effect.gen(function*() {
    return yield* makeRunner({
      spawner,
      policy: yield* makePolicy(options, capabilities),
      hostEnv: process.env,
      // Read once: a host whose cwd is deleted later keeps working (a deleted default cwd is a SpawnError per exec).
      hostCwd: hostCwd()
    }, options)
  })

/**
 * Builds the live runner over the `CommandExecutor` in context. Bad options fail with `InvalidInput`. A sandbox needs
 * descriptors `Command` cannot pass, so here it fails with `SandboxUnavailable` (use `makeNode`), unless
 * `sandbox.fallback` is `"unsandboxed"`.
 *
 * @example
 * const runner = yield* NativeRunner.make({ timeout: "10 seconds" })
 */
export const make = (
  options: Options = {}
): Effect.Effect<RunnerService, NativeRunnerError, CommandExecutor.CommandExecutor> =>
  Effect.flatMap(CommandExecutor.CommandExecutor, (executor) => makeWith(makeSpawner(executor), { canSandbox: false }, options))

/**
 * Builds the live runner on the project's own Node spawner, in the scope (which owns its per-run cgroups, where this
 * host can make them). Bad options fail with `InvalidInput`; a sandbox that cannot run here fails with
 * `SandboxUnavailable` (unless `sandbox.fallback` is `"unsandboxed"`).
 *
 * @example
 * const runner = yield* NativeRunner.makeNode({ sandbox: { policy: { workspace: "/srv/job" } } })
 */
export const makeNode = (options: Options = {}): Effect.Effect<RunnerService, NativeRunnerError, Scope.Scope> =>
  Effect.flatMap(makeRunCgroups, (runCgroups) => makeWith(makeNodeSpawner(), { canSandbox: true, runCgroups }, options))

/** The live layer over the `CommandExecutor` in context (bring your own); no sandbox. */
export const layer = (
  options: Options = {}
): Layer.Layer<NativeRunner, NativeRunnerError, CommandExecutor.CommandExecutor> => Layer.effect(NativeRunner, make(options))

/** The live layer on the project's own Node spawner: no requirements, sandbox and limits supported. */
export const layerNode = (options: Options = {}): Layer.Layer<NativeRunner, NativeRunnerError> =>
  Layer.scoped(NativeRunner, makeNode(options))

export type { PromiseRunner, PromiseRunnerOptions } from "./internal/promiseRunner.js"

/**
 * Bridges a runner layer to the seed's Promise `NativeRunner`. By default it also kills running commands when the
 * host gets SIGTERM, SIGINT or SIGHUP or is about to exit (`cleanup: false` opts out); `dispose` interrupts execs in
 * flight and resolves once their trees are gone.
 *
 * @example
 * const runner = NativeRunner.toPromiseRunner(NativeRunner.layerNode())
 * const { exitCode, stdout } = await runner.exec({ argv: ["ls"], limits: { timeoutMs: 5000 } })
 * await runner.dispose()
 */
export const toPromiseRunner = <E>(
  runnerLayer: Layer.Layer<NativeRunner, E>,
  options?: PromiseRunnerOptions
): PromiseRunner => promiseRunner(runnerLayer, exec, options)
