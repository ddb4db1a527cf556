/**
 * The CLI's value parsers (sizes, durations, `KEY=VALUE`) and the strict `--` rule. Pure: each returns the value or
 * a one-line reason.
 */
import * as Either from "effect/Either"

export { parseSize } from "../internal/sizes.js"

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/**
 * Parses a duration as `timeout(1)` reads one, and more: a bare number is seconds (`2`, `1.5`), a number with a unit
 * is `ms`, `s`, `m`, `h` or `d` (`500ms`, `10s`, `2m`), and parts add up (`1m30s`, `1h2m`). The result is a whole
 * number of milliseconds.
 *
 * @example
 * parseDuration("2m") // Either.right(120000)
 * parseDuration("1m30s") // Either.right(90000)
 * parseDuration("2") // Either.right(2000)
 */
export const parseDuration = (text: string): Either.Either<number, string> => {
  const trimmed = text.trim()
  const bad = Either.left(`bad duration '${text}' (use e.g. 10 (seconds), 500ms, 1m30s, 2h)`)
  if (/^\d+(?:\.\d+)?$/.test(trimmed)) return wholeMillis(text, Number(trimmed) * 1000)
  if (!/^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$/.test(trimmed)) return bad
  let millis = 0
  for (const [, amount, unit] of trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) {
    millis += Number(amount) * (DURATION_UNITS[unit!] ?? Number.NaN)
  }
  return wholeMillis(text, millis)
}

const wholeMillis = (text: string, millis: number): Either.Either<number, string> =>
  Number.isSafeInteger(millis)
    ? Either.right(millis)
    : Either.left(`duration '${text}' is not a whole number of milliseconds`)

/** Formats milliseconds in the largest unit that divides them: 500 -> "500ms", 10000 -> "10s", 120000 -> "2m". */
export const formatMillis = (millis: number): string =>
  millis > 0 && millis % 3_600_000 === 0
    ? `${millis / 3_600_000}h`
    : millis > 0 && millis % 60_000 === 0
    ? `${millis / 60_000}m`
    : millis > 0 && millis % 1000 === 0
    ? `${millis / 1000}s`
    : `${millis}ms`

/**
 * Parses one `KEY=VALUE` (the value may be empty or contain `=`). A bad one is never quoted back: it may be a secret
 * typed without its name.
 */
export const parseEnvPair = (text: string): Either.Either<readonly [string, string], string> => {
  const eq = text.indexOf("=")
  return eq < 0
    ? Either.left("missing '=' (use KEY=VALUE)")
    : eq === 0
    ? Either.left("empty name before '=' (use KEY=VALUE)")
    : Either.right([text.slice(0, eq), text.slice(eq + 1)] as const)
}

/** The largest uid or gid: uid_t is 32 bits and (uid_t)-1 means "no change" to the kernel. */
const MAX_ID = 4_294_967_294

/**
 * Parses `--sandbox-user UID:GID`: two whole numbers above 0 (root is refused, as `Sandbox.SandboxUser` refuses it).
 *
 * @example
 * parseSandboxUser("1000:1000") // Either.right({ uid: 1000, gid: 1000 })
 */
export const parseSandboxUser = (
  text: string
): Either.Either<{ readonly uid: number; readonly gid: number }, string> => {
  const match = /^(\d+):(\d+)$/.exec(text.trim())
  const uid = Number(match?.[1])
  const gid = Number(match?.[2])
  return match === null
    ? Either.left(`bad value '${text}' (use UID:GID, e.g. 65534:65534)`)
    : uid < 1 || gid < 1 || uid > MAX_ID || gid > MAX_ID
    ? Either.left(`uid and gid must be whole numbers from 1 to ${MAX_ID} (got '${text}')`)
    : Either.right({ uid, gid })
}

/**
 * Parses `run`'s `--sandbox-user`: `UID:GID` as `parseSandboxUser` does, or `workspace-owner` (run as the owner of
 * the workspace; refused when that is root).
 *
 * @example
 * parseSandboxIdentity("workspace-owner") // Either.right("workspace-owner")
 */
export const parseSandboxIdentity = (
  text: string
): Either.Either<{ readonly uid: number; readonly gid: number } | "workspace-owner", string> =>
  text.trim() === "workspace-owner"
    ? Either.right("workspace-owner")
    : Either.mapLeft(parseSandboxUser(text), (message) =>
      message.startsWith("bad value") ? `bad value '${text}' (use UID:GID, e.g. 65534:65534, or workspace-owner)` : message)

// ---------------------------------------------------------------------------------------------------------------
// The `--` rule. @effect/cli treats unknown options and tokens before `--` as positional arguments, so `argv` is
// checked against what follows the first `--` of the raw command line.
// ---------------------------------------------------------------------------------------------------------------

/** Quotes an argument for a POSIX shell when it needs it. */
export const shellQuote = (arg: string): string =>
  /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`

/** Our own `run` options, to tell a misspelt or repeated one from a stray argument. */
export const RUN_OPTION_NAMES: ReadonlyArray<string> = [
  "--timeout", "--kill-grace", "--max-stdout", "--max-stderr", "--cwd", "--env", "--inherit-env", "--stdin-file", "--stdin",
  "--sandbox", "--workspace", "--network", "--max-procs", "--max-memory", "--max-file-size", "--max-cpu",
  "--max-open-files", "--audit-log", "--redact-after", "--sandbox-user", "--no-seccomp", "--json", "--jsonl",
  "--idle-timeout", "--keep", "--spill-dir", "--spill-max", "--cluster", "--credentials", "--request-id", "--all",
  "--max-all"
]

// Our flags that take no value: given twice, the second one is left over as an argument.
const BOOLEAN_OPTION_NAMES: ReadonlyArray<string> = ["--json", "--jsonl", "--no-seccomp", "--all"]

/**
 * Checks that the parsed argv is exactly what follows `--` in the raw arguments, and says what is wrong if not.
 *
 * @example
 * checkForcedArgv(["run", "--bogus", "--", "ls"], ["--bogus", "ls"]) // Either.left("unknown option '--bogus'")
 */
export const checkForcedArgv = (
  raw: ReadonlyArray<string>,
  parsed: ReadonlyArray<string>
): Either.Either<void, string> => {
  const dashes = raw.indexOf("--")
  if (dashes < 0) {
    const example = parsed.map(shellQuote).join(" ")
    return Either.left(`missing '--' before the command (e.g. native-runner run -- ${example})`)
  }
  const forced = raw.length - dashes - 1
  const stray = parsed.slice(0, Math.max(0, parsed.length - forced))
  const first = stray[0]
  if (first === undefined) return Either.right(undefined)
  const name = first.split("=")[0] ?? first
  return Either.left(
    !first.startsWith("-")
      ? `unexpected argument '${first}' before '--' (the command goes after '--')`
      : BOOLEAN_OPTION_NAMES.includes(name)
      ? `'${name}' given more than once`
      : RUN_OPTION_NAMES.includes(name) && first.includes("=")
      ? `write '${name} ${first.slice(name.length + 1)}' (with a space) instead of '${first}'`
      : RUN_OPTION_NAMES.includes(name)
      ? `'${name}' is missing its value or given more than once`
      : `unknown option '${first}'`
  )
}

/** `HOST:PORT` (an IPv6 host in brackets). */
export const parseHostPort = (text: string): Either.Either<{ host: string; port: number }, string> => {
  const match = /^(\[[^\]]+\]|[^:\s]+):(\d{1,5})$/.exec(text)
  const port = match === null ? NaN : Number(match[2])
  if (match === null || !(port >= 0 && port <= 65535)) return Either.left(`expected HOST:PORT, got ${JSON.stringify(text)}`)
  return Either.right({ host: match[1]!.replace(/^\[|\]$/g, ""), port })
}
