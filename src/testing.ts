/**
 * The runner's contract, written once as a behaviour suite. Run it against a backend to prove the backend conforms:
 * the live layer runs it with real processes, the test layer with scripted ones, and a new backend (a sandbox, a
 * remote host) runs it with whatever commands express each scenario there. Published as `effect-native-runner/testing`;
 * needs `vitest` and `@effect/vitest`. The suite's topics live in `testing/`, one module each.
 *
 * @example
 * // test/behaviour.mine.test.ts
 * runnerBehaviourSuite("my backend", {
 *   layer: (options) => MyRunner.layer(options),
 *   commands: { cat: ["cat"], pwd: ["pwd"], env: ["env", "-0"], ... },
 *   hostEnv: process.env,
 *   clock: "live",
 *   timing: { timeout: "400 millis", killGrace: "300 millis", slack: "5 seconds", startup: "750 millis", idle: "300 millis" }
 * })
 */
export {
  type Argv,
  type Capability,
  type Commands,
  type Fixture,
  type PacedStep,
  type StreamName,
  SUITE_HOST_ENV,
  type Timing
} from "./testing/fixture.js"
export { runnerBehaviourSuite } from "./testing/suite.js"
