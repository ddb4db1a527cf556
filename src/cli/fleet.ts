/**
 * The fleet's side of the CLI: `native-runner worker` (serves runs until SIGTERM/SIGINT) and the runner layer of
 * `run --cluster`. Loaded only when one of them is used, so a local `run` never pays for the cluster's modules.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Audit from "../Audit.js"
import type { ExecInput } from "../Exec.js"
import * as NativeRunner from "../NativeRunner.js"
import * as NativeRunnerCluster from "../NativeRunnerCluster.js"
import { UsageError } from "./failures.js"
import { checkAuditLog, Stdio } from "./io.js"
import { setShutdownDeadline } from "./signals.js"
import type { RunConfig } from "./options.js"
import type { WorkerConfig, WorkerRunConfig } from "./workerOptions.js"
import { type RunRequest, toRunnerOptions, toRunRequest } from "./request.js"

/** The environment variable a database URL may come from (the place for one with a password). */
export const DATABASE_URL_ENV = "NATIVE_RUNNER_DATABASE_URL"

/**
 * The database URL from a flag or the environment. A password on the command line would be visible to every user of
 * the host (`ps`, /proc/PID/cmdline), so a flag's URL must not carry one.
 */
export const databaseUrl = (
  flag: Option.Option<string>,
  flagName: string,
  command: "run" | "worker"
): Either.Either<Redacted.Redacted<string>, UsageError> => {
  const usage = (message: string) => Either.left(new UsageError({ message, command }))
  const fromFlag = Option.getOrUndefined(flag)
  const text = fromFlag === undefined || fromFlag === "env" ? process.env[DATABASE_URL_ENV] : fromFlag
  if (text === undefined || text === "") {
    return usage(`${flagName} URL (or ${DATABASE_URL_ENV} in the environment) is required`)
  }
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return usage(`${flagName}: not a URL (postgres://user@host:port/database)`)
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    return usage(`${flagName}: expected a postgres:// URL, got ${url.protocol}`)
  }
  if (fromFlag !== undefined && fromFlag !== "env" && url.password !== "") {
    return usage(`${flagName}: a password on the command line is visible to every user of this host; put the URL in ${DATABASE_URL_ENV} or the password in PGPASSWORD`)
  }
  return Either.right(Redacted.make(text))
}

/** Run options that belong to the worker (its policy), refused with `--cluster` rather than silently ignored. */
const workerOnly = (config: RunConfig): string | undefined => {
  const given: ReadonlyArray<readonly [string, boolean]> = [
    ["--sandbox", config.sandbox !== "none"],
    ["--max-procs", Option.isSome(config.maxProcs)],
    ["--max-memory", Option.isSome(config.maxMemory)],
    ["--max-file-size", Option.isSome(config.maxFileSize)],
    ["--max-cpu", Option.isSome(config.maxCpu)],
    ["--max-open-files", Option.isSome(config.maxOpenFiles)],
    ["--inherit-env", Option.isSome(config.inheritEnv)],
    ["--audit-log", Option.isSome(config.auditLog)],
    ["--redact-after", config.redactAfter.length > 0]
  ]
  return given.find(([, isSet]) => isSet)?.[0]
}

/** What `run --cluster` sends: the request's per-run settings, all in the exec input (the worker has its own layer). */
export const clusterInput = (request: RunRequest, config: RunConfig, local: ExecInput): ExecInput => ({
  ...local,
  ...(request.timeoutMs === undefined ? {} : { timeout: Duration.millis(request.timeoutMs) }),
  ...(request.killGraceMs === undefined ? {} : { killGrace: Duration.millis(request.killGraceMs) }),
  ...(request.maxStdoutBytes === undefined && request.maxStderrBytes === undefined ? {} : {
    limits: {
      ...(request.maxStdoutBytes === undefined ? {} : { maxStdoutBytes: request.maxStdoutBytes }),
      ...(request.maxStderrBytes === undefined ? {} : { maxStderrBytes: request.maxStderrBytes })
    }
  }),
  // Only an explicit --cwd: our own working directory means nothing on the worker.
  ...(Option.isSome(config.cwd) && request.cwd !== undefined ? { cwd: request.cwd } : {})
})

/** The runner layer of `run --cluster URL`: a fleet client. */
export const clusterRunnerLayer = (config: RunConfig, url: string) =>
  Effect.gen(function*() {
    const refused = workerOnly(config)
    if (refused !== undefined) {
      return yield* new UsageError({ message: `${refused} is the worker's setting; it does not apply with --cluster`, command: "run" })
    }
    const databaseUrlValue = yield* databaseUrl(Option.some(url), "--cluster", "run")
    if (Option.isNone(config.fleetDir)) {
      return yield* new UsageError({ message: "--cluster needs --fleet-dir DIR (the fleet's certificates: 'native-runner fleet init')", command: "run" })
    }
    return NativeRunnerCluster.layerClient({
      databaseUrl: databaseUrlValue,
      fleetDir: config.fleetDir.value,
      ...Option.match(config.tenant, { onNone: () => ({}), onSome: (tenant) => ({ tenant }) })
    })
  })

/** Runs `effect` under `--request-id` when given. */
export const withRequestId = <A, E, R>(config: RunConfig, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Option.match(config.requestId, {
    onNone: () => effect,
    onSome: (id) => NativeRunnerCluster.withRequestId(id, effect)
  })

/** The worker's run options as a full `run` config (what is about one run only left unset), for `toRunRequest`. */
const asRunConfig = (config: WorkerRunConfig): RunConfig => ({
  ...config,
  argv: ["worker"],
  json: false,
  jsonl: false,
  idleTimeout: Option.none(),
  keep: Option.none(),
  spillDir: Option.none(),
  spillMax: Option.none(),
  cwd: Option.none(),
  env: [],
  stdinFile: Option.none(),
  cluster: Option.none(),
  fleetDir: Option.none(),
  tenant: Option.none(),
  requestId: Option.none()
})

/** `native-runner worker`: joins the fleet and serves runs until interrupted (SIGTERM/SIGINT). */
export const runWorker = (config: WorkerConfig & WorkerRunConfig) =>
  Effect.gen(function*() {
    const io = yield* Stdio
    const flags = config
    const url = yield* databaseUrl(flags.databaseUrl, "--database-url", "worker")
    const request = yield* toRunRequest(asRunConfig(config), ["--", "worker"], process.cwd())
    yield* checkAuditLog(request.auditLog)
    const optional = <K extends string, A>(key: K, value: Option.Option<A>) =>
      Option.match(value, { onNone: () => ({}), onSome: (v) => ({ [key]: v }) as Record<K, A> })
    const layer = NativeRunnerCluster.layerWorker({
      databaseUrl: url,
      fleetDir: flags.fleetDir,
      listen: flags.listen,
      health: Option.getOrUndefined(flags.health),
      // The worker's own runner: through the spawn helper (it runs many commands), with --audit-log's sink if given.
      local: request.auditLog === undefined
        ? NativeRunner.layerNode(toRunnerOptions(request))
        : NativeRunner.layerNode(toRunnerOptions(request)).pipe(Layer.provide(Audit.layerJsonl(request.auditLog))),
      ...optional("concurrency", flags.concurrency),
      ...optional("tenantConcurrency", flags.tenantConcurrency),
      ...optional("queue", flags.queue),
      ...optional("grace", Option.map(flags.grace, Duration.millis))
    })
    // The drain takes up to the grace; past it plus 15 s, the worker exits anyway (its commands die with it).
    yield* setShutdownDeadline(Option.getOrElse(flags.grace, () => Duration.toMillis(NativeRunnerCluster.WORKER_DEFAULTS.grace)) + 15_000)
    yield* Layer.launch(
      Layer.effectDiscard(
        io.stderr(
          `native-runner worker: serving on ${flags.listen.host}:${flags.listen.port}` +
            Option.match(flags.health, { onNone: () => "", onSome: (h) => `; health and metrics on http://${h.host}:${h.port}/` }) +
            "\n"
        )
      ).pipe(Layer.provide(layer))
    )
  })
