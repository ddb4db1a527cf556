/**
 * The options of `native-runner worker`: its own (database, listen address, health, caps, grace), and the `run`
 * options that make up its local runner's policy (limits, sandbox, environment, audit).
 */
import type * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { checked, choiceOption, countOption, durationOption, runConfig } from "./options.js"
import { parseHostPort } from "./parse.js"

const hostPortOption = (name: string, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("HOST:PORT"),
    Options.mapEffect(checked(`--${name}`, parseHostPort)),
    Options.withDescription(description)
  )

/** The options of `worker`: its own, then the run options that make up its local runner's policy. */
export const workerConfig = {
  databaseUrl: Options.text("database-url").pipe(
    Options.withPseudoName("URL"),
    Options.withDescription(
      "The fleet's PostgreSQL (postgres://user@host:port/db). Without it, NATIVE_RUNNER_DATABASE_URL is used; " +
        "a URL with a password must come from there (or the password from PGPASSWORD), never the command line."
    ),
    Options.optional
  ),
  databaseUrlFile: Options.text("database-url-file").pipe(
    Options.withPseudoName("FILE"),
    Options.withDescription(
      "Reads the database URL (a password allowed) from FILE, which must be ours and readable by us only " +
        "(chmod 600). Instead of --database-url and NATIVE_RUNNER_DATABASE_URL."
    ),
    Options.optional
  ),
  allowUnsandboxed: Options.boolean("allow-unsandboxed").pipe(
    Options.withDescription(
      "With --sandbox none: run tenants' commands as this worker's own user, which can read its environment, " +
        "fleet key and database URL. Without it a worker needs --sandbox bwrap (its default) and --workspace."
    )
  ),
  fleetDir: Options.text("fleet-dir").pipe(
    Options.withPseudoName("DIR"),
    Options.withDescription(
      "The fleet directory ('native-runner fleet init DIR'): the fleet's CA and this worker's certificate and key. " +
        "Every connection to --listen is TLS 1.3 with a client certificate from that CA, or it is dropped before " +
        "anything is read; the worker does not start without it."
    )
  ),
  listen: hostPortOption("listen", "Where this worker listens for the other workers (mutual TLS), e.g. 127.0.0.1:34431."),
  clientListen: hostPortOption(
    "client-listen",
    "Serve clients with tenant credentials here (HTTPS with this worker's fleet certificate), e.g. 0.0.0.0:34440: " +
      "they need no database URL and no fleet certificate; each request is authenticated before its body is read."
  ).pipe(Options.optional),
  health: hostPortOption("health", "Serve GET /health and GET /metrics (Prometheus text) here.").pipe(Options.optional),
  concurrency: countOption("concurrency", "Runs in flight on this worker (default 16)."),
  tenantConcurrency: countOption("tenant-concurrency", "Runs in flight here for one tenant (default: --concurrency)."),
  queue: countOption("queue", "Runs of one tenant waiting here for a slot; one more fails with Busy (default 64)."),
  grace: durationOption("grace", 0, "On SIGTERM/SIGINT, how long runs in flight may finish before they are killed (default 10s)."),
  retention: durationOption(
    "retention",
    0,
    "How long finished runs' stored outcomes (kept stdout and stderr, within the caps) stay in the database, and so " +
      "how long a repeated --request-id is answered from them (default 24h); older ones are deleted."
  )
} as const

/** What `@effect/cli` parsed for `worker`. */
export type WorkerConfig = Command.Command.ParseConfig<typeof workerConfig>

/** The run options a worker takes for its local runner (its policy): limits, sandbox, environment, audit. */
export const workerRunConfig = {
  timeout: runConfig.timeout,
  killGrace: runConfig.killGrace,
  maxStdout: runConfig.maxStdout,
  maxStderr: runConfig.maxStderr,
  inheritEnv: runConfig.inheritEnv,
  sandbox: choiceOption(
    "sandbox",
    ["none", "bwrap"],
    "Run tenants' commands inside bubblewrap (default: bwrap, with --workspace DIR at /workspace, as another " +
      "uid when the worker is root), or not (none, only with --allow-unsandboxed)."
  ).pipe(Options.withDefault("bwrap")),
  workspace: runConfig.workspace,
  network: runConfig.network,
  sandboxUser: runConfig.sandboxUser,
  noSeccomp: runConfig.noSeccomp,
  maxProcs: runConfig.maxProcs,
  maxMemory: runConfig.maxMemory,
  maxFileSize: runConfig.maxFileSize,
  maxCpu: runConfig.maxCpu,
  maxOpenFiles: runConfig.maxOpenFiles,
  auditLog: runConfig.auditLog,
  redactAfter: runConfig.redactAfter
} as const

/** What `@effect/cli` parsed of the worker's run options. */
export type WorkerRunConfig = Command.Command.ParseConfig<typeof workerRunConfig>

