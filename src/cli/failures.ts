/**
 * How the CLI fails: bad usage (exit 2, one line and a usage hint), the runner's typed errors mapped to the exit
 * codes shells use, and `@effect/cli`'s help documents flattened to one line.
 */
import type * as HelpDoc from "@effect/cli/HelpDoc"
import * as Data from "effect/Data"
import type { NativeRunnerError, WorkspaceError } from "../Errors.js"
import { spanText } from "./help.js"

/** The command a usage hint is about. */
export type CommandName = "run" | "worker" | "fleet" | "workspace" | "doctor" | "native-runner"

/** Bad usage: nothing was spawned. Exit code 2. */
export class UsageError extends Data.TaggedError("UsageError")<{
  readonly message: string
  readonly command: CommandName
}> {}

/** Exit code when the runner itself could not run the command (as `timeout` and `env` use it). */
export const RUNNER_FAILED = 125

/** The exit code of each failure, as shells and `env` use them. */
export const exitCodeOf = (error: UsageError | NativeRunnerError | WorkspaceError): number => {
  switch (error._tag) {
    case "UsageError":
    case "InvalidInput":
      return 2
    case "SandboxUnavailable":
    case "FleetError":
    case "WorkspaceError":
      return RUNNER_FAILED
    case "SpawnError":
      return error.reason === "NotFound"
        ? 127
        : error.reason === "PermissionDenied"
        ? 126
        : error.reason === "CwdNotFound" || error.reason === "CwdNotDirectory"
        ? 2
        : RUNNER_FAILED
  }
}

/** The one-line usage of a command, printed after a usage error. */
export const usageHint = (command: CommandName): string => {
  switch (command) {
    case "run":
      return "usage: native-runner run [options] -- <command> [args...]   (see 'native-runner run --help')"
    case "worker":
      return "usage: native-runner worker [--database-url URL | --database-url-file FILE] --listen HOST:PORT --fleet-dir DIR --workspace DIR [options]   (see 'native-runner worker --help')"
    case "fleet":
      return "usage: native-runner fleet init DIR [--host NAME]... | native-runner fleet tenant NAME --fleet-dir DIR | native-runner fleet revoke NAME   (see 'native-runner fleet --help')"
    case "workspace":
      return "usage: native-runner workspace adopt DIR | native-runner workspace new PARENT [--sandbox-user UID:GID]   (see 'native-runner workspace --help')"
    case "doctor":
      return "usage: native-runner doctor [--sandbox none|bwrap] [--workspace DIR]   (see 'native-runner doctor --help')"
    case "native-runner":
      return "usage: native-runner run [options] -- <command> [args...] | native-runner worker --listen HOST:PORT | native-runner doctor   (see --help)"
  }
}

const oneLine = (text: string): string => text.replace(/\s*\n\s*/g, " ").trim()

/**
 * The stderr lines of a failure: one line, plus a usage hint for bad usage. An unavailable sandbox says how to fix
 * it on the same line (bwrap's own diagnostics may span lines; they are joined).
 */
export const errorLines = (error: UsageError | NativeRunnerError | WorkspaceError): Array<string> =>
  error._tag === "UsageError"
    ? [`native-runner: ${error.message}`, usageHint(error.command)]
    : error._tag === "InvalidInput"
    ? [`native-runner: ${error.message}`, usageHint("run")]
    : error._tag === "SandboxUnavailable"
    ? [`native-runner: ${oneLine(error.message)} Fix: ${oneLine(error.fix)}`]
    : [`native-runner: ${error.message}`]

/** A `HelpDoc` (the text of a `ValidationError`) as one plain line. */
export const helpDocLine = (doc: HelpDoc.HelpDoc): string => {
  const parts = (d: HelpDoc.HelpDoc): Array<string> => {
    switch (d._tag) {
      case "Empty":
        return []
      case "Header":
      case "Paragraph":
        return [spanText(d.value)]
      case "DescriptionList":
        return d.definitions.flatMap(([term, body]) => [spanText(term), ...parts(body)])
      case "Enumeration":
        return d.elements.flatMap(parts)
      case "Sequence":
        return [...parts(d.left), ...parts(d.right)]
    }
  }
  return parts(doc).join(" ").replace(/\s+/g, " ").trim()
}

/** Which subcommand a bad command line was aimed at, for the usage hint. */
export const commandOf = (args: ReadonlyArray<string>): CommandName =>
  args.find((arg): arg is "run" | "worker" | "fleet" | "workspace" | "doctor" =>
    arg === "run" || arg === "worker" || arg === "fleet" || arg === "workspace" || arg === "doctor") ??
    "native-runner"
