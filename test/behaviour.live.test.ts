/** The behaviour suite against the live layer: real processes, real time; through the spawn helper and directly. */
import * as NativeRunner from "../src/NativeRunner.js"
import { runnerBehaviourSuite, SUITE_HOST_ENV, type Timing } from "../src/testing.js"
import { liveCommands } from "./helpers/liveCommands.js"

// The env scenarios need known variables in the host env the live layer inherits from, which is process.env.
Object.assign(process.env, SUITE_HOST_ENV)

const timing: Timing = { timeout: "400 millis", killGrace: "300 millis", slack: "5 seconds", startup: "750 millis", idle: "300 millis" }

runnerBehaviourSuite("NativeRunner.layerNode (live processes, through the spawn helper)", {
  layer: (options) => NativeRunner.layerNode(options),
  commands: liveCommands,
  hostEnv: process.env,
  clock: "live",
  timing
})

runnerBehaviourSuite("NativeRunner.layerNode (live processes, spawnHelper: off)", {
  layer: (options) => NativeRunner.layerNode({ ...options, spawnHelper: "off" }),
  commands: liveCommands,
  hostEnv: process.env,
  clock: "live",
  timing
})
