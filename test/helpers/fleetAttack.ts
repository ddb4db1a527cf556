/**
 * The fleet attack of issue 20: a process that knows nothing of the fleet (no database URL) dials a worker's port
 * with `@effect/cluster`'s own runner RPC client (msgpack, as `NodeClusterSocket.layerClientProtocol` speaks it) and
 * sends `Request` envelopes for the `NativeRunner` entity, tag `Exec`, one per shard, so that whichever shards the
 * worker holds, one of them reaches it. The transport is the attacker's choice: plain TCP, or TLS with whatever
 * certificate it has (none, one from another CA, or the fleet's own, the positive control).
 */
import * as EntityAddress from "@effect/cluster/EntityAddress"
import * as Runners from "@effect/cluster/Runners"
import * as ShardId from "@effect/cluster/ShardId"
import * as Snowflake from "@effect/cluster/Snowflake"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Headers from "@effect/platform/Headers"
import * as Socket from "@effect/platform/Socket"
import * as RpcClient from "@effect/rpc/RpcClient"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as tls from "node:tls"
import { SHARDS_PER_GROUP } from "../../src/cluster/postgres.js"

/** How the attacker connects. */
export type Transport =
  | { readonly _tag: "plain" }
  | { readonly _tag: "tls"; readonly cert?: Buffer; readonly key?: Buffer; readonly ca?: Buffer }

const open = (transport: Transport, host: string, port: number): Effect.Effect<Socket.Socket, Socket.SocketError, never> =>
  transport._tag === "plain"
    ? NodeSocket.makeNet({ host, port, openTimeout: 3000 })
    : NodeSocket.fromDuplex(
      Effect.async<tls.TLSSocket, Socket.SocketError>((resume) => {
        const conn = tls.connect({
          host,
          port,
          ...(transport.ca === undefined ? { rejectUnauthorized: false } : { ca: transport.ca }),
          ...(transport.cert === undefined ? {} : { cert: transport.cert, key: transport.key })
        })
        conn.once("secureConnect", () => resume(Effect.succeed(conn)))
        conn.once("error", (cause) => resume(Effect.fail(new Socket.SocketGenericError({ reason: "Open", cause }))))
      }),
      { openTimeout: 3000 }
    )

/**
 * What the attack got back: how many envelopes were answered at all, how many Execs succeeded, whether a Ping was
 * answered, and what the others failed with (`failureKind`).
 */
export interface AttackOutcome {
  readonly answered: number
  readonly ran: number
  readonly pinged: boolean
  readonly failures: ReadonlyArray<string>
}

/**
 * Sends one `Exec` request per shard of group "default" to `host:port` (all at once, 12 s in all), asking to run
 * `argv` for tenant "default", and a `Ping`, the way `@effect/cluster` builds its runner client. Nothing here is a
 * fleet member: no database, no registration. The marker the command writes is the proof that it ran.
 */
export const attack = (transport: Transport, host: string, port: number, argv: ReadonlyArray<string>) =>
  Effect.scoped(
    Effect.gen(function*() {
      const socket = yield* open(transport, host, port)
      const protocol = yield* RpcClient.makeProtocolSocket({ retryTransientErrors: false }).pipe(
        Effect.provideService(Socket.Socket, socket),
        Effect.provide(RpcSerialization.layerMsgPack)
      )
      const client = yield* Runners.makeRpcClient.pipe(Effect.provideService(RpcClient.Protocol, protocol))
      const pinged = yield* client.Ping().pipe(
        Effect.timeout("3 seconds"),
        Effect.as(true),
        Effect.catchAllCause(() => Effect.succeed(false))
      )
      const failures = new Set<string>()
      let answered = 0
      let ran = 0
      yield* Effect.forEach(
        Array.from({ length: SHARDS_PER_GROUP }, (_, i) => i + 1),
        (shard) =>
          client.Effect({
            persisted: false,
            request: {
              _tag: "Request",
              requestId: Snowflake.Snowflake(BigInt(1_000_000 + shard)),
              address: EntityAddress.make({
                shardId: ShardId.make("default", shard),
                entityType: "NativeRunner" as never,
                entityId: "default" as never
              }),
              tag: "Exec",
              payload: { requestId: `attack-${shard}`, tenant: "default", delivery: "at-least-once", input: { argv } },
              headers: Headers.empty
            }
          }).pipe(
            Effect.tap(() => Effect.sync(() => answered++)),
            Effect.tap((reply) => Effect.sync(() => {
              if (JSON.stringify(reply).includes("\"WithExit\"") && JSON.stringify(reply).includes("\"Success\"")) ran++
            })),
            Effect.catchAllCause((cause) => Effect.sync(() => failures.add(failureKind(cause))))
          ),
        { concurrency: "unbounded", discard: true }
      ).pipe(Effect.timeout("12 seconds"), Effect.catchTag("TimeoutException", () => Effect.sync(() => failures.add("timed out"))))
      return { answered, ran, pinged, failures: [...failures].sort() } satisfies AttackOutcome
    })
  )

/**
 * What a failed request died of, in a word: the worker's own refusal (a member's request for a shard it does not
 * hold), the connection, or a bug in this harness (a request it could not even encode fails the test instead).
 */
const failureKind = (cause: Cause.Cause<unknown>): string => {
  const text = String(Cause.squash(cause))
  if (/ParseError/.test(text)) throw new Error(`the attack could not encode its request: ${text.slice(0, 400)}`)
  if (/EntityNotAssignedToRunner/.test(text)) return "EntityNotAssignedToRunner"
  // The socket error's own cause: a refused connect means nothing listened there, which proves nothing.
  const inner = (error: unknown): string =>
    typeof error === "object" && error !== null && "cause" in error ? `${String(error)} ${inner(error.cause)}` : String(error)
  if (/ECONNREFUSED/.test(inner(Cause.squash(cause)))) return "nothing listens"
  if (/SocketError|RpcClientError|SocketCloseError/.test(text)) return "connection"
  return text.split("\n")[0]!.slice(0, 120)
}
