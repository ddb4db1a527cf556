// @ts-check
/**
 * The spawn helper's entry: `node native-runner-spawn-helper.mjs SOCKET`, started by the host (../spawnHelper.ts)
 * with an IPC channel; SOCKET is the host's Unix socket for the children's output.
 */
import { helperMain } from "./helperProgram.mjs"

const socketPath = process.argv[2]
if (socketPath === undefined || process.send === undefined) {
  process.stderr.write("native-runner-spawn-helper: started by effect-native-runner only (an IPC channel and a socket path)\n")
  process.exit(64)
}
helperMain(process, socketPath)
