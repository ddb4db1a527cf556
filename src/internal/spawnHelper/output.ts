/**
 * The output connections of the helper protocol: the helper opens one per stream of each exec, starting with a header
 * (./helperProgram.mjs); the host routes it by that header to the exec's stream and feeds it into its capture.
 */
import type { Socket } from "node:net"
import type { Capture } from "../capture.js"
import { errnoOf } from "../live.js"
import { HEADER_BYTES, TOKEN_BYTES } from "./protocol.js"

/** How long a new connection may take to send its header before it is dropped (the helper's takes microseconds). */
const HEADER_WITHIN_MS = 5_000

export interface Reader {
  readonly capture: Capture
  readonly closed: () => void
}

/** One output connection: the socket once the helper has connected, the reader once `output` has started. */
export interface OutputStream {
  socket: Socket | undefined
  /** Bytes that came with the header. */
  rest: Uint8Array | undefined
  /** A read error that came before the reader. */
  failure: string | undefined
  reader: Reader | undefined
}

export const emptyStream = (): OutputStream => ({ socket: undefined, rest: undefined, failure: undefined, reader: undefined })

/**
 * The stdin connection of an exec whose stdin the host streams: `take` receives the socket once the helper has
 * connected (at most once). Whatever the child writes into it is read and dropped: it is not output.
 */
export interface InputStream {
  readonly _tag: "Input"
  /** Set when the request asked for a stdin connection; a connection for one that did not is dropped. */
  wanted: boolean
  socket: Socket | undefined
  take: ((socket: Socket) => void) | undefined
}

export const emptyInput = (): InputStream => ({ _tag: "Input", wanted: false, socket: undefined, take: undefined })

/** Hands a stdin connection to its writer once both are there. */
export const takeInput = (input: InputStream) => {
  const { socket, take } = input
  if (socket === undefined || take === undefined) return
  input.take = undefined
  take(socket)
}

/** Feeds a connection into its reader once both are there; the reader's `closed` runs when the connection closes. */
export const pipeInto = (stream: OutputStream) => {
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

/**
 * Reads the header of a new connection and hands the connection to the stream `streamFor` gives for its id,
 * stream and token (none: a wrong token, an id not in flight, a stream already connected, or no header in time: the
 * connection is dropped and `rejected` is called).
 */
export const route = (
  socket: Socket,
  streamFor: (id: number, which: number | undefined, token: Uint8Array) => OutputStream | InputStream | undefined,
  rejected: () => void
) => {
  let routed: OutputStream | undefined
  // A read error ends the stream ("close" follows): the capture records it, so the result says the output is
  // incomplete; the exit status still says how the process ended. Before routing, the connection is just dropped.
  socket.on("error", (error: Error) => {
    const reason = `${errnoOf(error) ?? "read error"}: ${error.message}`
    if (routed?.reader !== undefined) routed.reader.capture.fail(reason)
    else if (routed !== undefined) routed.failure = reason
  })
  let head: Buffer = Buffer.alloc(0)
  const late = setTimeout(() => {
    socket.off("data", onHead)
    rejected()
    socket.destroy()
  }, HEADER_WITHIN_MS)
  late.unref()
  socket.once("close", () => clearTimeout(late))
  const onHead = (chunk: Buffer) => {
    head = head.length === 0 ? chunk : Buffer.concat([head, chunk])
    if (head.length < HEADER_BYTES) return
    clearTimeout(late)
    socket.off("data", onHead)
    socket.pause()
    const stream = streamFor(head.readUInt32BE(0), head[4], head.subarray(5, 5 + TOKEN_BYTES))
    if (stream === undefined) {
      rejected()
      return socket.destroy()
    }
    if ("_tag" in stream) {
      stream.socket = socket
      socket.on("data", () => {})
      socket.resume()
      return takeInput(stream)
    }
    stream.socket = socket
    stream.rest = head.length > HEADER_BYTES ? head.subarray(HEADER_BYTES) : undefined
    routed = stream
    pipeInto(stream)
  }
  socket.on("data", onHead)
}
