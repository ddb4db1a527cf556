/**
 * `native-runner workspace adopt DIR` and `native-runner workspace new PARENT`: preparing a sandbox workspace once,
 * before any workload touches it, so that runs never change an owner or mode on the host (`Sandbox.adoptWorkspace`,
 * `Sandbox.makeWorkspace`).
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Sandbox from "../Sandbox.js"
import { Stdio } from "./io.js"
import { checked, examples } from "./options.js"
import { parseSandboxUser } from "./parse.js"

const sandboxUser = Options.text("sandbox-user").pipe(
  Options.withPseudoName("UID:GID"),
  Options.mapEffect(checked("--sandbox-user", parseSandboxUser)),
  Options.withDescription("The user the workspace is for, whole numbers above 0 (default 65534:65534, nobody)."),
  Options.optional
)

const report = (verb: string, prepared: Sandbox.PreparedWorkspace) =>
  Effect.flatMap(Stdio, (io) =>
    io.stdout(`${prepared.path}\n`).pipe(
      Effect.zipRight(io.stderr(`native-runner: ${verb} ${prepared.path} for ${prepared.user.uid}:${prepared.user.gid}\n`))
    ))

const userOf = (user: Option.Option<Sandbox.SandboxUser>) => Option.getOrUndefined(user)

/** `native-runner workspace adopt DIR [--sandbox-user UID:GID]` */
const adoptCommand = Command.make(
  "adopt",
  { sandboxUser, dir: Args.directory({ name: "DIR", exists: "yes" }) },
  (config) => Effect.flatMap(Sandbox.adoptWorkspace(config.dir, { user: userOf(config.sandboxUser) }), (done) => report("adopted", done))
).pipe(Command.withDescription(HelpDoc.blocks([
  HelpDoc.p(
    "Gives an existing tree to the sandbox user, once, before any workload touches it (chown -R --no-dereference, " +
      "under an exclusive lock that every sandboxed run on it holds shared). Refused while a run holds it, for / " +
      "and system or shared directories, a tree holding a home directory, a symlinked path, mount points or " +
      "hard-linked files inside, and a parent the sandbox user could write. Prints the path."
  ),
  examples([["native-runner workspace adopt /srv/jobs/42", "the tree is 65534:65534's; run --sandbox bwrap --workspace /srv/jobs/42"]])
])))

/** `native-runner workspace new PARENT [--sandbox-user UID:GID]` */
const newCommand = Command.make(
  "new",
  { sandboxUser, parent: Args.directory({ name: "PARENT", exists: "yes" }) },
  (config) => Effect.flatMap(Sandbox.makeWorkspace(config.parent, { user: userOf(config.sandboxUser) }), (done) => report("created", done))
).pipe(Command.withDescription(HelpDoc.blocks([
  HelpDoc.p(
    "Creates a fresh, empty workspace PARENT/workspace-XXXXXX (mode 0700) owned by the sandbox user and prints its " +
      "path. PARENT must be reachable by that user but not writable by it."
  ),
  examples([["ws=$(native-runner workspace new /srv/jobs)", "then run --sandbox bwrap --workspace \"$ws\" -- make"]])
])))

/** `native-runner workspace adopt|new` */
export const workspaceCommand = Command.make("workspace").pipe(
  Command.withDescription("Prepares sandbox workspaces: the runner itself never changes an owner or mode for a run."),
  Command.withSubcommands([adoptCommand, newCommand])
)
