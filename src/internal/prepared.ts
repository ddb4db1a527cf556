import type { ExecInput } from "../Exec.js"

/** The command exactly as it will be spawned, after env policy, sandbox wrapping and resource limits. */
export interface PreparedCommand {
  /** Program and arguments; `argv[0]` is resolved on `PATH` (of the host, since no shell is used). */
  readonly argv: readonly [string, ...Array<string>]
  /** Host directory the process starts in (for a sandbox: where bwrap itself starts). */
  readonly cwd: string
  /** The complete environment of the spawned process (nothing else is inherited). */
  readonly env: Readonly<Record<string, string>>
  /**
   * Descriptors from 3 on, in order: data the child reads (bwrap's `--args`, a seccomp program), or a pipe the child
   * writes and the host reads (bwrap's `--json-status-fd`). Secrets travel here, never on a command line.
   */
  readonly extraFds?: ReadonlyArray<ExtraFd> | undefined
  /**
   * The run's own cgroup (`internal/runCgroup`): the spawner moves itself into `procs` for the fork, then back to
   * `home`, so the child and everything it starts are in the run's cgroup from their first instruction.
   */
  readonly cgroup?: { readonly procs: string; readonly home: string } | undefined
  /** The decoded exec input this command came from, for spawners that act on the call itself (the test layer's). */
  readonly input?: ExecInput | undefined
}

/** One descriptor handed to the child beyond stdin, stdout and stderr. */
export type ExtraFd =
  /** Written whole, then closed: the child reads `bytes` and sees EOF. */
  | { readonly _tag: "Input"; readonly bytes: Uint8Array }
  /** The child writes; every chunk goes to `onData` as it arrives. */
  | { readonly _tag: "Output"; readonly onData: (chunk: Uint8Array) => void }
  /**
   * A directory (or file) the host holds open for the run, for bwrap's `--bind-fd`: the child gets a copy of the
   * host's descriptor `fd`, so what is bound is what the host opened and checked, never a path looked up again.
   */
  | { readonly _tag: "Directory"; readonly fd: number }
  /** Whatever the child inherited at this number stays as it is: a gap before a later descriptor. */
  | { readonly _tag: "Inherited" }
