// @ts-check
/**
 * The spawn helper's program, run by plain `node` as it is, from every place the project runs: the source tree (the
 * tests), tsc's output (the library, the benches) and the bin's directory (a copy, see bench/build-bin.mjs). That is
 * why it is JavaScript, checked by TypeScript from these JSDoc types: Node 20 runs no TypeScript. It loads only
 * Node's own modules. Started by ./native-runner-spawn-helper.mjs; what it exchanges with the host is in ./protocol.ts.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { connect } from "node:net"

/** @import { ChildProcess } from "node:child_process" */
/** @import { Socket } from "node:net" */
/** @import { HelperReply, HelperRequest } from "./protocol.js" */

/**
 * The parts of `process` the helper uses; `send` and `message` are typed by the protocol (both ends are ours).
 * @typedef {object} HelperHost
 * @property {number} pid
 * @property {boolean} connected
 * @property {((reply: HelperReply) => boolean) | undefined} [send] Present: the helper has its IPC channel.
 * @property {HelperHostOn} on
 * @property {(pid: number, signal: "SIGKILL") => true} kill
 * @property {(code: number) => never} exit
 * @property {{ write(text: string): unknown }} stderr
 */

/**
 * @typedef {{
 *   (event: "message", listener: (request: HelperRequest) => void): unknown
 *   (event: "disconnect" | "error" | "SIGTERM" | "SIGHUP", listener: () => void): unknown
 *   (event: "uncaughtException", listener: (error: unknown) => void): unknown
 * }} HelperHostOn
 */

/**
 * What the helper tracks of one child until it has reported its exit.
 * @typedef {object} ChildStatus
 * @property {boolean} spawned
 * @property {number} open Output descriptors still open: the exit is reported after their last chunk (bounded wait).
 * @property {{ readonly code: number | null, readonly signal: string | null } | undefined} exit
 * @property {boolean} reported
 */

/**
 * What the steps share; `helperMain` builds it.
 * @typedef {object} Helper
 * @property {HelperHost} host
 * @property {string} socketPath
 * @property {Map<number, number>} running Process group (= pid, children are detached) of each child not yet seen to
 *   exit, by exec id.
 * @property {Map<number, string>} cgroups The run cgroup (its directory) of each exec that has one, while it runs.
 */

/**
 * @param {Helper} h
 * @param {HelperReply} reply
 */
export function helperSend(h, reply) {
  if (h.host.connected) h.host.send?.(reply)
}

/**
 * Leaves with the host: its children killed, every process of their run cgroups too (a `setsid` grandchild left its
 * group but not its cgroup), and its socket and directory gone (when the host could not).
 * @param {Helper} h
 * @param {number} code
 * @returns {never}
 */
function helperLeave(h, code) {
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
    fs.unlinkSync(h.socketPath)
    fs.rmdirSync(h.socketPath.slice(0, h.socketPath.lastIndexOf("/")))
  } catch {
    // The host removed them (or a later helper of the same host uses the directory).
  }
  return h.host.exit(code)
}

/**
 * SIGKILLs every process in the cgroup `dir`: `cgroup.kill` on v2; on v1, frozen first so none can fork meanwhile.
 * @param {Helper} h
 * @param {string} dir
 */
function helperKillCgroup(h, dir) {
  try {
    fs.writeFileSync(`${dir}/cgroup.kill`, "1")
    return
  } catch {
    // No cgroup.kill (v1, or a v2 kernel before 5.14): one process at a time.
  }
  try {
    fs.writeFileSync(`${dir}/freezer.state`, "FROZEN")
  } catch {
    // Not a freezer cgroup.
  }
  try {
    for (const pid of fs.readFileSync(`${dir}/cgroup.procs`, "utf8").split("\n").filter((line) => line !== "")) {
      try {
        h.host.kill(Number(pid), "SIGKILL")
      } catch {
        // Gone already.
      }
    }
    fs.writeFileSync(`${dir}/freezer.state`, "THAWED")
  } catch {
    // Removed already: nothing left in it.
  }
}

/**
 * @param {Helper} h
 * @param {number} id
 * @param {unknown} error
 */
function helperFailed(h, id, error) {
  const code = typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined
  helperSend(h, { k: "failed", id, code, message: String(error) })
}

/**
 * Writes `bytes` whole, then closes; a child that exits without reading (EPIPE) is not an error.
 * @param {import("node:stream").Writable | null | undefined} stream
 * @param {Uint8Array} bytes
 */
function helperFeed(stream, bytes) {
  if (stream === null || stream === undefined) return
  stream.on("error", () => {})
  stream.end(bytes)
}

/**
 * Connects to the host and writes the header (id, stream, the exec's token); resolves once the header is in the
 * socket. A full listen queue (EAGAIN: something flooding the socket) is retried for about a second.
 * @param {Helper} h
 * @param {number} id
 * @param {number} stream
 * @param {Uint8Array} token
 * @param {number} [tries]
 * @returns {Promise<Socket>}
 */
function helperOpen(h, id, stream, token, tries = 0) {
  return new Promise((resolve, reject) => {
    const socket = connect(h.socketPath)
    const header = Buffer.alloc(5 + token.length)
    header.writeUInt32BE(id, 0)
    header[4] = stream
    header.set(token, 5)
    socket.once("error", (/** @type {Error & { code?: string }} */ error) => {
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

/**
 * One request: both output connections (and the stdin connection, when the host streams stdin) opened, then the
 * child started on them.
 * @param {Helper} h
 * @param {HelperRequest} request
 */
export function helperExec(h, request) {
  const streams = request.stdin === "connection" ? [1, 2, 0] : [1, 2]
  Promise.allSettled(streams.map((stream) => helperOpen(h, request.id, stream, request.token))).then(
    (opened) => {
      const sockets = opened.flatMap((result) => result.status === "fulfilled" ? [result.value] : [])
      const [out, err, input] = sockets
      if (out === undefined || err === undefined || sockets.length < streams.length) {
        for (const socket of sockets) socket.destroy()
        const refused = opened.find((result) => result.status === "rejected")
        const reason = refused?.status === "rejected" ? String(refused.reason) : "unknown"
        return helperSend(h, { k: "failed", id: request.id, code: undefined, message: `no connection to the host: ${reason}` })
      }
      helperStart(h, request, out, err, input)
    }
  )
}

/**
 * @param {Helper} h
 * @param {HelperRequest} request
 * @param {Socket} out
 * @param {Socket} err
 * @param {Socket | undefined} input The stdin connection, when the host streams the child's stdin itself.
 */
function helperStart(h, request, out, err, input) {
  const { argv, cgroup } = request
  /** @type {ChildProcess} */
  let child
  /** @type {Array<number>} */
  const opened = []
  try {
    // Directory descriptors: the host's own open files, reopened through /proc (the same file, no path lookup).
    const extra = request.fds.map((fd) => {
      if (fd === "inherited") return "ignore"
      if (fd === null || fd instanceof Uint8Array) return "pipe"
      const descriptor = fs.openSync(fd.dir, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
      opened.push(descriptor)
      return descriptor
    })
    // libuv forks inside the synchronous spawn, so the child is born in the run's cgroup and nothing else is.
    if (cgroup !== undefined) fs.writeFileSync(cgroup.procs, String(h.host.pid))
    // Node hands a net.Socket's descriptor to the child as it is: the child writes straight to the host.
    child = spawn(argv[0], argv.slice(1), {
      cwd: request.cwd,
      env: request.env,
      detached: true,
      stdio: [input ?? (request.stdin === undefined ? "ignore" : "pipe"), out, err, ...extra]
    })
  } catch (error) {
    // Some errnos (E2BIG, ENOTDIR for a cwd that is a file) are thrown instead of emitted.
    return helperFailed(h, request.id, error)
  } finally {
    if (cgroup !== undefined) fs.writeFileSync(cgroup.home, String(h.host.pid))
    for (const descriptor of opened) fs.closeSync(descriptor)
    // The child holds its own copies (or never will): the host sees EOF once the last holder has closed.
    out.destroy()
    err.destroy()
    input?.destroy()
  }
  helperWatch(h, request, child)
}

/**
 * Follows a started child: tracked while it runs, its start (or failure) and its exit reported.
 * @param {Helper} h
 * @param {HelperRequest} request
 * @param {ChildProcess} child
 */
function helperWatch(h, request, child) {
  const { id } = request
  const pid = child.pid
  // Node leaves the pid unset when the start failed; "error" follows and reports it.
  if (pid !== undefined) h.running.set(id, pid)
  if (request.cgroup !== undefined) h.cgroups.set(id, request.cgroup.procs.slice(0, request.cgroup.procs.lastIndexOf("/")))
  /** @type {ChildStatus} */
  const status = { spawned: false, open: 0, exit: undefined, reported: false }
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

/**
 * The child's stdin and Input descriptors written whole; its Output descriptors relayed as `data`.
 * @param {Helper} h
 * @param {HelperRequest} request
 * @param {ChildProcess} child
 * @param {ChildStatus} status
 */
function helperRelay(h, request, child, status) {
  const { id } = request
  if (request.stdin instanceof Uint8Array) helperFeed(child.stdin, request.stdin)
  request.fds.forEach((bytes, index) => {
    const stream = child.stdio[3 + index]
    if (stream === null || stream === undefined || bytes === "inherited") return
    if (bytes !== null && !(bytes instanceof Uint8Array)) return
    if (bytes !== null) return helperFeed("end" in stream ? stream : undefined, bytes)
    status.open++
    stream.on("error", () => {})
    stream.on("data", (/** @type {Uint8Array} */ chunk) => helperSend(h, { k: "data", id, fd: index, chunk }))
    stream.once("close", () => {
      status.open--
      helperReport(h, id, status)
    })
  })
}

/**
 * The exit goes out after the last chunk of every Output descriptor, so the host has them when it sees it.
 * @param {Helper} h
 * @param {number} id
 * @param {ChildStatus} status
 */
function helperReport(h, id, status) {
  if (status.exit === undefined || status.open > 0 || status.reported) return
  status.reported = true
  helperSend(h, { k: "exit", id, code: status.exit.code, signal: status.exit.signal })
}

/**
 * The helper: the steps above wired to the host's messages and signals. It exits when the host goes away (IPC
 * `disconnect`, also when the host was SIGKILLed), after SIGKILLing the group of every child it started and has not
 * seen exit, and every process of their run cgroups.
 * @param {HelperHost} host
 * @param {string} socketPath
 */
export function helperMain(host, socketPath) {
  /** @type {Helper} */
  const h = { host, socketPath, running: new Map(), cgroups: new Map() }
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
