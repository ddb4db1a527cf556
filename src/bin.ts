#!/usr/bin/env node
/**
 * The `native-runner` executable: runs `Cli.main` on the command line with the Node services it needs and exits with
 * the code it returns. SIGHUP, SIGINT (Ctrl-C) and SIGTERM interrupt the run: the command's process tree gets the same
 * signal, then SIGKILL after the kill grace, and its audit line is written before we exit 128+n (129, 130, 143).
 *
 * Shipped as a bundle (`bench/build-bin.mjs`). Only what `main` requires is provided (file system, path, terminal):
 * `NodeContext.layer` would add a `CommandExecutor` the runner does not use and a worker manager whose error schemas
 * are built at start-up (about 10 ms of a ~165 ms start).
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import * as Effect from "effect/Effect"
import { layerStdio, main, RUNNER_FAILED } from "./cli/Cli.js"
import { runToExit } from "./cli/signals.js"

runToExit(
  main(process.argv.slice(2)).pipe(
    Effect.provide([NodeFileSystem.layer, NodePath.layer, NodeTerminal.layer, layerStdio])
  ),
  RUNNER_FAILED
)
