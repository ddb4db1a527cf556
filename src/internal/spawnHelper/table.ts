/**
 * The host's side of the helper protocol: the table of execs in flight, the output connections routed to them by
 * their header, and the helper's replies applied to them. Plain Node callbacks; the Effect lifecycle is in
 * ../spawnHelper.ts.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import type { Server, Socket } from "node:net"
import type { Capture } from "../capture.js"
import type { ProcessExit, RunningProcess } from "../engine.js"
import { errnoOf } from "../live.js"
import { killGroup } from "../nodeSpawner.js"
import type { PreparedCommand } from "../prepared.js"
import { HEADER_BYTES, type HelperRequest, isReply } from "./helperMain.js"

/** What the helper reported about a failed start: Node's errno code, and the error as text. */
export interface StartFailure {
  readonly code: string | undefined
  readonly message: string
}

interface Reader {
  readonly capture: Capture
  readonly closed: () => void
}

/** One output connection: the socket once the helper has connected, the reader once `output` has started. */
interface Stream {
  socket: Socket | undefined
  /** Bytes that came with the header. */
  rest: Uint8Array | undefined
  /** A read error that came before the reader. */
  failure: string | undefined
  reader: Reader | undefined
}

/** One exec in flight: from the request until its spawn scope is released (or the start failed). */
export interface Exec {
  readonly id: number
  readonly command: PreparedCommand
  /** "abandoned": the request was interrupted before the helper answered; the child is killed once it reports. */
  state: "starting" | "running" | "abandoned"
  answer: ((started: Effect.Effect<Exec, StartFailure>) => void) | undefined
  /** Fires if the helper does not answer in time (`Channel.stuck`); cleared by the answer. */
  watchdog: ReturnType<typeof setTimeout> | undefined
  pid: number
  exitKnown: boolean
  readonly exited: Deferred.Deferred<ProcessExit>
  readonly streams: readonly [Stream, Stream]
  outputStopped: boolean
}

/** How the table reaches the helper, once it has started. */
export interface Channel {
  readonly send: (request: HelperRequest) => void
  /** Keeps the event loop alive (the IPC channel referenced) while execs are in flight, as a child's pipes would. */
  readonly hold: (held: boolean) => void
  /** Ends a helper that left a request unanswered for `answerWithinMs`: everything goes direct after that. */
  readonly stuck: () => void
}

export interface Table {
  readonly execs: Map<number, Exec>
  /** Why the helper can no longer be used; `undefined` while it can. */
  gone: string | undefined
  readonly attach: (channel: Channel) => void
  /** Sends one exec to the helper; succeeds once it has started the child. */
  readonly request: (command: PreparedCommand, stdin: Uint8Array | undefined) => Effect.Effect<Exec, StartFailure>
  /** Reads the header of a new output connection and hands the connection to its exec. */
  readonly accept: (socket: Socket) => void
  /** The helper has gone: starts in flight fail, running groups are SIGKILLed and reported so. */
  readonly goneAway: (why: string) => void
  readonly closeSockets: (server: Server) => void
  /** Internal: the channel, for `track` and `forget`. */
  channel: Channel
}

const idle: Channel = { send: () => {}, hold: () => {}, stuck: () => {} }

/** The helper has answered (or never will): the request's watchdog and resume callback are done with. */
const answered = (exec: Exec) => {
  clearTimeout(exec.watchdog)
  exec.watchdog = undefined
  const answer = exec.answer
  exec.answer = undefined
  return answer
}

const settle = (exec: Exec, exit: ProcessExit) => {
  if (exec.exitKnown) return
  exec.exitKnown = true
  Deferred.unsafeDone(exec.exited, Exit.succeed(exit))
}

const stopOutput = (exec: Exec) => {
  exec.outputStopped = true
  for (const stream of exec.streams) stream.socket?.destroy()
}

/** Feeds a connection into its reader once both are there; the reader's `closed` runs when the connection closes. */
const pipeInto = (stream: Stream) => {
  const { reader, socket } = stream
  if (reader === undefined || socket === undefined) return
  if (stream.rest !== undefined) reader.capture.push(stream.rest)
  stream.rest = undefined
  if (stream.failure !== undefined) reader.capture.fail(stream.failure)
  // Destroyed while waiting for its reader (a read error): nothing more will come.
  if (socket.destroyed) return reader.closed()
  socket.on("data", (chunk: Uint8Array) => reader.capture.push(chunk))
  socket.once("close", reader.closed)
  socket.resume()
}

export const track = (table: Table, exec: Exec) => {
  table.execs.set(exec.id, exec)
  if (table.execs.size === 1) table.channel.hold(true)
}

export const forget = (table: Table, exec: Exec) => {
  stopOutput(exec)
  if (table.execs.get(exec.id) !== exec) return
  table.execs.delete(exec.id)
  if (table.execs.size === 0) table.channel.hold(false)
}

/** Applies one reply of the helper to its exec. */
export const onReply = (table: Table, message: unknown): void => {
  if (!isReply(message)) return
  const exec = table.execs.get(message.id)
  if (exec === undefined) return
  switch (message.k) {
    case "spawned": {
      exec.pid = message.pid
      const answer = answered(exec)
      if (exec.state === "abandoned") {
        killGroup(message.pid, "SIGKILL")
        return forget(table, exec)
      }
      exec.state = "running"
      return answer?.(Effect.succeed(exec))
    }
    case "failed": {
      const answer = answered(exec)
      forget(table, exec)
      return answer?.(Effect.fail({ code: message.code, message: message.message }))
    }
    case "data": {
      const fd = exec.command.extraFds?.[message.fd]
      if (fd?._tag === "Output") fd.onData(message.chunk)
      return
    }
    case "exit":
      return settle(exec, { code: message.code, signal: message.signal })
  }
}

/** The engine's view of a started exec. */
export const runningOf = (exec: Exec): RunningProcess => ({
  pid: exec.pid,
  output: (stdout, stderr) =>
    Effect.async<void>((resume) => {
      let open = 2
      const closed = () => {
        if (--open === 0) resume(Effect.void)
      }
      exec.streams[0].reader = { capture: stdout, closed }
      exec.streams[1].reader = { capture: stderr, closed }
      pipeInto(exec.streams[0])
      pipeInto(exec.streams[1])
      return Effect.sync(() => stopOutput(exec))
    }),
  exit: Deferred.await(exec.exited),
  // The host signals the group itself: the helper only starts children. Once the helper reported the exit, it has
  // reaped the leader (Node reaps before "exit"), which is what `killGroup` needs to know against pid reuse.
  kill: (signal) => Effect.sync(() => killGroup(exec.pid, signal, exec.exitKnown))
})

const emptyStream = (): Stream => ({ socket: undefined, rest: undefined, failure: undefined, reader: undefined })

const makeExec = (
  id: number,
  command: PreparedCommand,
  answer: (started: Effect.Effect<Exec, StartFailure>) => void
): Exec => ({
  id,
  command,
  state: "starting",
  answer,
  watchdog: undefined,
  pid: 0,
  exitKnown: false,
  exited: Deferred.unsafeMake<ProcessExit>(FiberId.none),
  streams: [emptyStream(), emptyStream()],
  outputStopped: false
})

/** `answerWithinMs`: how long the helper may take to answer a request before it is taken for stuck and killed. */
export const makeTable = (answerWithinMs: number): Table => {
  const sockets = new Set<Socket>()
  let nextId = 0
  const table: Table = {
    execs: new Map(),
    gone: undefined,
    channel: idle,
    attach: (channel) => {
      table.channel = channel
    },
    request: (command, stdin) =>
      Effect.async<Exec, StartFailure>((resume) => {
        nextId = (nextId + 1) >>> 0
        const exec = makeExec(nextId, command, resume)
        track(table, exec)
        exec.watchdog = setTimeout(() => {
          table.goneAway(`the spawn helper did not answer in ${answerWithinMs} ms and was killed`)
          table.channel.stuck()
        }, answerWithinMs)
        // Not a reason to keep the host alive: the channel is held while the request is in flight.
        exec.watchdog.unref()
        try {
          table.channel.send({
            id: exec.id,
            argv: command.argv,
            cwd: command.cwd,
            env: command.env,
            stdin,
            fds: (command.extraFds ?? []).map((fd) => fd._tag === "Input" ? fd.bytes : null),
            cgroup: command.cgroup
          })
        } catch (error) {
          // Not sent (a value structured clone refuses): nothing was started.
          answered(exec)
          forget(table, exec)
          resume(Effect.fail({ code: undefined, message: `cannot send the request to the spawn helper: ${String(error)}` }))
        }
        return Effect.sync(() => {
          if (exec.state !== "starting") return
          // The watchdog stays: an abandoned request still needs its answer, to kill what it started.
          exec.state = "abandoned"
          exec.answer = undefined
        })
      }),
    accept: (socket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
      let routed: Stream | undefined
      // A read error ends the stream ("close" follows): the capture records it, so the result says the output is
      // incomplete; the exit status still says how the process ended. Before routing, the connection is just dropped.
      socket.on("error", (error: Error) => {
        const reason = `${errnoOf(error) ?? "read error"}: ${error.message}`
        if (routed?.reader !== undefined) routed.reader.capture.fail(reason)
        else if (routed !== undefined) routed.failure = reason
      })
      let head: Buffer = Buffer.alloc(0)
      const onHead = (chunk: Buffer) => {
        head = head.length === 0 ? chunk : Buffer.concat([head, chunk])
        if (head.length < HEADER_BYTES) return
        socket.off("data", onHead)
        socket.pause()
        const exec = table.execs.get(head.readUInt32BE(0))
        const which = head[4]
        const stream = which === 1 ? exec?.streams[0] : which === 2 ? exec?.streams[1] : undefined
        if (exec === undefined || stream === undefined || stream.socket !== undefined || exec.outputStopped) {
          return socket.destroy()
        }
        stream.socket = socket
        stream.rest = head.length > HEADER_BYTES ? head.subarray(HEADER_BYTES) : undefined
        routed = stream
        pipeInto(stream)
      }
      socket.on("data", onHead)
    },
    goneAway: (why) => {
      if (table.gone !== undefined) return
      table.gone = why
      for (const exec of [...table.execs.values()]) {
        if (exec.state === "running") {
          if (!exec.exitKnown) killGroup(exec.pid, "SIGKILL")
          settle(exec, { code: null, signal: "SIGKILL" })
          continue
        }
        const answer = answered(exec)
        forget(table, exec)
        answer?.(Effect.fail({ code: undefined, message: `${why} before the start` }))
      }
    },
    closeSockets: (server) => {
      server.close()
      for (const socket of sockets) socket.destroy()
    }
  }
  return table
}
