/**
 * A worker runs commands nobody here wrote, for every tenant. The attack: a tenant's command reads the worker's
 * secrets (the database URL with its password from /proc/PID/environ or the URL file, the fleet's CA key, the worker's
 * key, other tenants' credentials files) and checks whether it is root. Run against a worker started the old way
 * (`--sandbox none`, now only with `--allow-unsandboxed`) it gets all of them; against a worker started the new way
 * (the default `--sandbox bwrap --workspace DIR`, URL from a 0600 `--database-url-file`) it gets none. Then the
 * refusals that keep a worker from starting the old way by accident (exit 2, before anything is reached).
 *
 * Needs PostgreSQL's server binaries and bubblewrap; in CI (CI=true) both must be there and the suite runs.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { chmodSync, readFileSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as NativeRunner from "../src/NativeRunner.js"
import * as NativeRunnerCluster from "../src/NativeRunnerCluster.js"
import { freePort, postgresBin, startPostgres, type TestPostgres } from "../bench/lib/postgres.js"
import { scratchDir } from "./helpers/tempDirs.js"

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const inCI = process.env["CI"] === "true"
const hasBwrap = (() => {
  try {
    execFileSync("bwrap", ["--version"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()
const runs = inCI || (postgresBin() !== undefined && hasBwrap)
if (!runs) console.warn("worker policy tests not run: they need PostgreSQL's server binaries and bubblewrap")

const PATH = process.env["PATH"] ?? "/usr/bin:/bin"
const PASSWORD = "S3cretPw-worker-policy"

let tmp = ""
let BIN = ""
let FLEET = ""
let pg: TestPostgres
const children: Array<ChildProcess> = []

/** The bin's exit code and output; `env` replaces the environment (PATH kept). */
const cli = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()))
    child.on("close", (code) => resolve({ code, out, err }))
  })

/** A database of its own (one fleet each), its URL with the password (trust authentication ignores it). */
const database = (name: string) => {
  execFileSync(path.join(postgresBin()!, "psql"), ["-h", "127.0.0.1", "-p", String(pg.port), "-U", "runner", "-d", "postgres", "-c", `create database ${name}`], { stdio: "ignore" })
  return `postgres://runner:${PASSWORD}@127.0.0.1:${pg.port}/${name}`
}

/** A worker of the bin with `args`, its client endpoint once /health says 200. */
const startWorker = async (url: string, args: ReadonlyArray<string>, env: Record<string, string>) => {
  const [listen, client, health] = [await freePort(), await freePort(), await freePort()]
  const child = spawn(process.execPath, [
    BIN, "worker", "--listen", `127.0.0.1:${listen}`, "--client-listen", `127.0.0.1:${client}`, "--fleet-dir", FLEET,
    "--health", `127.0.0.1:${health}`, ...args
  ], { env: { PATH, ...env }, stdio: ["ignore", "ignore", "pipe"] })
  children.push(child)
  let log = ""
  child.stderr?.on("data", (chunk: Buffer) => (log += chunk.toString()))
  const end = Date.now() + 60_000
  for (;;) {
    const status = await fetch(`http://127.0.0.1:${health}/health`).then((r) => r.status, () => undefined)
    if (status === 200) break
    if (child.exitCode !== null || Date.now() > end) throw new Error(`worker did not come up: ${log}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return { endpoint: `https://127.0.0.1:${client}`, process: child, url, log: () => log }
}

/** Registers `tenant` in the fleet at `url` and returns its credentials file. */
const tenant = (name: string, url: string, fleetDir = FLEET) => {
  execFileSync(process.execPath, [BIN, "fleet", "tenant", name, "--fleet-dir", fleetDir], {
    env: { PATH, NATIVE_RUNNER_DATABASE_URL: url },
    stdio: "ignore"
  })
  return path.join(fleetDir, `${name}.credentials`)
}

/** What a hostile tenant's command tries: every secret of the worker it can name, and who it is. */
const attack = (urlFile: string, otherCredentials: string) => [
  "sh",
  "-c",
  [
    "echo uid=$(id -u)",
    "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep -a postgres://; done",
    `cat ${FLEET}/ca.key ${FLEET}/worker.key ${otherCredentials} ${urlFile} 2>/dev/null`,
    "true"
  ].join("; ")
]

describe.runIf(runs)("the worker's policy (PostgreSQL, bubblewrap, worker processes of the bin)", () => {
  beforeAll(async () => {
    tmp = scratchDir("enr-fleet-policy-")
    // Searchable, so the bin can be started as another uid (the fleet directory inside stays 0700, files 0600).
    chmodSync(tmp, 0o755)
    execFileSync(process.execPath, [path.join(ROOT, "bench", "build-bin.mjs"), "--outdir", path.join(tmp, "dist")])
    BIN = path.join(tmp, "dist", "bin.js")
    FLEET = path.join(tmp, "fleet")
    execFileSync(process.execPath, [BIN, "fleet", "init", FLEET], { stdio: "ignore" })
    pg = await startPostgres()
  }, 120_000)

  afterAll(async () => {
    for (const child of children) child.kill("SIGKILL")
    await new Promise((resolve) => setTimeout(resolve, 200))
    pg?.stop()
  })

  describe("a worker's tenants cannot reach its secrets", () => {
  it("unsandboxed (--sandbox none --allow-unsandboxed, the old default): a tenant's command reads every secret, as root", async () => {
    const url = database("unsandboxed")
    const urlFile = path.join(tmp, "unsandboxed.url")
    writeFileSync(urlFile, url, { mode: 0o600 })
    const worker = await startWorker(url, ["--sandbox", "none", "--allow-unsandboxed"], { NATIVE_RUNNER_DATABASE_URL: url })
    const bob = tenant("bob-unsandboxed", url)
    const mallory = tenant("mallory-unsandboxed", url)
    const result = await Effect.runPromise(NativeRunner.exec({ argv: attack(urlFile, bob) }).pipe(
      Effect.provide(NativeRunnerCluster.layerClient({ url: worker.endpoint, credentials: mallory }))
    ))
    const out = new TextDecoder().decode(result.stdout)
    // The probe works: this is what the sandbox has to stop.
    expect(out).toContain(PASSWORD)
    expect(out).toContain("PRIVATE KEY")
    expect(out).toContain(JSON.parse(readFileSync(bob, "utf8")).token)
    if (process.getuid?.() === 0) expect(out).toMatch(/^uid=0$/m)
    worker.process.kill("SIGTERM")
  }, 120_000)

  it("sandboxed (the default): the same command gets no password, no key, no other tenant's token, and is not root", async () => {
    const url = database("sandboxed")
    const urlFile = path.join(tmp, "sandboxed.url")
    writeFileSync(urlFile, url, { mode: 0o600 })
    // The sandbox user must be able to reach its workspace: a parent it can search.
    const parent = scratchDir("enr-policy-jobs-")
    chmodSync(parent, 0o755)
    const workspace = execFileSync(process.execPath, [BIN, "workspace", "new", parent], { encoding: "utf8" }).trim()
    // The URL is in the worker's file and, to make it harder, in its environment too.
    const worker = await startWorker(url, ["--workspace", workspace, "--database-url-file", urlFile], { NATIVE_RUNNER_DATABASE_URL: url })
    const bob = tenant("bob-sandboxed", url)
    const mallory = tenant("mallory-sandboxed", url)
    const result = await Effect.runPromise(NativeRunner.exec({ argv: attack(urlFile, bob) }).pipe(
      Effect.provide(NativeRunnerCluster.layerClient({ url: worker.endpoint, credentials: mallory })),
      Effect.tapErrorCause(() => Effect.sync(() => console.error(worker.log())))
    ))
    const out = new TextDecoder().decode(result.stdout)
    expect(result.exitCode).toBe(0)
    expect(out).toMatch(/^uid=\d+$/m)
    expect(out).not.toMatch(/^uid=0$/m)
    expect(out).not.toContain(PASSWORD)
    expect(out).not.toContain("postgres://")
    expect(out).not.toContain("PRIVATE KEY")
    expect(out).not.toContain(JSON.parse(readFileSync(bob, "utf8")).token)
    // And it does run, sandboxed: it writes its workspace.
    const wrote = await Effect.runPromise(NativeRunner.exec({ argv: ["sh", "-c", "echo hi > /workspace/f && cat /workspace/f"] }).pipe(
      Effect.provide(NativeRunnerCluster.layerClient({ url: worker.endpoint, credentials: mallory }))
    ))
    expect(new TextDecoder().decode(wrote.stdout)).toBe("hi\n")
    worker.process.kill("SIGTERM")
  }, 120_000)
})

  it("--retention: a finished run's stored outcome is deleted after it; the id is then new again", async () => {
    const url = database("retention")
    const worker = await startWorker(url, ["--sandbox", "none", "--allow-unsandboxed", "--retention", "1s"], { NATIVE_RUNNER_DATABASE_URL: url })
    const credentials = tenant("keeper", url)
    const marker = path.join(tmp, "retention-marker")
    const run = NativeRunnerCluster.withRequestId("kept-1", NativeRunner.exec({ argv: ["sh", "-c", `echo ran >> ${marker}; echo out`] })).pipe(
      Effect.provide(NativeRunnerCluster.layerClient({ url: worker.endpoint, credentials }))
    )
    const rows = () =>
      execFileSync(path.join(postgresBin()!, "psql"), ["-h", "127.0.0.1", "-p", String(pg.port), "-U", "runner", "-d", "retention", "-At", "-c",
        "SELECT count(*) FROM native_runner_claims WHERE tenant = 'keeper'"], { encoding: "utf8" }).trim()
    await Effect.runPromise(run)
    await Effect.runPromise(run)
    expect(readFileSync(marker, "utf8")).toBe("ran\n") // a repeat within the retention: answered, not run
    expect(rows()).toBe("1")
    const end = Date.now() + 15_000
    while (rows() !== "0") {
      if (Date.now() > end) throw new Error("the claim was not swept within 15 s")
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    await Effect.runPromise(run)
    expect(readFileSync(marker, "utf8")).toBe("ran\nran\n")
    worker.process.kill("SIGTERM")
  }, 120_000)

  describe("a worker does not start the unsafe way by accident (exit 2, nothing reached)", () => {
  const refused = async (args: ReadonlyArray<string>, env: Record<string, string> = {}) => {
    const port = await freePort()
    const ran = await cli(["worker", "--listen", `127.0.0.1:${port}`, "--fleet-dir", FLEET, ...args], env)
    expect(ran.code).toBe(2)
    expect(ran.err).not.toContain(PASSWORD)
    return ran.err
  }
  const env = () => ({ NATIVE_RUNNER_DATABASE_URL: `postgres://runner:${PASSWORD}@127.0.0.1:1/x` })

  it("--sandbox none without --allow-unsandboxed; bwrap without --workspace; --allow-unsandboxed with bwrap", async () => {
    expect(await refused(["--sandbox", "none"], env())).toMatch(/--allow-unsandboxed/)
    expect(await refused([], env())).toMatch(/--sandbox bwrap needs --workspace/)
    expect(await refused(["--workspace", tmp, "--allow-unsandboxed"], env())).toMatch(/goes with --sandbox none only/)
  }, 60_000)

  it("a password in the URL's query string on the command line; a sandboxed worker that is not root", async () => {
    const ws = scratchDir("enr-policy-ws-")
    for (const query of [`password=${PASSWORD}`, `sslpassword=${PASSWORD}`]) {
      expect(await refused(["--workspace", ws, "--database-url", `postgres://runner@127.0.0.1:1/x?${query}`]))
        .toMatch(/a password on the command line/)
    }
    // As another uid the sandbox would run tenants' commands as that uid, which can read the worker's own secrets.
    const asNobody = await new Promise<{ code: number | null; err: string }>((resolve) => {
      const child = spawn("setpriv", ["--reuid", "65534", "--regid", "65534", "--clear-groups", process.execPath, BIN, "worker",
        "--listen", "127.0.0.1:1", "--fleet-dir", FLEET, "--workspace", ws], { env: { PATH, ...env() }, stdio: ["ignore", "ignore", "pipe"] })
      let err = ""
      child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()))
      child.on("close", (code) => resolve({ code, err }))
    })
    if (process.getuid?.() === 0) {
      expect(asNobody.code).toBe(2)
      expect(asNobody.err).toMatch(/as uid 65534 runs tenants' commands as this same uid/)
    }
  }, 60_000)

  it("a workspace that is /, holds the fleet directory or lies in it", async () => {
    expect(await refused(["--workspace", "/"], env())).toMatch(/whole host/)
    // An unset shell variable (--workspace "$WS") is not the current directory.
    expect(await refused(["--workspace", ""], env())).toMatch(/--workspace: empty/)
    expect(await refused(["--workspace", tmp], env())).toMatch(/fleet directory/)
    const inside = path.join(FLEET, "work")
    expect(await refused(["--workspace", inside], env())).toMatch(/fleet directory/)
    // A workspace the sandbox user cannot write (root's, 0755): refused at start, not on each tenant's first run.
    const rootOwned = scratchDir("enr-policy-rootws-")
    chmodSync(rootOwned, 0o755)
    if (process.getuid?.() === 0) expect(await refused(["--workspace", rootOwned], env())).toMatch(/65534:65534 cannot write/)
  }, 60_000)

  it("--database-url-file open to others, a symlink, missing, or given with --database-url", async () => {
    const open = path.join(tmp, "open.url")
    writeFileSync(open, `postgres://runner:${PASSWORD}@127.0.0.1:1/x`)
    chmodSync(open, 0o644)
    const ws = scratchDir("enr-policy-ws-")
    expect(await refused(["--workspace", ws, "--database-url-file", open])).toMatch(/open to others \(mode 0644\)/)
    const link = path.join(tmp, "link.url")
    execFileSync("ln", ["-s", open, link])
    expect(await refused(["--workspace", ws, "--database-url-file", link])).toMatch(/is a symlink/)
    expect(await refused(["--workspace", ws, "--database-url-file", path.join(tmp, "missing.url")])).toMatch(/cannot be read/)
    chmodSync(open, 0o600)
    expect(await refused(["--workspace", ws, "--database-url-file", open, "--database-url", "postgres://runner@127.0.0.1:1/x"]))
      .toMatch(/give one of them/)
    // A file inside the workspace is refused too: the tenants' commands could read it there.
    const inWorkspace = path.join(ws, "db.url")
    writeFileSync(inWorkspace, `postgres://runner:${PASSWORD}@127.0.0.1:1/x`, { mode: 0o600 })
    expect(await refused(["--workspace", ws, "--database-url-file", inWorkspace])).toMatch(/database URL file/)
  }, 60_000)
})
})
