/**
 * `native-runner fleet init DIR [--host NAME]...`: the fleet's CA and a member certificate, made once with `openssl`,
 * that every worker (and, for now, every `run --cluster` client) presents and checks: the fleet's connections are
 * mutually authenticated TLS, and a worker answers nothing to a peer without a certificate from this CA.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as Effect from "effect/Effect"
import * as path from "node:path"
import { FLEET_FILES, initFleet } from "../cluster/pki.js"
import { Stdio } from "./io.js"
import { countOption, examples } from "./options.js"

const host = Options.text("host").pipe(
  Options.withPseudoName("NAME"),
  Options.withDescription(
    "A name or IP address the workers are dialled by, written into the certificate (repeatable; default: this " +
      "machine's hostname, localhost and 127.0.0.1)."
  ),
  Options.repeated
)

/** `native-runner fleet init DIR [--host NAME]...` */
const initCommand = Command.make(
  "init",
  { host, dir: Args.text({ name: "DIR" }) },
  (config) =>
    Effect.gen(function*() {
      const dir = path.resolve(config.dir)
      const names = yield* initFleet(dir, config.host)
      const io = yield* Stdio
      yield* io.stdout(`${dir}\n`)
      yield* io.stderr(
        `native-runner: made the fleet's CA and a member certificate for ${names.join(", ")} in ${dir} ` +
          `(${Object.values(FLEET_FILES).join(", ")}, all 0600). Give workers ${FLEET_FILES.caCert}, ` +
          `${FLEET_FILES.cert} and ${FLEET_FILES.key}; keep ${FLEET_FILES.caKey} off them.\n`
      )
    })
).pipe(Command.withDescription(HelpDoc.blocks([
  HelpDoc.p(
    "Makes a fleet directory: a CA of the fleet's own (ca.crt, ca.key; ten years) and a member certificate and key " +
      "signed by it (worker.crt, worker.key; 825 days) naming the hosts given, and metrics.token (the bearer token " +
      "of the workers' GET /metrics), all files 0600 in a 0700 directory. " +
      "Workers and clients trust only this CA, present the member certificate, and check the name they dial " +
      "against it. Nothing existing is overwritten. Needs openssl."
  ),
  examples([
    ["native-runner fleet init /etc/native-runner/fleet", "for this machine (its hostname, localhost, 127.0.0.1)"],
    ["native-runner fleet init ./fleet --host worker-1.internal --host 10.0.0.7", "for workers dialled by those names"]
  ])
])))

const databaseUrlOption = Options.text("database-url").pipe(
  Options.withPseudoName("URL"),
  Options.withDescription(
    "The fleet's PostgreSQL (postgres://user@host:port/db). Without it, NATIVE_RUNNER_DATABASE_URL is used; a URL " +
      "with a password must come from there (or the password from PGPASSWORD), never the command line."
  ),
  Options.optional
)

const databaseUrlFileOption = Options.text("database-url-file").pipe(
  Options.withPseudoName("FILE"),
  Options.withDescription("Reads the database URL (a password allowed) from FILE, ours and readable by us only (chmod 600)."),
  Options.optional
)

const loadFleet = Effect.promise(() => import("./fleet.js"))

/** `native-runner fleet tenant NAME --fleet-dir DIR --database-url URL [--concurrency N] [--queue N]` */
const tenantCommand = Command.make(
  "tenant",
  {
    fleetDir: Options.text("fleet-dir").pipe(
      Options.withPseudoName("DIR"),
      Options.withDescription("The fleet directory ('fleet init'): its CA goes into the credentials, written here.")
    ),
    databaseUrl: databaseUrlOption,
    databaseUrlFile: databaseUrlFileOption,
    concurrency: countOption("concurrency", "The tenant's runs in flight on each worker (at most the worker's own cap)."),
    queue: countOption("queue", "The tenant's runs waiting on each worker (at most the worker's own queue)."),
    name: Args.text({ name: "NAME" })
  },
  (config) => Effect.flatMap(loadFleet, (fleet) => fleet.fleetTenant(config))
).pipe(Command.withDescription(HelpDoc.blocks([
  HelpDoc.p(
    "Registers a tenant in the database the workers share and writes DIR/NAME.credentials (0600): the tenant's " +
      "token and the fleet's CA, everything a client needs (no database URL, no certificate of its own). Only the " +
      "token secret's SHA-256 is stored. Again for the same name: a new secret; the old one stops working."
  ),
  examples([
    ["native-runner fleet tenant acme --fleet-dir /etc/native-runner/fleet --concurrency 4", "then: run --cluster https://worker-1:34440 --credentials /etc/native-runner/fleet/acme.credentials -- make"]
  ])
])))

/** `native-runner fleet revoke NAME --database-url URL` */
const revokeCommand = Command.make(
  "revoke",
  { databaseUrl: databaseUrlOption, databaseUrlFile: databaseUrlFileOption, name: Args.text({ name: "NAME" }) },
  (config) => Effect.flatMap(loadFleet, (fleet) => fleet.fleetRevoke(config))
).pipe(Command.withDescription(HelpDoc.blocks([
  HelpDoc.p("Revokes a tenant: every worker refuses its credential from the next request on."),
  examples([["native-runner fleet revoke acme", "with NATIVE_RUNNER_DATABASE_URL set"]])
])))

/** `native-runner fleet init|tenant|revoke` */
export const fleetCommand = Command.make("fleet").pipe(
  Command.withDescription("Sets up a fleet's trust: its CA and member certificates, and its tenants' credentials."),
  Command.withSubcommands([initCommand, tenantCommand, revokeCommand])
)
