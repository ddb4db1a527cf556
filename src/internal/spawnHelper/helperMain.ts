/**
 * The spawn helper's own program and the messages it exchanges with the host. The helper runs as `node -e` with the
 * text of `helperMain`, so there is no entry file to ship or to find (the project runs from TypeScript in the tests,
 * from tsc output in the benches and from an esbuild bundle in the CLI).
 *
 * Protocol, per exec: one IPC request (`HelperRequest`); the helper opens two connections to the host's Unix socket,
 * each starting with a 5-byte header (exec id as uint32 BE, then 1 for stdout or 2 for stderr), and starts the child
 * with those sockets as its stdout and stderr, so output never passes through the helper. Replies: `spawned` (or
 * `failed`), `data` for each chunk of an Output descriptor, then `exit`.
 */
import type { ChildProcess } from "node:child_process"

/** Bytes of the header that opens each output connection: exec id (uint32 BE) and stream (1 stdout, 2 stderr). */
export const HEADER_BYTES = 5

/** One exec, host to helper. Structured clone (`serialization: "advanced"`) carries the Uint8Arrays as they are. */
export interface HelperRequest {
  readonly id: number
  readonly argv: readonly [string, ...Array<string>]
  readonly cwd: string
  readonly env: Readonly<Record<string, string>>
  readonly stdin: Uint8Array | undefined
  /** Descriptors from 3 on: the bytes of an Input descriptor, or `null` for an Output one (relayed as `data`). */
  readonly fds: ReadonlyArray<Uint8Array | null>
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

/** The modules the helper loads: its `require`, typed for exactly these two. */
export interface HelperRequire {
  (id: "node:child_process"): typeof import("node:child_process")
  (id: "node:net"): typeof import("node:net")
  (id: "node:fs"): typeof import("node:fs")
}

/** The parts of `process` the helper uses; `send` and `message` are typed by the protocol (both ends are ours). */
export interface HelperProcess {
  readonly pid: number
  readonly connected: boolean
  send(reply: HelperReply): boolean
  on(event: "message", listener: (request: HelperRequest) => void): unknown
  on(event: "disconnect" | "error" | "SIGTERM" | "SIGHUP", listener: () => void): unknown
  on(event: "uncaughtException", listener: (error: unknown) => void): unknown
  kill(pid: number, signal: "SIGKILL"): true
  exit(code: number): never
  readonly stderr: { write(text: string): unknown }
}

/** What the helper tracks of one child until it has reported its exit. */
interface ChildStatus {
  spawned: boolean
  /** Output descriptors still open: the exit is reported after their last chunk (bounded wait). */
  open: number
  exit: { readonly code: number | null; readonly signal: string | null } | undefined
  reported: boolean
}

/** A pipe the child reads: written whole, then closed. */
interface Sink {
  on(event: "error", listener: () => void): unknown
  end(bytes: Uint8Array): unknown
}

/**
 * The helper process. Self-contained: it may use only its parameters and Node's globals, because it runs from its
 * source text. Local functions are object methods and callbacks are anonymous arguments, on purpose: esbuild's
 * `keepNames` (tsx sets it) wraps named arrow functions and function declarations in calls to a `__name` helper that
 * the helper process would not have, but leaves methods and anonymous arguments alone. (Coverage that instruments
 * source, like istanbul, would break it the same way; V8 coverage does not.)
 *
 * It exits when the host goes away (IPC `disconnect`, also when the host was SIGKILLed), after SIGKILLing the group of
 * every child it started and has not seen exit.
 */
export function helperMain(load: HelperRequire, host: HelperProcess, socketPath: string): void {
  const { spawn } = load("node:child_process")
  const { connect } = load("node:net")
  const { rmdirSync, unlinkSync, writeFileSync } = load("node:fs")
  // Process group (= pid, children are detached) of each child not yet seen to exit, by exec id.
  const running = new Map<number, number>()
  const h = {
    send(reply: HelperReply): void {
      if (host.connected) host.send(reply)
    },
    killAll(): void {
      for (const pid of running.values()) {
        try {
          host.kill(-pid, "SIGKILL")
        } catch {
          // Gone already.
        }
      }
      running.clear()
    },
    /** Leaves with the host: its children killed, and its socket and directory gone (when the host could not). */
    leave(code: number): never {
      h.killAll()
      try {
        unlinkSync(socketPath)
        rmdirSync(socketPath.slice(0, socketPath.lastIndexOf("/")))
      } catch {
        // The host removed them.
      }
      return host.exit(code)
    },
    failed(id: number, error: unknown): void {
      const code = typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
        ? error.code
        : undefined
      h.send({ k: "failed", id, code, message: String(error) })
    },
    feed(stream: Sink | null | undefined, bytes: Uint8Array): void {
      if (stream === null || stream === undefined) return
      // A child that exits without reading (EPIPE) is not an error.
      stream.on("error", () => {})
      stream.end(bytes)
    },
    /** Connects to the host and writes the header; resolves once the header is in the socket. */
    open(id: number, stream: number): Promise<import("node:net").Socket> {
      return new Promise((resolve, reject) => {
        const socket = connect(socketPath)
        const header = Buffer.alloc(5)
        header.writeUInt32BE(id, 0)
        header[4] = stream
        socket.once("error", reject)
        socket.write(header, (error) => {
          if (error !== null && error !== undefined) return reject(error)
          socket.off("error", reject)
          socket.on("error", () => {})
          resolve(socket)
        })
      })
    },
    exec(request: HelperRequest): void {
      Promise.allSettled([h.open(request.id, 1), h.open(request.id, 2)]).then((opened) => {
        const sockets = opened.flatMap((result) => result.status === "fulfilled" ? [result.value] : [])
        const [out, err] = sockets
        if (out === undefined || err === undefined) {
          for (const socket of sockets) socket.destroy()
          const refused = opened.find((result) => result.status === "rejected")
          const reason = refused?.status === "rejected" ? String(refused.reason) : "unknown"
          return h.send({ k: "failed", id: request.id, code: undefined, message: `no connection to the host: ${reason}` })
        }
        h.start(request, out, err)
      })
    },
    start(request: HelperRequest, out: import("node:net").Socket, err: import("node:net").Socket): void {
      const { id, argv, cgroup } = request
      let child: ChildProcess
      try {
        // libuv forks inside the synchronous spawn, so the child is born in the run's cgroup and nothing else is.
        if (cgroup !== undefined) writeFileSync(cgroup.procs, String(host.pid))
        // Node hands a net.Socket's descriptor to the child as it is: the child writes straight to the host.
        child = spawn(argv[0], argv.slice(1), {
          cwd: request.cwd,
          env: request.env,
          detached: true,
          stdio: [request.stdin === undefined ? "ignore" : "pipe", out, err, ...request.fds.map(() => "pipe" as const)]
        })
      } catch (error) {
        // Some errnos (E2BIG, ENOTDIR for a cwd that is a file) are thrown instead of emitted.
        return h.failed(id, error)
      } finally {
        if (cgroup !== undefined) writeFileSync(cgroup.home, String(host.pid))
        // The child holds its own copies (or never will): the host sees EOF once the last holder has closed.
        out.destroy()
        err.destroy()
      }
      const pid = child.pid
      // Node leaves the pid unset when the start failed; "error" follows and reports it.
      if (pid !== undefined) running.set(id, pid)
      const status: ChildStatus = { spawned: false, open: 0, exit: undefined, reported: false }
      child.once("error", (error) => {
        // After the start, only a failed kill: nothing to report.
        if (status.spawned) return
        running.delete(id)
        h.failed(id, error)
      })
      child.once("spawn", () => {
        status.spawned = true
        if (pid === undefined) return h.failed(id, new Error("started without a pid"))
        h.send({ k: "spawned", id, pid })
        if (request.stdin !== undefined) h.feed(child.stdin, request.stdin)
        request.fds.forEach((bytes, index) => {
          const stream = child.stdio[3 + index]
          if (stream === null || stream === undefined) return
          if (bytes !== null) return h.feed("end" in stream ? stream : undefined, bytes)
          status.open++
          stream.on("error", () => {})
          stream.on("data", (chunk: Uint8Array) => h.send({ k: "data", id, fd: index, chunk }))
          stream.once("close", () => {
            status.open--
            h.report(id, status)
          })
        })
      })
      child.once("exit", (code, signal) => {
        running.delete(id)
        if (!status.spawned) return
        status.exit = { code, signal }
        h.report(id, status)
        // Normally the descriptors close with the child; one held by a grandchild only delays the report a little.
        if (status.open > 0) {
          setTimeout(() => {
            status.open = 0
            h.report(id, status)
          }, 100)
        }
      })
    },
    /** The exit goes out after the last chunk of every Output descriptor, so the host has them when it sees it. */
    report(id: number, status: ChildStatus): void {
      if (status.exit === undefined || status.open > 0 || status.reported) return
      status.reported = true
      h.send({ k: "exit", id, code: status.exit.code, signal: status.exit.signal })
    }
  }
  host.on("message", (request) => h.exec(request))
  host.on("disconnect", () => h.leave(0))
  host.on("SIGTERM", () => h.leave(0))
  host.on("SIGHUP", () => h.leave(0))
  // A reply racing the host's exit fails with ERR_IPC_CHANNEL_CLOSED: "disconnect" follows.
  host.on("error", () => {})
  host.on("uncaughtException", (error) => {
    host.stderr.write(`effect-native-runner spawn helper: ${String(error)}\n`)
    h.leave(70)
  })
}

/** The `node -e` program of a helper serving the host socket at `socketPath`. */
export const helperSource = (socketPath: string): string =>
  `(${helperMain.toString()})(require, process, ${JSON.stringify(socketPath)})`
