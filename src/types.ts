/**
 * The seed's Promise contract, kept exactly as the seed names it so code written against it compiles unchanged.
 * The Effect API (`NativeRunner.ts`) is the primary one; `NativeRunner.toPromiseRunner` bridges to this interface.
 */

/** Output caps and the wall-clock limit of one exec. Every field is optional: a missing one takes the default. */
export interface NativeLimits {
  /** Bytes of stdout kept (default 1 MiB); the rest is drained and counted, not kept. */
  maxStdoutBytes?: number
  /** Bytes of stderr kept (default 1 MiB). */
  maxStderrBytes?: number
  /** Wall-clock limit in milliseconds (default 60 000); on expiry the process tree is killed, exit code 124. */
  timeoutMs?: number
}

/** One command to run: `argv[0]` is looked up on the child's `PATH`; no shell is involved. */
export interface NativeExecInput {
  argv: string[]
  cwd?: string
  env?: Record<string, string>
  stdin?: Uint8Array
  limits?: NativeLimits
}

/** One audit record per exec; env values and captured output never appear in it. */
export interface NativeAuditRecord {
  kind: string
  cmd: string
  argv: string[]
  cwd: string
  durationMs: number
  timedOut: boolean
  signal?: string
}

/** What a run produced; non-zero exit, timeout and truncation are results, not errors. */
export interface NativeExecResult {
  exitCode: number
  stdout: Uint8Array
  stderr: Uint8Array
  truncatedStdout: boolean
  truncatedStderr: boolean
  audits?: NativeAuditRecord[]
}

/** The Promise interface tools program against. */
export interface NativeRunner {
  exec(input: NativeExecInput): Promise<NativeExecResult>
}
