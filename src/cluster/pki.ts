/**
 * The fleet's certificates: a CA of its own and a member certificate signed by it, made with `openssl` (no ASN.1 of
 * ours), and read back by the members. Every connection between fleet members (worker to worker, and a client to a
 * worker) is mutually authenticated TLS with them: the member presents its certificate, checks the peer's against the
 * fleet's CA only (never the system's), and the host name it dialled against the certificate's names.
 */
import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs/promises"
import { hostname } from "node:os"
import * as path from "node:path"
import { FleetError } from "../Errors.js"
import { sha256 } from "./secrets.js"

/** The files `initFleet` writes in the fleet directory, all 0600. */
export const FLEET_FILES = {
  caCert: "ca.crt",
  caKey: "ca.key",
  cert: "worker.crt",
  key: "worker.key",
  /** The bearer token `GET /metrics` asks for (a scraper's `credentials_file`); not needed by clients. */
  metricsToken: "metrics.token"
} as const

/** What a fleet member needs for TLS: the fleet's CA (the only one trusted), its certificate and its key (PEM). */
export interface FleetTls {
  readonly ca: Buffer
  readonly cert: Buffer
  readonly key: Buffer
  /** SHA-256 of the fleet's metrics token; undefined for a fleet directory made before it existed. */
  readonly metricsTokenHash?: Buffer | undefined
}

const setupError = (message: string) => new FleetError({ reason: "Unavailable", message })

/** The names a member certificate carries by default: this machine's hostname, `localhost` and `127.0.0.1`. */
export const defaultHosts = (): ReadonlyArray<string> => [...new Set([hostname(), "localhost", "127.0.0.1"])]

const IPV4 = /^(\d{1,3})(\.\d{1,3}){3}$/
/** A DNS name or an IP literal, as a subjectAltName entry; anything else (commas, spaces, slashes) is refused. */
const altName = (host: string): string | undefined =>
  IPV4.test(host) || /^[0-9a-fA-F:]+$/.test(host) && host.includes(":")
    ? `IP:${host}`
    : /^[A-Za-z0-9*]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(host)
    ? `DNS:${host}`
    : undefined

const openssl = (args: ReadonlyArray<string>, cwd: string) =>
  Effect.async<void, FleetError>((resume) => {
    execFile("openssl", [...args], { cwd, env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" } }, (error, _out, stderr) =>
      resume(
        error === null
          ? Effect.void
          : Effect.fail(setupError(`openssl ${args[0]} failed: ${stderr.trim() || error.message}`))
      ))
  })

/**
 * Throws unless nobody but us (and root) can change what `dir` names: `dir` itself ours, not a symlink and closed to
 * others; every directory above it root's or ours and writable by nobody else (a sticky root-owned one, like /tmp,
 * is fine). Otherwise another user could swap the fleet directory for one holding their own CA and key.
 */
export const assertFleetDirectorySafe = async (dir: string): Promise<void> => {
  const uid = process.geteuid?.()
  const absolute = path.resolve(dir)
  const stats = await fs.lstat(absolute)
  if (!stats.isDirectory()) throw new Error(`${absolute} is not a directory`)
  if (uid !== undefined && stats.uid !== uid) throw new Error(`${absolute} belongs to uid ${stats.uid}, not to this user`)
  if ((stats.mode & 0o077) !== 0) {
    throw new Error(`${absolute} is open to other users (mode ${(stats.mode & 0o777).toString(8)}); chmod 700 it`)
  }
  for (let parent = path.dirname(absolute); ; parent = path.dirname(parent)) {
    const up = await fs.stat(parent)
    const ownerOk = up.uid === 0 || up.uid === uid
    const sticky = (up.mode & 0o1000) !== 0 && up.uid === 0
    if (!ownerOk || ((up.mode & 0o022) !== 0 && !sticky)) {
      throw new Error(
        `${parent} (owner ${up.uid}, mode ${(up.mode & 0o7777).toString(8)}) could be changed by another user, who ` +
          "could swap the fleet directory; every directory above it must be root's or ours and writable by no one else"
      )
    }
    if (parent === path.dirname(parent)) break
  }
}

/** Throws unless `file` is a regular file of ours (not a symlink) that others cannot write (`secret`: nor read). */
const assertFleetFileSafe = async (file: string, secret: boolean): Promise<void> => {
  const uid = process.geteuid?.()
  const stats = await fs.lstat(file)
  if (!stats.isFile()) throw new Error(`${file} is not a regular file`)
  if (uid !== undefined && stats.uid !== uid) throw new Error(`${file} belongs to uid ${stats.uid}, not to this user`)
  if ((stats.mode & (secret ? 0o077 : 0o022)) !== 0) {
    throw new Error(`${file} is ${secret ? "readable" : "writable"} by other users (mode ${(stats.mode & 0o777).toString(8)}); chmod 600 it`)
  }
}

/** Reads the fleet's CA certificate as `fleet tenant` puts it in credentials, after the directory and file checks. */
export const readFleetCa = (dir: string): Promise<string> =>
  assertFleetDirectorySafe(dir)
    .then(() => assertFleetFileSafe(path.join(dir, FLEET_FILES.caCert), false))
    .then(() => fs.readFile(path.join(dir, FLEET_FILES.caCert), "utf8"))

/** The directory for the fleet's files: made 0700 if missing; an existing one must be ours and closed to others. */
const fleetDirectory = (dir: string) =>
  Effect.tryPromise({
    try: async () => {
      await fs.mkdir(dir, { recursive: true, mode: 0o700 })
      await assertFleetDirectorySafe(dir)
    },
    catch: (error) => setupError(`cannot use the fleet directory: ${error instanceof Error ? error.message : String(error)}`)
  })

/**
 * Makes the fleet's CA and one member certificate in `dir` (files 0600, `dir` 0700): `ca.crt`, `ca.key`,
 * `worker.crt`, `worker.key`. The certificate names `hosts` (the addresses clients and workers dial), serves as
 * both TLS server and client, and lasts 825 days; the CA, ten years. Existing files are never overwritten.
 */
export const initFleet = (dir: string, hosts: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<string>, FleetError> =>
  Effect.gen(function*() {
    const names = hosts.length === 0 ? defaultHosts() : hosts
    const alt: Array<string> = []
    for (const host of names) {
      const entry = altName(host)
      if (entry === undefined) return yield* Effect.fail(setupError(`--host ${JSON.stringify(host)} is not a host name or an IP address`))
      alt.push(entry)
    }
    yield* fleetDirectory(dir)
    for (const file of Object.values(FLEET_FILES)) {
      const exists = yield* Effect.promise(() => fs.lstat(path.join(dir, file)).then(() => true, () => false))
      if (exists) return yield* Effect.fail(setupError(`${path.join(dir, file)} exists already; a fleet directory is made once`))
    }
    // Made in a private scratch directory inside `dir`, then moved into place, so a failure leaves no half fleet.
    const work = yield* Effect.promise(() => fs.mkdtemp(path.join(dir, ".init-")))
    yield* Effect.ensuring(
      Effect.gen(function*() {
        yield* Effect.promise(() =>
          fs.writeFile(
            path.join(work, "member.ext"),
            `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n` +
              `extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${alt.join(",")}\n`
          )
        )
        yield* Effect.promise(() =>
          fs.writeFile(path.join(work, FLEET_FILES.metricsToken), `${randomBytes(32).toString("base64url")}\n`, { mode: 0o600 })
        )
        const serial = `0x${randomBytes(16).toString("hex")}`
        yield* openssl([
          "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", FLEET_FILES.caKey, "-out", FLEET_FILES.caCert, "-days", "3650", "-subj", "/CN=native-runner fleet CA",
          "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0", "-addext", "keyUsage=critical,keyCertSign,cRLSign"
        ], work)
        yield* openssl([
          "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", FLEET_FILES.key, "-out", "member.csr", "-subj", "/CN=native-runner fleet member"
        ], work)
        yield* openssl([
          "x509", "-req", "-in", "member.csr", "-CA", FLEET_FILES.caCert, "-CAkey", FLEET_FILES.caKey, "-set_serial", serial,
          "-days", "825", "-sha256", "-extfile", "member.ext", "-out", FLEET_FILES.cert
        ], work)
        yield* Effect.promise(async () => {
          for (const file of Object.values(FLEET_FILES)) {
            await fs.chmod(path.join(work, file), 0o600)
            await fs.rename(path.join(work, file), path.join(dir, file))
          }
        })
      }),
      Effect.promise(() => fs.rm(work, { recursive: true, force: true }))
    )
    return names
  })

/**
 * Reads a member's TLS material from the fleet directory. The key must be closed to other users (like ssh's), and
 * the CA's key need not be there (a worker does not need it).
 */
export const loadFleetTls = (dir: string): Effect.Effect<FleetTls, FleetError> =>
  Effect.tryPromise({
    try: async () => {
      const keyFile = path.join(dir, FLEET_FILES.key)
      await assertFleetDirectorySafe(dir)
      await assertFleetFileSafe(keyFile, true)
      await assertFleetFileSafe(path.join(dir, FLEET_FILES.caCert), false)
      await assertFleetFileSafe(path.join(dir, FLEET_FILES.cert), false)
      const [ca, cert, key] = await Promise.all([
        fs.readFile(path.join(dir, FLEET_FILES.caCert)),
        fs.readFile(path.join(dir, FLEET_FILES.cert)),
        fs.readFile(keyFile)
      ])
      const tokenFile = path.join(dir, FLEET_FILES.metricsToken)
      const token = await fs.lstat(tokenFile).then(async () => {
        await assertFleetFileSafe(tokenFile, true)
        return (await fs.readFile(tokenFile, "utf8")).trim()
      }, () => undefined)
      return { ca, cert, key, metricsTokenHash: token === undefined ? undefined : sha256(token) }
    },
    catch: (error) =>
      setupError(
        `the fleet's certificate could not be read from ${dir} (make it with 'native-runner fleet init ${dir}'): ` +
          (error instanceof Error ? error.message : String(error))
      )
  })
