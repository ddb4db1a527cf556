/**
 * The fleet's transport: `@effect/cluster`'s socket runner (`SocketRunner`, msgpack RPC), as
 * `@effect/platform-node`'s `NodeClusterSocket.layer` puts it together, but over mutually authenticated TLS 1.3.
 * `@effect/cluster` 0.60 has no TLS option; its two seams are the `SocketServer` the runner serves on and the
 * `RpcClientProtocol` it dials other runners with, and both are replaced here. The server asks every connection for
 * a certificate signed by the fleet's CA and drops one without it during the handshake, before a byte of RPC is
 * read (Ping included); the client pins the same CA and checks that the worker it dialled is named in the worker's
 * certificate.
 */
import * as MessageStorage from "@effect/cluster/MessageStorage"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import * as Runners from "@effect/cluster/Runners"
import type * as RunnerStorage from "@effect/cluster/RunnerStorage"
import type { Sharding } from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SocketRunner from "@effect/cluster/SocketRunner"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Socket from "@effect/platform/Socket"
import * as SocketServer from "@effect/platform/SocketServer"
import * as RpcClient from "@effect/rpc/RpcClient"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import type { SqlClient } from "@effect/sql/SqlClient"
import type { ConfigError } from "effect/ConfigError"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { isIP } from "node:net"
import * as tls from "node:tls"
import type { FleetTls } from "./pki.js"

/** A handshake that has not finished by then is dropped (a peer that connects and says nothing holds no slot). */
const HANDSHAKE_TIMEOUT_MS = 5_000

/** What both ends of every fleet connection agree on: TLS 1.3 only, the fleet's CA and nothing else. */
const common = (material: FleetTls) => ({
  ca: material.ca,
  cert: material.cert,
  key: material.key,
  minVersion: "TLSv1.3" as const
})

/**
 * A `SocketServer` on a TLS server that requires a client certificate from the fleet's CA. Only connections whose
 * handshake succeeded ("secureConnection") are handed to the runner, so an unauthenticated peer never reaches the
 * RPC decoder. (Otherwise as `NodeSocketServer.make`: connections queue until `run`.)
 */
export const makeTlsSocketServer = (
  material: FleetTls,
  listen: { readonly host: string; readonly port: number }
): Effect.Effect<SocketServer.SocketServer["Type"], SocketServer.SocketServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const failed = yield* Deferred.make<never, Error>()
    const pending: Array<tls.TLSSocket> = []
    let onConnection = (socket: tls.TLSSocket) => {
      pending.push(socket)
    }
    const server = tls.createServer({
      ...common(material),
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS
    }, (socket) => onConnection(socket))
    // A failed handshake is the peer's problem: its socket is destroyed, the server goes on.
    server.on("tlsClientError", (_error, socket) => socket.destroy())
    server.on("error", (cause) => Deferred.unsafeDone(failed, Exit.fail(cause)))
    // Every accepted connection, so that closing the server ends them too (server.close waits for open ones).
    const open = new Set<tls.TLSSocket>()
    server.on("secureConnection", (socket: tls.TLSSocket) => {
      open.add(socket)
      socket.once("close", () => open.delete(socket))
    })
    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        for (const socket of open) socket.destroy()
      })
    )
    yield* Effect.async<void>((resume) => {
      server.listen(listen.port, listen.host, () => resume(Effect.void))
    }).pipe(Effect.raceFirst(
      Effect.mapError(Deferred.await(failed), (cause) => new SocketServer.SocketServerError({ reason: "Open", cause }))
    ))
    const run = <R, E, _>(handler: (socket: Socket.Socket) => Effect.Effect<_, E, R>) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const fibers = yield* FiberSet.make().pipe(Scope.extend(scope))
        const fork = yield* FiberSet.runtime(fibers)<R>()
        const serve = (conn: tls.TLSSocket) => {
          conn.on("error", () => {})
          fork(
            Effect.flatMap(
              NodeSocket.fromDuplex(Effect.acquireRelease(
                Effect.suspend(() =>
                  conn.closed
                    ? Effect.fail(new Socket.SocketCloseError({ reason: "Close", code: 1000 }))
                    : Effect.succeed(conn)
                ),
                (socket) => Effect.sync(() => socket.closed || socket.destroySoon())
              )),
              handler
            ).pipe(Effect.catchAllCause(() => Effect.void))
          )
        }
        return yield* Effect.async<never, SocketServer.SocketServerError>(() => {
          const before = onConnection
          onConnection = serve
          for (const socket of pending.splice(0)) serve(socket)
          return Effect.suspend(() => {
            onConnection = before
            return Scope.close(scope, Exit.void)
          })
        }).pipe(Effect.raceFirst(
          Effect.mapError(Deferred.await(failed), (cause) => new SocketServer.SocketServerError({ reason: "Unknown", cause }))
        ))
      })
    const address = server.address()
    return SocketServer.SocketServer.of({
      address: typeof address === "object" && address !== null
        ? { _tag: "TcpAddress", hostname: address.address, port: address.port }
        : { _tag: "TcpAddress", hostname: listen.host, port: listen.port },
      run
    })
  })

/** The runner's `SocketServer` on its listen address (`runnerListenAddress`, else `runnerAddress`), over TLS. */
const layerTlsSocketServer = (material: FleetTls) =>
  Layer.scoped(
    SocketServer.SocketServer,
    Effect.flatMap(ShardingConfig.ShardingConfig, (config) => {
      const address = Option.orElse(config.runnerListenAddress, () => config.runnerAddress)
      return Option.isNone(address)
        ? Effect.dieMessage("the fleet's TLS server needs a runner address")
        : makeTlsSocketServer(material, address.value)
    })
  )

/** Opens a TLS connection to a fleet member, authenticated both ways; resolves once the handshake is done. */
export const connectTls = (material: FleetTls, host: string, port: number) =>
  NodeSocket.fromDuplex(
    Effect.acquireRelease(
      Effect.async<tls.TLSSocket, Socket.SocketError>((resume) => {
        const conn = tls.connect({
          ...common(material),
          host,
          port,
          // SNI takes names only; the certificate check (checkServerIdentity, against its subjectAltName) covers both.
          ...(isIP(host) === 0 ? { servername: host } : {}),
          rejectUnauthorized: true
        })
        conn.once("secureConnect", () => resume(Effect.succeed(conn)))
        conn.once("error", (cause) => resume(Effect.fail(new Socket.SocketGenericError({ reason: "Open", cause }))))
      }),
      (conn) => Effect.sync(() => conn.closed || conn.destroySoon())
    ),
    { openTimeout: 5000 }
  )

/** How the runner dials other runners (and a client dials workers): TLS with the member's certificate. */
const layerTlsClientProtocol = (material: FleetTls) =>
  Layer.effect(
    Runners.RpcClientProtocol,
    Effect.map(RpcSerialization.RpcSerialization, (serialization) => (address) =>
      Effect.flatMap(connectTls(material, address.host, address.port), (socket) =>
        RpcClient.makeProtocolSocket().pipe(
          Effect.provideService(Socket.Socket, socket),
          Effect.provideService(RpcSerialization.RpcSerialization, serialization)
        )).pipe(Effect.orDie))
  )

/**
 * `NodeClusterSocket.layer({ storage: "sql", clientOnly, shardingConfig })` over mutually authenticated TLS: the
 * same runner, storage, health checks (Ping, which now needs a certificate too) and msgpack serialization.
 */
export const layerClusterTls = (
  material: FleetTls,
  options: { readonly clientOnly: boolean; readonly shardingConfig: Partial<ShardingConfig.ShardingConfig["Type"]> }
): Layer.Layer<
  Sharding | Runners.Runners | MessageStorage.MessageStorage,
  SocketServer.SocketServerError | ConfigError,
  SqlClient
> => {
  const clientProtocol = layerTlsClientProtocol(material)
  const runner: Layer.Layer<
    Sharding | Runners.Runners,
    SocketServer.SocketServerError,
    | Runners.RpcClientProtocol
    | ShardingConfig.ShardingConfig
    | RpcSerialization.RpcSerialization
    | MessageStorage.MessageStorage
    | RunnerStorage.RunnerStorage
  > = options.clientOnly
    ? SocketRunner.layerClientOnly
    : SocketRunner.layer.pipe(
      Layer.provide(RunnerHealth.layerPing.pipe(Layer.provide(Runners.layerRpc))),
      Layer.provide(layerTlsSocketServer(material))
    )
  return runner.pipe(
    Layer.provide(clientProtocol),
    Layer.provideMerge(Layer.orDie(SqlMessageStorage.layer)),
    Layer.provide(Layer.orDie(SqlRunnerStorage.layer)),
    Layer.provide(ShardingConfig.layerFromEnv(options.shardingConfig)),
    Layer.provide(RpcSerialization.layerMsgPack)
  )
}

