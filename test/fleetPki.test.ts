/**
 * The fleet's certificates (`native-runner fleet init`, `initFleet`) and its TLS transport (`makeTlsSocketServer`,
 * `connectTls`) without a database: what the files are, what is refused, and who completes a handshake.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Socket from "@effect/platform/Socket"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { execFileSync } from "node:child_process"
import { chmodSync, chownSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import * as tls from "node:tls"
import { FLEET_FILES, initFleet, loadFleetTls, readFleetCa } from "../src/cluster/pki.js"
import { connectTls, makeTlsSocketServer } from "../src/cluster/tls.js"
import { scratchDir } from "./helpers/tempDirs.js"

/** A new temporary directory, removed after this file's tests (scratchDir). */
const fresh = () => scratchDir("enr-pki-")
const errorOf = <A, E>(exit: Exit.Exit<A, E>) => {
  if (Exit.isSuccess(exit)) return "succeeded"
  const error = Cause.squash(exit.cause)
  // The message, and the message of what caused it (a socket error's TLS reason).
  const inner = (e: unknown): string =>
    typeof e === "object" && e !== null && "cause" in e ? `${String(e)} <- ${inner(e.cause)}` : String(e)
  return `${inner(error)} ${error !== null && typeof error === "object" && "message" in error ? String(error.message) : ""}`
}
const freePort = () =>
  new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

describe("fleet init", () => {
  it.effect("makes a CA and a member certificate for the hosts given: files 0600 in a 0700 directory, verifiable", () =>
    Effect.gen(function*() {
      const dir = path.join(fresh(), "fleet")
      const names = yield* initFleet(dir, ["worker-1.internal", "10.0.0.7"])
      expect(names).toEqual(["worker-1.internal", "10.0.0.7"])
      expect(readdirSync(dir).sort()).toEqual(Object.values(FLEET_FILES).sort())
      expect(statSync(dir).mode & 0o777).toBe(0o700)
      for (const file of Object.values(FLEET_FILES)) expect(statSync(path.join(dir, file)).mode & 0o777).toBe(0o600)
      const verified = execFileSync("openssl", ["verify", "-CAfile", path.join(dir, "ca.crt"), path.join(dir, "worker.crt")], { encoding: "utf8" })
      expect(verified).toMatch(/: OK$/m)
      const member = new (yield* Effect.promise(() => import("node:crypto"))).X509Certificate(readFileSync(path.join(dir, "worker.crt")))
      expect(member.subjectAltName).toBe("DNS:worker-1.internal, IP Address:10.0.0.7")
      expect(member.ca).toBe(false)
      expect(member.keyUsage ?? []).toEqual(expect.arrayContaining(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]))
      const ca = new (yield* Effect.promise(() => import("node:crypto"))).X509Certificate(readFileSync(path.join(dir, "ca.crt")))
      expect(ca.ca).toBe(true)
      expect(member.checkIssued(ca)).toBe(true)
    }))

  it.effect("by default the certificate names this machine's hostname, localhost and 127.0.0.1", () =>
    Effect.gen(function*() {
      const dir = path.join(fresh(), "fleet")
      const names = yield* initFleet(dir, [])
      expect(names).toEqual(expect.arrayContaining(["localhost", "127.0.0.1"]))
      const { X509Certificate } = yield* Effect.promise(() => import("node:crypto"))
      const alt = new X509Certificate(readFileSync(path.join(dir, "worker.crt"))).subjectAltName ?? ""
      expect(alt).toContain("DNS:localhost")
      expect(alt).toContain("IP Address:127.0.0.1")
    }))

  it.effect("never overwrites a fleet, refuses a host name that is not one, and a directory open to others", () =>
    Effect.gen(function*() {
      const dir = path.join(fresh(), "fleet")
      yield* initFleet(dir, ["a.example"])
      const before = readFileSync(path.join(dir, "ca.key"))
      const again = yield* Effect.exit(initFleet(dir, ["a.example"]))
      expect(errorOf(again)).toMatch(/exists already/)
      expect(readFileSync(path.join(dir, "ca.key")).equals(before)).toBe(true)
      expect(readdirSync(dir).sort()).toEqual(Object.values(FLEET_FILES).sort())
      for (const bad of ["a,DNS:evil.example", "a b", "a/b", ""]) {
        const refused = yield* Effect.exit(initFleet(path.join(fresh(), "fleet"), [bad]))
        expect(errorOf(refused)).toMatch(/not a host name or an IP address/)
      }
      const open = path.join(fresh(), "open")
      mkdirSync(open, { mode: 0o755 })
      chmodSync(open, 0o755)
      expect(errorOf(yield* Effect.exit(initFleet(open, [])))).toMatch(/open to other users/)
      expect(readdirSync(open)).toEqual([])
    }))

  it.effect("a member key readable by others is refused when a member loads it", () =>
    Effect.gen(function*() {
      const dir = path.join(fresh(), "fleet")
      yield* initFleet(dir, [])
      expect((yield* loadFleetTls(dir)).key.length).toBeGreaterThan(0)
      chmodSync(path.join(dir, "worker.key"), 0o644)
      expect(errorOf(yield* Effect.exit(loadFleetTls(dir)))).toMatch(/readable by other users/)
      rmSync(path.join(dir, "worker.key"))
      expect(errorOf(yield* Effect.exit(loadFleetTls(dir)))).toMatch(/fleet init/)
    }))

  // Found by review: another user owning a directory above the fleet swapped it for their own CA and key after
  // `fleet init`; `fleet tenant` then pinned their CA in a tenant's credentials.
  it.effect.runIf(process.getuid?.() === 0)("a fleet directory another user could swap is refused: parents and files are checked", () =>
    Effect.gen(function*() {
      const parent = fresh()
      const dir = path.join(parent, "fleet")
      yield* initFleet(dir, [])
      expect((yield* loadFleetTls(dir)).key.length).toBeGreaterThan(0)
      expect(yield* Effect.promise(() => readFleetCa(dir))).toContain("BEGIN CERTIFICATE")
      // The parent given to uid 1000: it could rename the fleet directory and put its own in place.
      chownSync(parent, 1000, 1000)
      expect(errorOf(yield* Effect.exit(loadFleetTls(dir)))).toMatch(/could be changed by another user/)
      expect(yield* Effect.promise(() => readFleetCa(dir).then(() => "read", (e: Error) => e.message))).toMatch(/could be changed by another user/)
      expect(errorOf(yield* Effect.exit(initFleet(path.join(parent, "other"), [])))).toMatch(/could be changed by another user/)
      chownSync(parent, 0, 0)
      // A member file that is not ours (planted, or copied in by someone else) is refused too.
      chownSync(path.join(dir, "ca.crt"), 1000, 1000)
      expect(errorOf(yield* Effect.exit(loadFleetTls(dir)))).toMatch(/ca\.crt belongs to uid 1000/)
      chownSync(path.join(dir, "ca.crt"), 0, 0)
      expect((yield* loadFleetTls(dir)).ca.length).toBeGreaterThan(0)
    }))
})

describe("the fleet's TLS transport", () => {
  /** A fleet TLS server (`makeTlsSocketServer`) that greets each connection it accepts with "hello" and closes it. */
  const greeter = (dir: string, port: number) =>
    Effect.gen(function*() {
      const server = yield* makeTlsSocketServer(yield* loadFleetTls(dir), { host: "127.0.0.1", port })
      yield* Effect.forkScoped(server.run((socket) =>
        Effect.scoped(Effect.gen(function*() {
          // A socket opens when it is run; writes wait for that.
          const write = yield* socket.writer
          yield* Effect.fork(socket.run(() => {}))
          yield* write(new TextEncoder().encode("hello"))
          yield* write(new Socket.CloseEvent(1000))
        }))))
    })

  /** What a plain node TLS client with `options` reads from `port` before the connection ends. */
  const nodeClient = (port: number, options: tls.ConnectionOptions) =>
    Effect.promise(() =>
      new Promise<string>((resolve) => {
        let got = ""
        const conn = tls.connect({ host: "127.0.0.1", port, ...options })
        conn.on("data", (chunk: Buffer) => (got += chunk.toString()))
        conn.on("error", () => {})
        conn.on("close", () => resolve(got))
      }))

  it.scoped("the server answers a member only: no certificate, or another CA's, is dropped unread", () =>
    Effect.gen(function*() {
      const dir = path.join(fresh(), "fleet")
      yield* initFleet(dir, [])
      const port = yield* Effect.promise(freePort)
      yield* greeter(dir, port)
      const member = yield* loadFleetTls(dir)
      expect(yield* nodeClient(port, { ca: member.ca, cert: member.cert, key: member.key })).toBe("hello")
      const other = path.join(fresh(), "other")
      yield* initFleet(other, [])
      const foreign = yield* loadFleetTls(other)
      expect(yield* nodeClient(port, { rejectUnauthorized: false })).toBe("")
      expect(yield* nodeClient(port, { rejectUnauthorized: false, cert: foreign.cert, key: foreign.key })).toBe("")
      // TLS 1.2 is not offered even with a member certificate.
      expect(yield* nodeClient(port, { ca: member.ca, cert: member.cert, key: member.key, maxVersion: "TLSv1.2" })).toBe("")
      // Still serving members after the refusals.
      expect(yield* nodeClient(port, { ca: member.ca, cert: member.cert, key: member.key })).toBe("hello")
    }), { timeout: 30_000 })

  /** What `connectTls` with `material` reads from `port` until the server closes, or why it failed. */
  const dial = (material: Parameters<typeof connectTls>[0], host: string, port: number) =>
    Effect.gen(function*() {
      let got = ""
      const socket = yield* connectTls(material, host, port)
      yield* socket.run((chunk) => {
        got += new TextDecoder().decode(chunk)
      })
      return got
    }).pipe(Effect.timeout("5 seconds"), Effect.exit)

  it.scoped("the client trusts the fleet's CA only, and checks the name it dialled against the certificate", () =>
    Effect.gen(function*() {
      const dir = path.join(fresh(), "fleet")
      yield* initFleet(dir, [])
      const member = yield* loadFleetTls(dir)
      const port = yield* Effect.promise(freePort)
      yield* greeter(dir, port)
      const ok = yield* dial(member, "127.0.0.1", port)
      expect(Exit.isSuccess(ok) && ok.value).toBe("hello")
      expect(Exit.isSuccess(yield* dial(member, "localhost", port))).toBe(true)

      // A server with another CA's certificate (an impostor on the worker's address): refused by the client.
      const other = path.join(fresh(), "other")
      yield* initFleet(other, [])
      const impostorPort = yield* Effect.promise(freePort)
      yield* greeter(other, impostorPort)
      const impostor = yield* dial(member, "127.0.0.1", impostorPort)
      expect(errorOf(impostor)).toMatch(/SocketError.*(unable to verify|self-signed|UNABLE_TO_VERIFY|certificate)/i)
      expect(Exit.isSuccess(impostor)).toBe(false)

      // Our own CA, but a certificate for other names than the one dialled.
      const named = path.join(fresh(), "named")
      yield* initFleet(named, ["worker-9.internal"])
      const namedMaterial = yield* loadFleetTls(named)
      const namedPort = yield* Effect.promise(freePort)
      yield* greeter(named, namedPort)
      const wrongName = yield* dial(namedMaterial, "127.0.0.1", namedPort)
      expect(Exit.isSuccess(wrongName)).toBe(false)
      expect(errorOf(wrongName)).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list/)
    }), { timeout: 30_000 })
})
