/**
 * The spawner of `layerNode`: through the spawn helper (`internal/spawnHelper`), directly, or by the host's size.
 * A helper that cannot start (no usable `process.execPath`, say) leaves the layer spawning directly, with a warning.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Spawner } from "./engine.js"
import { makeNodeSpawner } from "./nodeSpawner.js"
import { makeAdaptiveSpawner, makeHelperSpawner } from "./spawnHelper.js"

/** `"always"`: every child through the helper; `"auto"`: directly while the host is small; `"off"`: directly. */
export type SpawnHelperMode = "always" | "auto" | "off"

export const makeLiveSpawner = (mode: SpawnHelperMode): Effect.Effect<Spawner, never, Scope.Scope> =>
  mode === "off"
    ? Effect.succeed(makeNodeSpawner())
    : makeHelperSpawner.pipe(
      Effect.map((helper): Spawner => mode === "always" ? helper : makeAdaptiveSpawner(makeNodeSpawner(), helper)),
      Effect.catchAll((error) =>
        Effect.as(Effect.logWarning(`spawn helper unavailable, spawning directly: ${error.message}`), makeNodeSpawner())
      )
    )
