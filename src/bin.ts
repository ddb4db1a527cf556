#!/usr/bin/env node
/**
 * The `native-runner` executable: runs `Cli.main` on the command line with the Node context and exits with the code
 * it returns. Ctrl-C interrupts the run, which kills the command's process tree before we exit (130).
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { layerStdio, main, RUNNER_FAILED } from "./Cli.js"

main(process.argv.slice(2)).pipe(
  Effect.provide([NodeContext.layer, layerStdio]),
  NodeRuntime.runMain({
    teardown: (exit, onExit) =>
      onExit(
        Exit.isSuccess(exit)
          ? typeof exit.value === "number" ? exit.value : 0
          : Cause.isInterruptedOnly(exit.cause)
          ? 130
          // A defect: runMain has already reported it; exit as "the runner itself failed".
          : RUNNER_FAILED
      )
  })
)
