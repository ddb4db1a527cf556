/**
 * What a platform `StandardCommand` describes, as the runner's exec input: program and arguments (`runInShell`: the
 * shell with `-c` and the words joined, as Node's `shell` option does), `env` and `workingDirectory`. Shared by
 * `NativeRunner.execCommand` and `layerCommandExecutor`, which each decide the stdin.
 */
import type * as Command from "@effect/platform/Command"
import * as HashMap from "effect/HashMap"
import * as Option from "effect/Option"
import type * as Stream from "effect/Stream"
import type { ExecInput } from "../Exec.js"

/** The program a command runs: its own, or the shell it runs in. */
export const programOf = (command: Command.StandardCommand): string =>
  command.shell === false ? command.command : command.shell === true ? "/bin/sh" : command.shell

/** The exec input of `command`, with `stdin` as given. */
export const standardInput = (
  command: Command.StandardCommand,
  stdin: Stream.Stream<Uint8Array, unknown> | undefined
): ExecInput => {
  const argv = command.shell === false
    ? [command.command, ...command.args]
    : [programOf(command), "-c", [command.command, ...command.args].join(" ")]
  const env = Object.fromEntries(HashMap.toEntries(command.env))
  return {
    argv,
    ...(Object.keys(env).length === 0 ? {} : { env }),
    ...(Option.isSome(command.cwd) ? { cwd: command.cwd.value } : {}),
    ...(stdin === undefined ? {} : { stdin })
  }
}
