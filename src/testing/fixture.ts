/** What a backend hands the behaviour suite: its layer, how it expresses each scenario as a command, its timings. */
import type * as Duration from "effect/Duration"
import type * as Layer from "effect/Layer"
import type * as NativeRunner from "../NativeRunner.js"

/** A command line, program first. */
export type Argv = ReadonlyArray<string>

/** Which output stream a chunk goes to. */
export type StreamName = "stdout" | "stderr"

/** One step of a `paced` command: a chunk written to a stream, or a pause. */
export type PacedStep = readonly [StreamName, Uint8Array] | readonly ["sleep", Duration.DurationInput]

/**
 * How a backend expresses each scenario as a command. Each command must behave exactly as documented, byte for
 * byte; the suite checks what the runner makes of it.
 */
export interface Commands {
  /** Writes each chunk, in order, to its stream, then exits 0. Chunks stay small (a few KiB in all). */
  readonly write: (chunks: ReadonlyArray<readonly [StreamName, Uint8Array]>) => Argv
  /**
   * Takes each step in order: writes the chunk to its stream, or sleeps for the duration (fractions of a second
   * matter: the shortest is a few tens of milliseconds live); then exits 0. Chunks stay small. Optional, so fixtures
   * written before it still compile: without it, the scenarios that need it are registered as skipped.
   */
  readonly paced?: ((steps: ReadonlyArray<PacedStep>) => Argv) | undefined
  /** Writes `count` zero bytes to stdout (far more than a pipe holds), then exits 0. */
  readonly zeros: (count: number) => Argv
  /** Copies stdin to stdout until EOF, then exits 0 (`cat`). */
  readonly cat: Argv
  /** Exits with `code` and writes nothing. */
  readonly exit: (code: number) => Argv
  /** Dies by `signal`, sent to itself. */
  readonly raise: (signal: NodeJS.Signals) => Argv
  /** Writes `before` to stdout, then runs until killed; with `ignoreTerm`, only SIGKILL ends it (SIGTERM does nothing). */
  readonly hang: (before: string, options: { readonly ignoreTerm: boolean }) => Argv
  /** Writes its whole environment as `NAME=value` records, each ended by a NUL byte (`env -0`). */
  readonly env: Argv
  /** Writes its working directory and a newline (`pwd`). */
  readonly pwd: Argv
  /** Creates an empty file at the absolute `path` (`touch`): the suite's proof that something ran. */
  readonly touch: (path: string) => Argv
}

/** Groups of scenarios a backend may declare unsupported; their tests are registered as skipped. */
export type Capability =
  | "signals"
  | "timeouts"
  | "interruption"
  | "env"
  | "cwd"
  | "streaming"
  | "idle"
  | "keep"
  | "spill"

/** Durations of the time-dependent scenarios. */
export interface Timing {
  /** Timeout of the timeout scenarios: small on real processes ("400 millis"), large on a TestClock ("60 seconds"). */
  readonly timeout: Duration.DurationInput
  /** Grace between SIGTERM and SIGKILL in those scenarios ("300 millis" live, "2 seconds" on the TestClock). */
  readonly killGrace: Duration.DurationInput
  /** Lateness tolerated on top of timeout and grace before a run counts as stuck ("5 seconds" live, 0 on a TestClock). */
  readonly slack: Duration.DurationInput
  /**
   * Real time a just-started process gets before it is interrupted ("750 millis"). Live only: on a TestClock the
   * suite waits until the run blocks on the clock instead.
   */
  readonly startup: Duration.DurationInput
  /**
   * Idle timeout of the idle scenarios ("300 millis" live, "10 seconds" on a TestClock; default: three quarters of
   * `timeout`). The pauses of their `paced` commands are fractions and multiples of it.
   */
  readonly idle?: Duration.DurationInput | undefined
}

/** A backend under test: how to build it and how it runs each scenario. */
export interface Fixture<E = never> {
  /** Builds the backend's runner with `options`; it must be able to run every command in `commands`. */
  readonly layer: (options: NativeRunner.Options) => Layer.Layer<NativeRunner.NativeRunner, E>
  readonly commands: Commands
  /** The host environment the backend's inherit policy reads; it must include `SUITE_HOST_ENV`. */
  readonly hostEnv: Readonly<Record<string, string | undefined>>
  /** "live": real time (`it.live`). "test": `it.effect`, where time moves only by `TestClock.adjust` (no real time). */
  readonly clock: "live" | "test"
  readonly timing: Timing
  /** Scenario groups this backend cannot run (default: none). */
  readonly unsupported?: ReadonlyArray<Capability> | undefined
}

/** Variables the backend's host environment must hold for the env scenarios: one plain, one secret-looking. */
export const SUITE_HOST_ENV: Readonly<Record<string, string>> = {
  NR_SUITE_EXTRA: "extra-from-host",
  NR_SUITE_API_TOKEN: "host-secret-value"
}
