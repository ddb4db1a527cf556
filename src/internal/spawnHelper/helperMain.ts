/**
 * The spawn helper's own program. The helper runs as `node -e` with the text of `helperMain` and its steps, so there
 * is no entry file to ship or to find (the project runs from TypeScript in the tests, from tsc output in the benches
 * and from an esbuild bundle in the CLI). What it exchanges with the host is in ./protocol.ts.
 */
import type { ChildProcess } from "node:child_process"
import type { HelperReply, HelperRequest } from "./protocol.js"

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

/** What the helper's steps share; `helperMain` builds it and every step takes it first. */
interface Helper {
  readonly spawn: typeof import("node:child_process").spawn
  readonly connect: typeof import("node:net").connect
  readonly fs: Pick<
    typeof import("node:fs"),
    "rmdirSync" | "unlinkSync" | "writeFileSync" | "readFileSync" | "openSync" | "closeSync" | "constants"
  >
  readonly host: HelperProcess
  readonly socketPath: string
  /** Process group (= pid, children are detached) of each child not yet seen to exit, by exec id. */
  readonly running: Map<number, number>
  /** The run cgroup (its directory) of each exec that has one, until the host forgets the exec. */
  readonly cgroups: Map<number, string>
}

// The steps below run in the helper process from their source text (`helperSource`), so each may use only its
// parameters, Node's globals and the other steps. They are top-level function declarations and their callbacks are
// anonymous arguments, on purpose: esbuild's `keepNames` (tsx sets it) wraps named arrow functions and nested
// function declarations in calls to a `__name` helper the helper process would not have, but puts the call for a
// top-level declaration after it, outside its text. (Coverage that instruments source, like istanbul, would break
// them the same way; V8 coverage does not.) A minifier renames a step and every call of it alike.

function helperSend(h: Helper, reply: HelperReply): void {
  if (h.host.connected) h.host.send(reply)
}

/**
 * Leaves with the host: its children killed, every process of their run cgroups too (a `setsid` grandchild left its
 * group but not its cgroup), and its socket and directory gone (when the host could not).
 */
function helperLeave(h: Helper, code: number): never {
  for (const pid of h.running.values()) {
    try {
      h.host.kill(-pid, "SIGKILL")
    } catch {
      // Gone already.
    }
  }
  h.running.clear()
  for (const dir of h.cgroups.values()) helperKillCgroup(h, dir)
  h.cgroups.clear()
  try {
    h.fs.unlinkSync(h.socketPath)
    h.fs.rmdirSync(h.socketPath.slice(0, h.socketPath.lastIndexOf("/")))
  } catch {
    // The host removed them.
  }
  return h.host.exit(code)
}

/** SIGKILLs every process in the cgroup `dir`: `cgroup.kill` on v2; on v1, frozen first so none can fork meanwhile. */
function helperKillCgroup(h: Helper, dir: string): void {
  try {
    h.fs.writeFileSync(`${dir}/cgroup.kill`, "1")
    return
  } catch {
    // No cgroup.kill (v1, or a v2 kernel before 5.14): one process at a time.
  }
  try {
    h.fs.writeFileSync(`${dir}/freezer.state`, "FROZEN")
  } catch {
    // Not a freezer cgroup.
  }
  try {
    for (const pid of h.fs.readFileSync(`${dir}/cgroup.procs`, "utf8").split("\n").filter((line) => line !== "")) {
      try {
        h.host.kill(Number(pid), "SIGKILL")
      } catch {
        // Gone already.
      }
    }
    h.fs.writeFileSync(`${dir}/freezer.state`, "THAWED")
  } catch {
    // Removed already: nothing left in it.
  }
}

function helperFailed(h: Helper, id: number, error: unknown): void {
  const code = typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined
  helperSend(h, { k: "failed", id, code, message: String(error) })
}

function helperFeed(stream: Sink | null | undefined, bytes: Uint8Array): void {
  if (stream === null || stream === undefined) return
  // A child that exits without reading (EPIPE) is not an error.
  stream.on("error", () => {})
  stream.end(bytes)
}

/**
 * Connects to the host and writes the header (id, stream, the exec's token); resolves once the header is in the
 * socket. A full listen queue (EAGAIN: something flooding the socket) is retried for about a second.
 */
function helperOpen(h: Helper, id: number, stream: number, token: Uint8Array, tries = 0): Promise<import("node:net").Socket> {
  return new Promise((resolve, reject) => {
    const socket = h.connect(h.socketPath)
    const header = Buffer.alloc(5 + token.length)
    header.writeUInt32BE(id, 0)
    header[4] = stream
    header.set(token, 5)
    socket.once("error", (error: Error & { code?: string }) => {
      if (error.code !== "EAGAIN" || tries >= 100) return reject(error)
      setTimeout(() => helperOpen(h, id, stream, token, tries + 1).then(resolve, reject), 10)
    })
    socket.write(header, (error) => {
      if (error !== null && error !== undefined) return
      socket.removeAllListeners("error")
      socket.on("error", () => {})
      resolve(socket)
    })
  })
}

/** One request: both output connections opened, then the child started on them. */
function helperExec(h: Helper, request: HelperRequest): void {
  Promise.allSettled([helperOpen(h, request.id, 1, request.token), helperOpen(h, request.id, 2, request.token)]).then((opened) => {
    const sockets = opened.flatMap((result) => result.status === "fulfilled" ? [result.value] : [])
    const [out, err] = sockets
    if (out === undefined || err === undefined) {
      for (const socket of sockets) socket.destroy()
      const refused = opened.find((result) => result.status === "rejected")
      const reason = refused?.status === "rejected" ? String(refused.reason) : "unknown"
      return helperSend(h, { k: "failed", id: request.id, code: undefined, message: `no connection to the host: ${reason}` })
    }
    helperStart(h, request, out, err)
  })
}

function helperStart(h: Helper, request: HelperRequest, out: import("node:net").Socket, err: import("node:net").Socket): void {
  const { argv, cgroup } = request
  let child: ChildProcess
  const opened: Array<number> = []
  try {
    // Directory descriptors: the host's own open files, reopened through /proc (the same file, no path lookup).
    const extra = request.fds.map((fd) => {
      if (fd === "inherited") return "ignore" as const
      if (fd === null || fd instanceof Uint8Array) return "pipe" as const
      const descriptor = h.fs.openSync(fd.dir, h.fs.constants.O_RDONLY | h.fs.constants.O_NONBLOCK)
      opened.push(descriptor)
      return descriptor
    })
    // libuv forks inside the synchronous spawn, so the child is born in the run's cgroup and nothing else is.
    if (cgroup !== undefined) h.fs.writeFileSync(cgroup.procs, String(h.host.pid))
    // Node hands a net.Socket's descriptor to the child as it is: the child writes straight to the host.
    child = h.spawn(argv[0], argv.slice(1), {
      cwd: request.cwd,
      env: request.env,
      detached: true,
      stdio: [request.stdin === undefined ? "ignore" : "pipe", out, err, ...extra]
    })
  } catch (error) {
    // Some errnos (E2BIG, ENOTDIR for a cwd that is a file) are thrown instead of emitted.
    return helperFailed(h, request.id, error)
  } finally {
    if (cgroup !== undefined) h.fs.writeFileSync(cgroup.home, String(h.host.pid))
    for (const descriptor of opened) h.fs.closeSync(descriptor)
    // The child holds its own copies (or never will): the host sees EOF once the last holder has closed.
    out.destroy()
    err.destroy()
  }
  helperWatch(h, request, child)
}

/** Follows a started child: tracked while it runs, its start (or failure) and its exit reported. */
function helperWatch(h: Helper, request: HelperRequest, child: ChildProcess): void {
  const { id } = request
  const pid = child.pid
  // Node leaves the pid unset when the start failed; "error" follows and reports it.
  if (pid !== undefined) h.running.set(id, pid)
  if (request.cgroup !== undefined) h.cgroups.set(id, request.cgroup.procs.slice(0, request.cgroup.procs.lastIndexOf("/")))
  const status: ChildStatus = { spawned: false, open: 0, exit: undefined, reported: false }
  child.once("error", (error) => {
    // After the start, only a failed kill: nothing to report.
    if (status.spawned) return
    h.running.delete(id)
    h.cgroups.delete(id)
    helperFailed(h, id, error)
  })
  child.once("spawn", () => {
    status.spawned = true
    if (pid === undefined) return helperFailed(h, id, new Error("started without a pid"))
    helperSend(h, { k: "spawned", id, pid })
    helperRelay(h, request, child, status)
  })
  child.once("exit", (code, signal) => {
    h.running.delete(id)
    // What the child left in its cgroup is the host's to kill now (it does, at once); a bounded map meanwhile.
    h.cgroups.delete(id)
    if (!status.spawned) return
    status.exit = { code, signal }
    helperReport(h, id, status)
    // Normally the descriptors close with the child; one held by a grandchild only delays the report a little.
    if (status.open > 0) {
      setTimeout(() => {
        status.open = 0
        helperReport(h, id, status)
      }, 100)
    }
  })
}

/** The child's stdin and Input descriptors written whole; its Output descriptors relayed as `data`. */
function helperRelay(h: Helper, request: HelperRequest, child: ChildProcess, status: ChildStatus): void {
  const { id } = request
  if (request.stdin !== undefined) helperFeed(child.stdin, request.stdin)
  request.fds.forEach((bytes, index) => {
    const stream = child.stdio[3 + index]
    if (stream === null || stream === undefined || bytes === "inherited") return
    if (bytes !== null && !(bytes instanceof Uint8Array)) return
    if (bytes !== null) return helperFeed("end" in stream ? stream : undefined, bytes)
    status.open++
    stream.on("error", () => {})
    stream.on("data", (chunk: Uint8Array) => helperSend(h, { k: "data", id, fd: index, chunk }))
    stream.once("close", () => {
      status.open--
      helperReport(h, id, status)
    })
  })
}

/** The exit goes out after the last chunk of every Output descriptor, so the host has them when it sees it. */
function helperReport(h: Helper, id: number, status: ChildStatus): void {
  if (status.exit === undefined || status.open > 0 || status.reported) return
  status.reported = true
  helperSend(h, { k: "exit", id, code: status.exit.code, signal: status.exit.signal })
}

/**
 * The helper process: the steps above wired to the host's messages and signals. It exits when the host goes away
 * (IPC `disconnect`, also when the host was SIGKILLed), after SIGKILLing the group of every child it started and has
 * not seen exit.
 */
export function helperMain(load: HelperRequire, host: HelperProcess, socketPath: string): void {
  const { spawn } = load("node:child_process")
  const { connect } = load("node:net")
  const h: Helper = { spawn, connect, fs: load("node:fs"), host, socketPath, running: new Map(), cgroups: new Map() }
  host.on("message", (request) => helperExec(h, request))
  host.on("disconnect", () => helperLeave(h, 0))
  host.on("SIGTERM", () => helperLeave(h, 0))
  host.on("SIGHUP", () => helperLeave(h, 0))
  // A reply racing the host's exit fails with ERR_IPC_CHANNEL_CLOSED: "disconnect" follows.
  host.on("error", () => {})
  host.on("uncaughtException", (error) => {
    host.stderr.write(`effect-native-runner spawn helper: ${String(error)}\n`)
    helperLeave(h, 70)
  })
}

/** Every step `helperMain` calls, directly or through another step: their text goes into the helper's program. */
const helperSteps: ReadonlyArray<(...args: never) => unknown> = [
  helperSend,
  helperLeave,
  helperFailed,
  helperFeed,
  helperOpen,
  helperKillCgroup,
  helperExec,
  helperStart,
  helperWatch,
  helperRelay,
  helperReport
]

/** The `node -e` program of a helper serving the host socket at `socketPath`. */
export const helperSource = (socketPath: string): string =>
  `${helperSteps.map((step) => step.toString()).join("\n")}\n(${helperMain.toString()})(require, process, ${
    JSON.stringify(socketPath)
  })`
