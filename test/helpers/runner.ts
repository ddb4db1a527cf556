/** A runner over a given spawner with nothing else: no policy, no sandbox, no per-run cgroups. */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type { Spawner } from "../../src/internal/engine.js"
import { makeRunner, plainPolicy } from "../../src/internal/runner.js"
import * as NativeRunner from "../../src/NativeRunner.js"

const RunnerOptions = Schema.Struct(NativeRunner.runnerFields)

/** `options` are the shared runner options, decoded (defaults applied) as a layer would. */
export const bareRunner = (spawner: Spawner, options: typeof RunnerOptions.Encoded = {}) =>
  Effect.flatMap(
    NativeRunner.decodeOptions(RunnerOptions, options),
    (decoded) => makeRunner({ spawner, policy: plainPolicy, hostEnv: process.env, hostCwd: process.cwd() }, decoded)
  )
