/** `runnerBehaviourSuite`: one `describe` per backend, one topic registrar per scenario group, in a fixed order. */
import { afterAll, beforeAll, describe } from "@effect/vitest"
import { registerAudit } from "./audit.js"
import { makeContext } from "./context.js"
import { registerCwd } from "./cwd.js"
import { registerEnvironment } from "./environment.js"
import { registerExitCodes } from "./exitCodes.js"
import type { Fixture } from "./fixture.js"
import { registerIdle } from "./idle.js"
import { registerInterruption } from "./interruption.js"
import { registerInvalidInput } from "./invalidInput.js"
import { registerKeep } from "./keep.js"
import { registerOutput } from "./output.js"
import { registerSignals } from "./signals.js"
import { registerSpill } from "./spill.js"
import { registerStdin } from "./stdin.js"
import { registerStreaming } from "./streaming.js"
import { registerTimeouts } from "./timeouts.js"

/** The topics, in the order their `describe`s are registered. */
const topics = [
  registerOutput,
  registerStdin,
  registerExitCodes,
  registerSignals,
  registerTimeouts,
  registerInterruption,
  registerEnvironment,
  registerCwd,
  registerInvalidInput,
  registerAudit,
  registerStreaming,
  registerIdle,
  registerKeep,
  registerSpill
] as const

/**
 * Registers the behaviour suite (one `describe` named `name`) for a backend. Every test builds the backend's layer
 * with the options it needs, runs commands through `NativeRunner.exec` (or `execStream`) and checks bytes, exit
 * codes, signals, timings, errors and audit records.
 */
export const runnerBehaviourSuite = <E>(name: string, fixture: Fixture<E>): void => {
  const ctx = makeContext(fixture)
  describe(name, () => {
    beforeAll(ctx.createDir)
    afterAll(ctx.removeDir)
    for (const register of topics) register(ctx)
  })
}
