/**
 * The messages the spawn helper (./helperProgram.mjs) and the host exchange. Per exec: one IPC request
 * (`HelperRequest`); the helper opens two connections to the host's Unix socket, each starting with a 21-byte header
 * (exec id as uint32 BE, then 1 for stdout or 2 for stderr, then the exec's 16-byte token), and starts the child with
 * those sockets as its stdout and stderr, so output never passes through the helper; a streamed stdin is a third
 * connection (stream 0), which the host writes and the child reads. Replies: `spawned` (or `failed`), `data` for each
 * chunk of an Output descriptor, then `exit`.
 */

/** Bytes of the unguessable per-exec token that proves an output connection belongs to its exec. */
export const TOKEN_BYTES = 16

/**
 * Bytes of the header that opens each connection: exec id (uint32 BE), stream (1 stdout, 2 stderr, 0 stdin), token.
 * Anything on this machine that can reach the socket (a run's own program, unsandboxed as root) could connect; only
 * the helper knows the tokens, and a connection with a wrong one is dropped, never attached to a run.
 */
export const HEADER_BYTES = 5 + TOKEN_BYTES

/** One exec, host to helper. Structured clone (`serialization: "advanced"`) carries the Uint8Arrays as they are. */
export interface HelperRequest {
  readonly id: number
  readonly argv: readonly [string, ...Array<string>]
  readonly cwd: string
  readonly env: Readonly<Record<string, string>>
  /** Bytes written whole; `"connection"`: the child reads a third connection the host writes as it goes. */
  readonly stdin: Uint8Array | "connection" | undefined
  /** The exec's token (`TOKEN_BYTES` random bytes), written by the helper in both output headers. */
  readonly token: Uint8Array
  /**
   * Descriptors from 3 on: the bytes of an Input descriptor, `null` for an Output one (relayed as `data`), or for a
   * Directory one the host's descriptor as `/proc/<host pid>/fd/<fd>`, which the helper opens (the same open file,
   * never a path in the workload's tree) and hands to the child.
   */
  readonly fds: ReadonlyArray<Uint8Array | null | { readonly dir: string } | "inherited">
  /** The run's cgroup (`PreparedCommand.cgroup`): the helper moves itself into `procs` for the fork, then to `home`. */
  readonly cgroup: { readonly procs: string; readonly home: string } | undefined
}

/** Helper to host. `failed`: `code` is Node's errno code, absent when the helper itself failed (no connection). */
export type HelperReply =
  | { readonly k: "spawned"; readonly id: number; readonly pid: number }
  | { readonly k: "failed"; readonly id: number; readonly code: string | undefined; readonly message: string }
  | { readonly k: "data"; readonly id: number; readonly fd: number; readonly chunk: Uint8Array }
  | { readonly k: "exit"; readonly id: number; readonly code: number | null; readonly signal: string | null }

const isNullableString = (value: unknown) => value === undefined || typeof value === "string"

/** Replies come from our own helper; still, a malformed one is dropped rather than trusted. */
export const isReply = (message: unknown): message is HelperReply => {
  if (typeof message !== "object" || message === null || !("k" in message)) return false
  if (!("id" in message) || typeof message.id !== "number") return false
  switch (message.k) {
    case "spawned":
      return "pid" in message && typeof message.pid === "number" && Number.isSafeInteger(message.pid) && message.pid > 0
    case "failed":
      return "message" in message && typeof message.message === "string" &&
        (!("code" in message) || isNullableString(message.code))
    case "data":
      return "fd" in message && typeof message.fd === "number" && "chunk" in message &&
        message.chunk instanceof Uint8Array
    case "exit":
      return "code" in message && (message.code === null || typeof message.code === "number") &&
        "signal" in message && (message.signal === null || typeof message.signal === "string")
    default:
      return false
  }
}
