/**
 * The host's side of the helper protocol: the table of execs in flight, and the helper's replies applied to them (their
 * output connections are routed in ./output.ts). Plain Node callbacks; the Effect lifecycle is in ../spawnHelper.ts.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import type { Server, Socket } from "node:net"
import type { ProcessExit, RunningProcess } from "../engine.js"
import { killGroup } from "../nodeSpawner.js"
import type { PreparedCommand } from "../prepared.js"
import { randomBytes, timingSafeEqual } from "node:crypto"
import { type HelperRequest, isReply, TOKEN_BYTES } from "./protocol.js"
import { emptyInput, emptyStream, type InputStream, type OutputStream, pipeInto, route } from "./output.js"

/**
 * What the helper reported about a failed start: Node's errno code, and the error as text. `lost`: the helper went
 * away (died, or was killed as stuck) before it answered, so the start's fate is unknown and whatever it started was
 * killed with it.
 */
export interface StartFailure {
  readonly code: string | undefined
  readonly message: string
  readonly lost?: boolean | undefined
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
  readonly streams: readonly [OutputStream, OutputStream]
  /** The stdin connection, when the host streams the child's stdin (`"connection"` in the request). */
  readonly input: InputStream
  outputStopped: boolean
  /** Set once the host sent SIGKILL itself: fires if the helper then reports no exit (`watchKill`). */
  killWatch: ReturnType<typeof setTimeout> | undefined
  /** Random per exec: only a connection that presents it is attached to this exec's output. */
  readonly token: Uint8Array
}

/** How the table reaches the helper, once it has started. */
export interface Channel {
  readonly send: (request: HelperRequest) => void
  /** Keeps the event loop alive (the IPC channel referenced) while execs are in flight, as a child's pipes would. */
  readonly hold: (held: boolean) => void
  /** Ends a helper that left a request unanswered in time (or an exit unreported): the next spawn replaces it. */
  readonly stuck: () => void
}

export interface Table {
  readonly execs: Map<number, Exec>
  /** Why the helper can no longer be used; `undefined` while it can. */
  gone: string | undefined
  readonly attach: (channel: Channel) => void
  /**
   * Sends one exec to the helper; succeeds once it has started the child. `answerWithinMs`: how long the helper may
   * take to answer this request before it is taken for stuck (the table's bound when not given, or when smaller).
   */
  readonly request: (
    command: PreparedCommand,
    stdin: Uint8Array | "connection" | undefined,
    answerWithinMs?: number | undefined
  ) => Effect.Effect<Exec, StartFailure>
  /** Reads the header of a new output connection and hands the connection to its exec. */
  readonly accept: (socket: Socket) => void
  /**
   * The helper has gone: starts in flight fail, running groups are SIGKILLed and reported so; with `lost` (the helper
   * died or stopped while they ran, not the layer closing) their exits carry `lost`, and the runs fail HelperLost.
   */
  readonly goneAway: (why: string, lost?: boolean) => void
  readonly closeSockets: (server: Server) => void
  /** Output connections dropped: a wrong token, an id not in flight, a stream already connected, no header in time. */
  readonly rejected: () => number
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
  clearTimeout(exec.killWatch)
  Deferred.unsafeDone(exec.exited, Exit.succeed(exit))
}

const stopOutput = (exec: Exec) => {
  exec.outputStopped = true
  for (const stream of exec.streams) stream.socket?.destroy()
  exec.input.socket?.destroy()
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

/**
 * How long after the host's SIGKILL the helper may take to report the exit. Reaping a killed process takes
 * microseconds: a helper that says nothing for this long is stopped or wedged, and is killed.
 */
export const EXIT_REPORT_WITHIN_MS = 2_000

/**
 * After a SIGKILL the host sent itself, waits `EXIT_REPORT_WITHIN_MS` for the helper's exit report; without it the
 * helper is taken for lost: killed, the exec (and every other in flight) settled as lost; the next spawn replaces it.
 */
const watchKill = (table: Table, exec: Exec) => {
  if (exec.exitKnown || exec.killWatch !== undefined) return
  exec.killWatch = setTimeout(() => {
    if (exec.exitKnown) return
    table.goneAway(`the spawn helper did not report the exit within ${EXIT_REPORT_WITHIN_MS} ms of SIGKILL and was killed`, true)
    table.channel.stuck()
  }, EXIT_REPORT_WITHIN_MS)
  exec.killWatch.unref()
}

/** The engine's view of a started exec. */
export const runningOf = (table: Table, exec: Exec): RunningProcess => ({
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
  kill: (signal) =>
    Effect.sync(() => {
      killGroup(exec.pid, signal, exec.exitKnown)
      if (signal === "SIGKILL") watchKill(table, exec)
    })
})

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
  input: emptyInput(),
  outputStopped: false,
  killWatch: undefined,
  token: randomBytes(TOKEN_BYTES)
})

/**
 * Sends `exec`'s request to the helper, with a watchdog for its answer; the returned effect is the request's
 * interruption.
 */
const sendRequest = (
  table: Table,
  exec: Exec,
  stdin: Uint8Array | "connection" | undefined,
  answerWithinMs: number,
  resume: (started: Effect.Effect<Exec, StartFailure>) => void
) => {
  const { command } = exec
  exec.input.wanted = stdin === "connection"
  track(table, exec)
  exec.watchdog = setTimeout(() => {
    table.goneAway(`the spawn helper did not answer in ${answerWithinMs} ms and was killed`, true)
    table.channel.stuck()
  }, Math.min(answerWithinMs, MAX_TIMER_MS))
  // Not a reason to keep the host alive: the channel is held while the request is in flight.
  exec.watchdog.unref()
  try {
    table.channel.send({
      id: exec.id,
      argv: command.argv,
      cwd: command.cwd,
      env: command.env,
      stdin,
      token: exec.token,
      fds: (command.extraFds ?? []).map((fd) =>
        fd._tag === "Input"
          ? fd.bytes
          : fd._tag === "Directory"
          ? { dir: `/proc/${process.pid}/fd/${fd.fd}` }
          : fd._tag === "Inherited"
          ? "inherited" as const
          : null
      ),
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
}

/** The stream a connection's header names, while its exec still takes output; else `undefined`. */
const streamFor = (
  table: Table,
  id: number,
  which: number | undefined,
  token: Uint8Array
): OutputStream | InputStream | undefined => {
  const exec = table.execs.get(id)
  const stream = which === 1
    ? exec?.streams[0]
    : which === 2
    ? exec?.streams[1]
    : which === 0 && exec?.input.wanted === true
    ? exec.input
    : undefined
  if (exec === undefined || stream === undefined || stream.socket !== undefined || exec.outputStopped) return undefined
  // Constant time: how much of a guess was right must not show in how long the check took.
  return token.length === exec.token.length && timingSafeEqual(token, exec.token) ? stream : undefined
}

/** The helper has gone: starts in flight fail, running groups are SIGKILLed and reported so. */
const goneAway = (table: Table, why: string, lost: boolean) => {
  if (table.gone !== undefined) return
  table.gone = why
  for (const exec of [...table.execs.values()]) {
    if (exec.state === "running") {
      if (!exec.exitKnown) killGroup(exec.pid, "SIGKILL")
      settle(exec, { code: null, signal: "SIGKILL", ...(lost ? { lost: why } : {}) })
      continue
    }
    const answer = answered(exec)
    forget(table, exec)
    answer?.(Effect.fail({ code: undefined, message: `${why} before the start`, lost }))
  }
}

/** Node fires a timer of more than 2^31 - 1 ms at once. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** `answerWithinMs`: how long the helper may take to answer a request before it is taken for stuck and killed. */
export const makeTable = (answerWithinMs: number): Table => {
  const sockets = new Set<Socket>()
  let nextId = 0
  let rejected = 0
  const table: Table = {
    execs: new Map(),
    gone: undefined,
    channel: idle,
    attach: (channel) => {
      table.channel = channel
    },
    request: (command, stdin, within) =>
      Effect.async<Exec, StartFailure>((resume) => {
        nextId = (nextId + 1) >>> 0
        const bound = within === undefined ? answerWithinMs : Math.min(answerWithinMs, within)
        return sendRequest(table, makeExec(nextId, command, resume), stdin, bound, resume)
      }),
    accept: (socket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
      route(socket, (id, which, token) => streamFor(table, id, which, token), () => {
        rejected++
      })
    },
    goneAway: (why, lost = false) => goneAway(table, why, lost),
    rejected: () => rejected,
    closeSockets: (server) => {
      server.close()
      for (const socket of sockets) socket.destroy()
    }
  }
  return table
}
