/**
 * The `@effect/cli` options of `run` and `doctor`. Each value is checked by a parser of `parse.ts` while parsing, so a
 * bad value is a `ValidationError` that names its option.
 */
import * as Args from "@effect/cli/Args"
import type * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { MAX_BYTES_CAP, MAX_TIMEOUT_MS } from "../Exec.js"
import { formatMillis, parseDuration, parseEnvPair, parseSandboxIdentity, parseSize } from "./parse.js"

export const checked = <A>(name: string, parse: (text: string) => Either.Either<A, string>) => (text: string) =>
  Either.match(parse(text), {
    onLeft: (reason) => Effect.fail(ValidationError.invalidValue(HelpDoc.p(`${name}: ${reason}`))),
    onRight: Effect.succeed
  })

const atMost = (max: number, what: string) => (n: number): Either.Either<number, string> =>
  n <= max ? Either.right(n) : Either.left(`${what} must be at most ${max}`)
const atLeastOne = (n: number): Either.Either<number, string> =>
  n >= 1 ? Either.right(n) : Either.left("must be at least 1")

const sizeOption = (name: string, max: number, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("size"),
    Options.mapEffect(checked(`--${name}`, (s) => Either.flatMap(parseSize(s), atMost(max, "size")))),
    Options.withDescription(description),
    Options.optional
  )

/**
 * A duration option (see `parseDuration`). With `off`, `0` and `none` turn the limit off, as `timeout 0` does: the
 * option then reads as `off` gives it (the largest timeout the runner takes, or absent).
 */
export const durationOption = (name: string, min: number, description: string, off?: { readonly as: number | undefined }) =>
  Options.text(name).pipe(
    Options.withPseudoName("duration"),
    Options.mapEffect(checked(`--${name}`, (s): Either.Either<number | undefined, string> =>
      off !== undefined && s.trim() === "none" ? Either.right(off.as) : Either.flatMap(parseDuration(s), (ms) =>
        off !== undefined && ms === 0
          ? Either.right(off.as)
          : ms < min
          ? Either.left(`must be at least ${formatMillis(min)}`)
          : ms > MAX_TIMEOUT_MS
          ? Either.left(`must be at most ${MAX_TIMEOUT_MS}ms`)
          : Either.right(ms)))),
    Options.withDescription(description),
    Options.optional,
    Options.map(Option.flatMap(Option.fromNullable))
  )

export const countOption = (name: string, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("n"),
    Options.mapEffect(checked(`--${name}`, (s) =>
      /^\d+$/.test(s) ? atLeastOne(Number(s)) : Either.left(`'${s}' is not a whole number`))),
    Options.withDescription(description),
    Options.optional
  )

// `Options.choice` reports "Expected one of ..." without naming the option; this names it.
export const choiceOption = <const C extends ReadonlyArray<string>>(name: string, choices: C, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName(choices.join("|")),
    Options.mapEffect(checked(`--${name}`, (s): Either.Either<C[number], string> => {
      const found = choices.find((choice) => choice === s)
      return found === undefined
        ? Either.left(`unknown value '${s}' (use ${choices.join(" or ")})`)
        : Either.right(found)
    })),
    Options.withDescription(description)
  )

/** The options and argument of `run`. */
export const runConfig = {
  timeout: durationOption(
    "timeout",
    1,
    "Wall-clock limit (default 60s; 0 or none: off). On expiry the process tree gets SIGTERM, then SIGKILL " +
      "after --kill-grace; exit code 124.",
    { as: MAX_TIMEOUT_MS }
  ),
  killGrace: durationOption("kill-grace", 0, "Time between SIGTERM and SIGKILL when a run is stopped (default 2s)."),
  idleTimeout: durationOption(
    "idle-timeout",
    1,
    "Stops the run when neither stdout nor stderr has had output for this long (default and 0 or none: off), " +
      "as --timeout does: SIGTERM, then SIGKILL after --kill-grace; exit code 124.",
    { as: undefined }
  ),
  maxStdout: sizeOption(
    "max-stdout",
    MAX_BYTES_CAP,
    "Bytes of stdout kept and printed (default 1MiB). The rest is read and counted, not printed; a notice says so."
  ),
  maxStderr: sizeOption("max-stderr", MAX_BYTES_CAP, "Bytes of stderr kept and printed (default 1MiB)."),
  keep: choiceOption(
    "keep",
    ["head", "tail", "both"],
    "Which bytes of each stream the caps keep: head (default; printed as they arrive, up to the cap), tail (the " +
      "last ones, printed when the run ends) or both (the first half of the cap as it arrives, the last half at " +
      "the end). A notice says what was cut."
  ).pipe(Options.optional),
  spillDir: Options.text("spill-dir").pipe(
    Options.withPseudoName("dir"),
    Options.withDescription(
      "Also writes each stream whole to a new file (mode 0600) in this existing directory, named " +
        "native-runner-<runId>.stdout and .stderr; a notice gives the paths. The files are yours. A missing " +
        "directory is bad usage (exit 2)."
    ),
    Options.optional
  ),
  spillMax: sizeOption(
    "spill-max",
    Number.MAX_SAFE_INTEGER,
    "Bytes written to each --spill-dir file at most (default: no limit)."
  ),
  cwd: Options.text("cwd").pipe(
    Options.withPseudoName("dir"),
    Options.withDescription(
      "Working directory (default: ours; with --sandbox bwrap, the workspace, and it must lie inside it). " +
        "A missing directory is bad usage (exit 2)."
    ),
    Options.optional
  ),
  env: Options.text("env").pipe(
    Options.withPseudoName("KEY=VALUE"),
    Options.withDescription("Sets a variable for the command; repeatable. Always wins over inherited ones."),
    Options.repeated,
    Options.mapEffect(Effect.forEach(checked("--env", parseEnvPair)))
  ),
  inheritEnv: choiceOption(
    "inherit-env",
    ["none", "core", "all"],
    "What the command inherits from our environment: none, core (PATH, HOME, LANG, ...) or all. Default core; " +
      "none with --sandbox bwrap, whose PATH, HOME and TMPDIR are its own. Secret-looking names (KEY, TOKEN, " +
      "PASS, ...) and URLs with credentials (scheme://user:pass@host) never pass; --env is never filtered."
  ).pipe(Options.optional),
  stdinFile: Options.text("stdin-file").pipe(
    Options.withPseudoName("path"),
    Options.withDescription(
      "Feeds this file to the command's stdin (read whole first); '-' is our own stdin, passed on as it arrives."
    ),
    Options.optional
  ),
  stdin: choiceOption(
    "stdin",
    ["pass", "none"],
    "pass: the command reads our stdin as it arrives (never buffered whole); none: it sees EOF at once. Default: " +
      "pass when our stdin is not a terminal, else none. With --cluster, stdin travels only with --stdin-file."
  ).pipe(Options.optional),
  sandbox: choiceOption(
    "sandbox",
    ["none", "bwrap"],
    "Run inside bubblewrap (own namespaces, read-only system, the workspace at /workspace), or not (default none). " +
      "Never falls back: if bwrap cannot be used, nothing runs (exit 125)."
  ).pipe(Options.withDefault("none")),
  workspace: Options.text("workspace").pipe(
    Options.withPseudoName("dir"),
    Options.withDescription("[bwrap] Host directory bound read-write at /workspace (default: current directory)."),
    Options.optional
  ),
  network: choiceOption(
    "network",
    ["none", "host"],
    "[bwrap] Network inside the sandbox: none (loopback only; default) or host."
  ).pipe(Options.optional),
  sandboxUser: Options.text("sandbox-user").pipe(
    Options.withPseudoName("UID:GID|workspace-owner"),
    Options.mapEffect(checked("--sandbox-user", parseSandboxIdentity)),
    Options.withDescription(
      "[bwrap] When we run as root, the host user and group the command runs as, whole numbers above 0 " +
        "(default 65534:65534, nobody), or workspace-owner (the owner of --workspace; never root). The workspace " +
        "must be writable by that user ('native-runner workspace adopt|new'); nothing is chowned for a run. " +
        "As another user the sandbox runs as that user."
    ),
    Options.optional
  ),
  noSeccomp: Options.boolean("no-seccomp").pipe(
    Options.withDescription("[bwrap] Leave out the sandbox's default seccomp filter. For debugging only.")
  ),
  maxProcs: countOption(
    "max-procs",
    "Processes and threads of the run (with --sandbox bwrap, bwrap's own two included). As root a pids cgroup " +
      "enforces it, else RLIMIT_NPROC, which counts every process of the user ('native-runner doctor' says which)."
  ),
  maxMemory: sizeOption("max-memory", Number.MAX_SAFE_INTEGER, "Address space per process (RLIMIT_AS)."),
  maxFileSize: sizeOption(
    "max-file-size",
    Number.MAX_SAFE_INTEGER,
    "Largest file a process may write (RLIMIT_FSIZE); a write past it stops the process, and a notice says so."
  ),
  maxCpu: durationOption("max-cpu", 1000, "CPU time per process, whole seconds (RLIMIT_CPU), e.g. 30s."),
  maxOpenFiles: countOption("max-open-files", "Open file descriptors per process (RLIMIT_NOFILE)."),
  auditLog: Options.text("audit-log").pipe(
    Options.withPseudoName("file.jsonl"),
    Options.withDescription(
      "Appends one JSON line per run (argv, cwd, exit, timing; never env values or output). A new file is " +
        "created readable by its owner only (0600); an existing one keeps its mode."
    ),
    Options.optional
  ),
  redactAfter: Options.text("redact-after").pipe(
    Options.withPseudoName("flag"),
    Options.withDescription(
      "Masks, in the audit records (--audit-log and --json's audits), the command's argument that follows this " +
        "flag, and the value of flag=value, as ***; repeatable. E.g. --redact-after --token hides s3cr3t in " +
        "'--token s3cr3t' and '--token=s3cr3t'. The command itself gets the real value."
    ),
    Options.repeated,
    Options.mapEffect(Effect.forEach(checked("--redact-after", (flag) =>
      flag === "" ? Either.left("the flag must not be empty") : Either.right(flag))))
  ),
  all: Options.boolean("all").pipe(
    Options.withDescription(
      "With --json or --jsonl: also keep stdout and stderr together, in the order they arrived (the view an agent " +
        "shows a model), as all, allEncoding and allOmitted in the result, up to --max-all."
    )
  ),
  maxAll: sizeOption("max-all", MAX_BYTES_CAP, "Bytes kept of stdout and stderr together with --all (default 2MiB)."),
  json: Options.boolean("json").pipe(
    Options.withDescription(
      "Print one JSON object (exit, signal, timing, output as UTF-8 or base64, audits) instead of the output."
    )
  ),
  jsonl: Options.boolean("jsonl").pipe(
    Options.withDescription(
      "Print one JSON object per line as the run goes: started (runId, pid), then stdout and stderr (data, " +
        "encoding; the bytes plain mode prints as they arrive), last exit (the --json object and dropped). " +
        "Not with --json."
    )
  ),
  cluster: Options.text("cluster").pipe(
    Options.withPseudoName("URL"),
    Options.withDescription(
      "Run on the fleet: URL is a worker's client endpoint, https://HOST:PORT (its --client-listen). Needs " +
        "--credentials. Same output and exit codes; a run whose worker died: exit 125 and one line. Sandbox and " +
        "limit options are the worker's."
    ),
    Options.optional
  ),
  credentials: Options.text("credentials").pipe(
    Options.withPseudoName("FILE"),
    Options.withDescription(
      "[--cluster] The tenant's credentials file ('native-runner fleet tenant' writes it; 0600): the token the " +
        "worker derives the tenant from, and the fleet's CA the worker's certificate is checked against."
    ),
    Options.optional
  ),
  requestId: Options.text("request-id").pipe(
    Options.withPseudoName("id"),
    Options.withDescription(
      "[--cluster] The run's request id: a repeat returns the stored result instead of running again."
    ),
    Options.optional
  ),
  argv: Args.text({ name: "command" }).pipe(
    Args.withDescription("The command and its arguments, after '--'. Nothing after '--' is read as our option."),
    Args.atLeast(1)
  )
} as const

/** What `@effect/cli` parsed for `run`. */
export type RunConfig = Command.Command.ParseConfig<typeof runConfig>

/** The options of `doctor`. */
export const doctorConfig = {
  sandbox: choiceOption(
    "sandbox",
    ["none", "bwrap"],
    "Exit non-zero unless this sandbox can be used by 'run' (default: just report)."
  ).pipe(Options.optional),
  workspace: Options.text("workspace").pipe(
    Options.withPseudoName("dir"),
    Options.withDescription("Also say whether 'run --sandbox bwrap --workspace DIR' would accept this workspace."),
    Options.optional
  ),
  sandboxUser: Options.text("sandbox-user").pipe(
    Options.withPseudoName("UID:GID|workspace-owner"),
    Options.mapEffect(checked("--sandbox-user", parseSandboxIdentity)),
    Options.withDescription("The sandbox user to judge the workspace for, as 'run' takes it (default 65534:65534)."),
    Options.optional
  )
} as const

/** An EXAMPLES section for a command's help. */
export const examples = (lines: ReadonlyArray<readonly [string, string]>): HelpDoc.HelpDoc =>
  HelpDoc.blocks([
    HelpDoc.h2("EXAMPLES"),
    ...lines.flatMap(([command, what]) => [HelpDoc.p(`$ ${command}`), HelpDoc.p(`    ${what}`)])
  ])
