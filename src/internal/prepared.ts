/** The command exactly as it will be spawned, after env policy, sandbox wrapping and resource limits. */
export interface PreparedCommand {
  /** Program and arguments; `argv[0]` is resolved on `PATH` (of the host, since no shell is used). */
  readonly argv: readonly [string, ...Array<string>]
  /** Host directory the process starts in (for a sandbox: where bwrap itself starts). */
  readonly cwd: string
  /** The complete environment of the spawned process (nothing else is inherited). */
  readonly env: Readonly<Record<string, string>>
}
