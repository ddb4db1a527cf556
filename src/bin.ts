#!/usr/bin/env node
/**
 * The `native-runner` executable: runs `Cli.main` on the command line with the Node services it needs and exits with
 * the code it returns. Ctrl-C interrupts the run, which kills the command's process tree before we exit (130).
 *
 * Shipped as a bundle (`bench/build-bin.mjs`). Only what `main` requires is provided (file system, path, terminal):
 * `NodeContext.layer` would add a `CommandExecutor` the runner does not use and a worker manager whose error schemas
 * are built at start-up (about 10 ms of a ~165 ms start).
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { layerStdio, main, RUNNER_FAILED } from "./Cli.js"

main(process.argv.slice(2)).pipe(
  Effect.provide([NodeFileSystem.layer, NodePath.layer, NodeTerminal.layer, layerStdio]),
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
