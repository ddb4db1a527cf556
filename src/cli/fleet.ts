/**
 * The fleet's side of the CLI: `native-runner worker` (serves runs until SIGTERM/SIGINT) and the runner layer of
 * `run --cluster`. Loaded only when one of them is used, so a local `run` never pays for the cluster's modules.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
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
import { parseEndpointUrl } from "../cluster/httpClient.js"
import { FLEET_FILES, readFleetCa } from "../cluster/pki.js"
import * as Postgres from "../cluster/postgres.js"
import { writeCredentials } from "../cluster/tenants.js"
import { FleetError } from "../Errors.js"
import { defaultSandboxUser } from "../internal/sandbox.js"
import { isInside, layoutProblems, resolveIdentity, settle, settleLayout } from "../internal/workspaceAccess.js"
import { constants as fsConstants } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"

/** The environment variable a database URL may come from (the place for one with a password). */
export const DATABASE_URL_ENV = "NATIVE_RUNNER_DATABASE_URL"

/**
 * Reads a `--database-url-file`: a regular file of ours that nobody else can read or write (mode 0600 or 0400), holding
 * one URL (a password allowed: the file is the place for one). Opened without following a symlink.
 */
const readUrlFile = (file: string, command: "worker" | "fleet"): Effect.Effect<string, UsageError> =>
  Effect.tryPromise({
    try: async () => {
      const handle = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW)
      try {
        const stat = await handle.stat()
        if (!stat.isFile()) return { problem: "is not a regular file" }
        const uid = process.geteuid?.() ?? stat.uid
        if (stat.uid !== uid) return { problem: `is owned by uid ${stat.uid}, not by us (uid ${uid})` }
        if ((stat.mode & 0o077) !== 0) {
          return { problem: `is open to others (mode ${(stat.mode & 0o777).toString(8).padStart(4, "0")}); chmod 600 it` }
        }
        return { text: (await handle.readFile("utf8")).trim() }
      } finally {
        await handle.close()
      }
    },
    catch: (error) => error
  }).pipe(
    Effect.catchAll((error) =>
      Effect.succeed({
        problem: (error as NodeJS.ErrnoException).code === "ELOOP" ? "is a symlink" : "cannot be read"
      })
    ),
    Effect.flatMap((read) =>
      "text" in read && read.text !== undefined
        ? Effect.succeed(read.text)
        : Effect.fail(new UsageError({ message: `--database-url-file ${file} ${"problem" in read ? read.problem : ""}`, command }))
    )
  )

/**
 * The database URL from `--database-url-file` (a 0600 file; the place for a password), a flag or the environment. A
 * password on the command line would be visible to every user of the host (`ps`, /proc/PID/cmdline), so a flag's URL
 * must not carry one. Once read, the environment variable is removed from this process's environment, so nothing we
 * start inherits it (the copy in /proc/PID/environ stays: that is why a worker sandboxes its commands).
 */
export const databaseUrl = (
  flag: Option.Option<string>,
  file: Option.Option<string>,
  flagName: string,
  command: "run" | "worker" | "fleet"
): Effect.Effect<Redacted.Redacted<string>, UsageError> =>
  Effect.gen(function*() {
    const usage = (message: string) => new UsageError({ message, command })
    const fromFlag = Option.getOrUndefined(flag)
    if (Option.isSome(file) && fromFlag !== undefined) {
      return yield* usage(`${flagName} and --database-url-file: give one of them`)
    }
    const text = Option.isSome(file)
      ? yield* readUrlFile(file.value, command === "worker" ? "worker" : "fleet")
      : fromFlag === undefined || fromFlag === "env"
      ? process.env[DATABASE_URL_ENV]
      : fromFlag
    delete process.env[DATABASE_URL_ENV]
    if (text === undefined || text === "") {
      return yield* usage(`${flagName} URL, --database-url-file FILE or ${DATABASE_URL_ENV} in the environment is required`)
    }
    let url: URL
    try {
      url = new URL(text)
    } catch {
      return yield* usage(`${Option.isSome(file) ? "--database-url-file" : flagName}: not a URL (postgres://user@host:port/database)`)
    }
    if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
      return yield* usage(`${flagName}: expected a postgres:// URL, got ${url.protocol}`)
    }
    // pg also takes a password (and key material) from the query string: `?password=` is a password too.
    const secretParams = ["password", "sslpassword", "sslkey", "passfile"]
    if (fromFlag !== undefined && fromFlag !== "env" && (url.password !== "" || secretParams.some((p) => url.searchParams.has(p)))) {
      return yield* usage(`${flagName}: a password on the command line is visible to every user of this host; put the URL in a 0600 file (--database-url-file), in ${DATABASE_URL_ENV}, or the password in PGPASSWORD`)
    }
    return Redacted.make(text)
  })

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
      // What the local input already has (`--max-all`), then the caps that are the worker's for a local run.
      ...local.limits,
      ...(request.maxStdoutBytes === undefined ? {} : { maxStdoutBytes: request.maxStdoutBytes }),
      ...(request.maxStderrBytes === undefined ? {} : { maxStderrBytes: request.maxStderrBytes })
    }
  }),
  // Only an explicit --cwd: our own working directory means nothing on the worker.
  ...(Option.isSome(config.cwd) && request.cwd !== undefined ? { cwd: request.cwd } : {})
})

/** The runner layer of `run --cluster URL --credentials FILE`: a fleet client with a tenant's credentials only. */
export const clusterRunnerLayer = (config: RunConfig, url: string) =>
  Effect.gen(function*() {
    const refused = workerOnly(config)
    if (refused !== undefined) {
      return yield* new UsageError({ message: `${refused} is the worker's setting; it does not apply with --cluster`, command: "run" })
    }
    const endpoint = parseEndpointUrl(url)
    if (typeof endpoint === "string") return yield* new UsageError({ message: `--cluster: ${endpoint}`, command: "run" })
    if (Option.isNone(config.credentials)) {
      return yield* new UsageError({ message: "--cluster needs --credentials FILE ('native-runner fleet tenant' writes it)", command: "run" })
    }
    return NativeRunnerCluster.layerClient({ url, credentials: config.credentials.value })
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
  all: false,
  maxAll: Option.none(),
  spillDir: Option.none(),
  spillMax: Option.none(),
  cwd: Option.none(),
  env: [],
  stdinFile: Option.none(),
  stdin: Option.none(),
  cluster: Option.none(),
  credentials: Option.none(),
  requestId: Option.none()
})

/**
 * A worker runs commands nobody here wrote, for every tenant: by default in the sandbox (`--sandbox bwrap`, another
 * uid, its own PID namespace), where they cannot read the worker's environment, its fleet key or its database URL
 * file. Unsandboxed only when asked for by name (`--sandbox none --allow-unsandboxed`). The workspace is given
 * explicitly, and is neither `/` nor holds or lies in the fleet directory or the database URL file.
 */
const checkWorkerSandbox = (config: WorkerConfig & WorkerRunConfig): Effect.Effect<void, UsageError> =>
  Effect.gen(function*() {
    const usage = (message: string) => new UsageError({ message, command: "worker" })
    if (config.sandbox === "none") {
      if (!config.allowUnsandboxed) {
        return yield* usage(
          "--sandbox none runs every tenant's commands as this worker's user, which can read its environment, its " +
            "fleet key and the database; use --sandbox bwrap --workspace DIR, or say --allow-unsandboxed"
        )
      }
      return
    }
    if (config.allowUnsandboxed) return yield* usage("--allow-unsandboxed goes with --sandbox none only")
    // Not root: the sandbox runs tenants' commands as this worker's own uid, and the system directories it binds
    // read-only may hold the fleet directory or the URL file (e.g. /etc/native-runner), readable by that uid.
    const uid = process.geteuid?.()
    if (uid !== undefined && uid !== 0) {
      return yield* usage(
        `--sandbox bwrap as uid ${uid} runs tenants' commands as this same uid, which can read the worker's fleet key ` +
          "and database URL; run the worker as root (its commands then run as --sandbox-user, default 65534), or say " +
          "--sandbox none --allow-unsandboxed"
      )
    }
    if (Option.isNone(config.workspace)) {
      return yield* usage("--sandbox bwrap needs --workspace DIR: the directory tenants' commands may write (at /workspace)")
    }
    if (config.workspace.value.trim() === "") return yield* usage("--workspace: empty (a directory tenants' commands may write)")
    // Paths as a run binds them: symlinks resolved where they exist.
    const workspace = settle(config.workspace.value)
    if (workspace === "/") return yield* usage("--workspace /: the whole host is not a workspace")
    const guarded: Array<readonly [string, string]> = [["the fleet directory", settle(config.fleetDir)]]
    if (Option.isSome(config.databaseUrlFile)) guarded.push(["the database URL file", settle(config.databaseUrlFile.value)])
    for (const [what, guardedPath] of guarded) {
      if (isInside(workspace, guardedPath) || isInside(guardedPath, workspace)) {
        return yield* usage(`--workspace ${config.workspace.value} holds or lies in ${what} (${guardedPath}); tenants' commands could read it`)
      }
    }
    // The check every sandboxed run makes, once at start: a workspace its sandbox user cannot use is refused now,
    // not on each tenant's first run.
    const policy = { workspace, ...Option.match(config.sandboxUser, { onNone: () => ({}), onSome: (user) => ({ user }) }) }
    const identity = yield* Effect.either(resolveIdentity(policy, process.getuid?.() === 0, defaultSandboxUser))
    const problems = identity._tag === "Left" ? [identity.left.message] : layoutProblems(settleLayout(policy), identity.right)
    if (problems.length > 0) return yield* usage(`--workspace ${config.workspace.value}: ${problems.join("; ")}`)
  })

/** `native-runner worker`: joins the fleet and serves runs until interrupted (SIGTERM/SIGINT). */
export const runWorker = (config: WorkerConfig & WorkerRunConfig) =>
  Effect.gen(function*() {
    const io = yield* Stdio
    const flags = config
    const url = yield* databaseUrl(flags.databaseUrl, flags.databaseUrlFile, "--database-url", "worker")
    yield* checkWorkerSandbox(config)
    const request = yield* toRunRequest(asRunConfig(config), ["--", "worker"], process.cwd())
    yield* checkAuditLog(request.auditLog)
    const optional = <K extends string, A>(key: K, value: Option.Option<A>) =>
      Option.match(value, { onNone: () => ({}), onSome: (v) => ({ [key]: v }) as Record<K, A> })
    const layer = NativeRunnerCluster.layerWorker({
      databaseUrl: url,
      fleetDir: flags.fleetDir,
      listen: flags.listen,
      clientListen: Option.getOrUndefined(flags.clientListen),
      health: Option.getOrUndefined(flags.health),
      // Its policy, also the ceiling of what a request may ask for.
      runner: toRunnerOptions(request),
      // The worker's own runner: through the spawn helper (it runs many commands), with --audit-log's sink if given.
      local: request.auditLog === undefined
        ? NativeRunner.layerNode(toRunnerOptions(request))
        : NativeRunner.layerNode(toRunnerOptions(request)).pipe(Layer.provide(Audit.layerJsonl(request.auditLog))),
      ...optional("concurrency", flags.concurrency),
      ...optional("tenantConcurrency", flags.tenantConcurrency),
      ...optional("queue", flags.queue),
      ...optional("grace", Option.map(flags.grace, Duration.millis)),
      ...optional("retention", Option.map(flags.retention, Duration.millis))
    })
    // The drain takes up to the grace; past it plus 15 s, the worker exits anyway (its commands die with it).
    yield* setShutdownDeadline(Option.getOrElse(flags.grace, () => Duration.toMillis(NativeRunnerCluster.WORKER_DEFAULTS.grace)) + 15_000)
    yield* Layer.launch(
      Layer.effectDiscard(
        io.stderr(
          `native-runner worker: serving on ${flags.listen.host}:${flags.listen.port}` +
            Option.match(flags.clientListen, { onNone: () => "", onSome: (c) => `; clients on https://${c.host}:${c.port}/` }) +
            Option.match(flags.health, { onNone: () => "", onSome: (h) => `; health and metrics on http://${h.host}:${h.port}/` }) +
            "\n"
        )
      ).pipe(Layer.provide(layer))
    )
  })

/** What `fleet tenant` and `fleet revoke` were given. */
export interface TenantConfig {
  readonly name: string
  readonly databaseUrl: Option.Option<string>
  readonly databaseUrlFile: Option.Option<string>
}

/** The fleet's database, its schema made if no worker made it yet (idempotent, under the schema lock). */
const withDatabase = <A, E, R>(config: TenantConfig, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const url = yield* databaseUrl(config.databaseUrl, config.databaseUrlFile, "--database-url", "fleet")
    return yield* Effect.zipRight(Postgres.migrate.pipe(Effect.mapError((e) => new FleetError({ reason: "Storage", message: `the fleet's database: ${e.message}` }))), effect).pipe(
      Effect.provide(Postgres.pg(url).pipe(Layer.mapError((e) => new FleetError({ reason: "Unavailable", message: `the fleet's database could not be reached: ${e.message}` }))))
    )
  })

/**
 * `native-runner fleet tenant NAME --fleet-dir DIR --database-url URL [--concurrency N] [--queue N]`: registers the
 * tenant (a new secret; only its hash is stored) and writes DIR/NAME.credentials (0600): its token and the fleet's CA.
 */
export const fleetTenant = (
  config: TenantConfig & {
    readonly fleetDir: string
    readonly concurrency: Option.Option<number>
    readonly queue: Option.Option<number>
  }
) =>
  Effect.gen(function*() {
    const io = yield* Stdio
    const file = path.join(config.fleetDir, `${config.name}.credentials`)
    if (yield* Effect.promise(() => fs.lstat(file).then(() => true, () => false))) {
      return yield* new UsageError({ message: `${file} exists already; remove it first (the old secret stays valid until 'fleet tenant' runs again)`, command: "fleet" })
    }
    const ca = yield* Effect.tryPromise({
      try: () => readFleetCa(config.fleetDir),
      catch: (error) =>
        new UsageError({
          message: (error as NodeJS.ErrnoException).code === "ENOENT"
            ? `no ${FLEET_FILES.caCert} in ${config.fleetDir} ('native-runner fleet init ${config.fleetDir}' makes it)`
            : `cannot use the fleet directory: ${error instanceof Error ? error.message : String(error)}`,
          command: "fleet"
        })
    })
    const credentials = yield* withDatabase(config, NativeRunnerCluster.registerTenant(config.name, {
      ca,
      ...Option.match(config.concurrency, { onNone: () => ({}), onSome: (concurrency) => ({ concurrency }) }),
      ...Option.match(config.queue, { onNone: () => ({}), onSome: (queue) => ({ queue }) })
    }))
    yield* writeCredentials(file, credentials)
    yield* io.stdout(`${file}\n`)
    yield* io.stderr(`native-runner: tenant ${config.name} registered; ${file} (0600) is what its clients need, with --cluster https://WORKER:PORT\n`)
  })

/** `native-runner fleet revoke NAME --database-url URL`: every worker refuses the tenant's credential from now on. */
export const fleetRevoke = (config: TenantConfig) =>
  Effect.gen(function*() {
    const io = yield* Stdio
    yield* withDatabase(config, NativeRunnerCluster.revokeTenant(config.name))
    yield* io.stderr(`native-runner: tenant ${config.name} revoked\n`)
  })
