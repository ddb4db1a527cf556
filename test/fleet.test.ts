/**
 * The fleet for real: a PostgreSQL started here (initdb + pg_ctl, as the postgres user when root), three worker
 * processes of the real bin started at once on the fresh database (so they race on schema creation), and clients:
 * the CLI (`run --cluster`) and the library (`NativeRunnerCluster.layerClient`). In CI (CI=true) the suite must run;
 * elsewhere it is skipped, saying why, when the PostgreSQL server is not installed.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as NativeRunner from "../src/NativeRunner.js"
import * as NativeRunnerCluster from "../src/NativeRunnerCluster.js"
import { freePort, postgresBin, startPostgres, type TestPostgres } from "../bench/lib/postgres.js"
import { isAlive } from "./helpers/escape.js"
import { attack, type Transport } from "./helpers/fleetAttack.js"

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const inCI = process.env["CI"] === "true"
const runs = inCI || postgresBin() !== undefined
if (!runs) console.warn("fleet tests not run: no PostgreSQL server binaries (apt-get install postgresql)")

const decoder = new TextDecoder()
const text = (bytes: Uint8Array) => decoder.decode(bytes)

interface Worker {
  readonly process: ChildProcess
  readonly pid: number
  readonly listen: number
  readonly health: number
  log: string
}

let tmp = ""
let pg: TestPostgres
let pgStopped = false
let BIN = ""
let FLEET = ""
const workers: Array<Worker> = []

const startWorker = async (): Promise<Worker> => {
  const [listen, health] = [await freePort(), await freePort()]
  const child = spawn(process.execPath, [
    BIN, "worker", "--listen", `127.0.0.1:${listen}`, "--fleet-dir", FLEET, "--health", `127.0.0.1:${health}`, "--grace", "5s",
    "--audit-log", path.join(tmp, `audit-${listen}.jsonl`)
  ], { env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", NATIVE_RUNNER_DATABASE_URL: pg.url }, stdio: ["ignore", "pipe", "pipe"] })
  const worker: Worker = { process: child, pid: child.pid ?? -1, listen, health, log: "" }
  child.stdout?.on("data", (chunk: Buffer) => (worker.log += chunk.toString()))
  child.stderr?.on("data", (chunk: Buffer) => (worker.log += chunk.toString()))
  workers.push(worker)
  return worker
}

const healthOf = async (worker: Worker): Promise<number | undefined> => {
  try {
    return (await fetch(`http://127.0.0.1:${worker.health}/health`)).status
  } catch {
    return undefined
  }
}

const until = async (what: string, check: () => Promise<boolean> | boolean, ms: number) => {
  const end = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** The CLI as a client: exit code, stdout and stderr. */
const cli = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<{ code: number | null; out: string; err: string; ms: number }>((resolve) => {
    const started = Date.now()
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let out = ""
    let err = ""
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()))
    child.on("close", (code) => resolve({ code, out, err, ms: Date.now() - started }))
  })

/** The parent pid of `pid`, from /proc. */
const parentOf = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
  } catch {
    return undefined
  }
}

/** The worker whose process tree holds `pid`. */
const workerOf = (pid: number): Worker | undefined => {
  for (let p: number | undefined = pid; p !== undefined && p > 1; p = parentOf(p)) {
    const found = workers.find((w) => w.pid === p)
    if (found !== undefined) return found
  }
  return undefined
}


const lines = (file: string) => (existsSync(file) ? readFileSync(file, "utf8").split("\n").filter((l) => l !== "") : [])

const client = (tenant: string, spread = 16) =>
  NativeRunnerCluster.layerClient({ databaseUrl: pg.url, fleetDir: FLEET, tenant, spread })

describe.runIf(runs)("the fleet on PostgreSQL (3 workers, CLI and library clients)", () => {
  beforeAll(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), "enr-fleet-"))
    execFileSync(process.execPath, [path.join(ROOT, "bench", "build-bin.mjs"), "--outdir", path.join(tmp, "dist")])
    BIN = path.join(tmp, "dist", "bin.js")
    FLEET = path.join(tmp, "fleet")
    execFileSync(process.execPath, [BIN, "fleet", "init", FLEET], { stdio: "ignore" })
    pg = await startPostgres()
    // Started together on an empty database: schema creation must not race.
    const started = await Promise.all([startWorker(), startWorker(), startWorker()])
    await until("three healthy workers", async () => (await Promise.all(started.map(healthOf))).every((s) => s === 200), 60_000)
  }, 120_000)

  afterAll(async () => {
    for (const worker of workers) worker.process.kill("SIGKILL")
    await new Promise((resolve) => setTimeout(resolve, 200))
    if (!pgStopped) pg?.stop()
    rmSync(tmp, { recursive: true, force: true })
  })

  it("workers started together on an empty database all come up (no schema race)", () => {
    for (const worker of workers) expect(worker.log).not.toMatch(/duplicate key|already exists|Error/i)
    expect(workers).toHaveLength(3)
  })

  it("run --cluster: the remote command's stdout, stderr and exit code, as a local run", async () => {
    const ran = await cli(["run", "--fleet-dir", FLEET, "--cluster", pg.url, "--", "sh", "-c", "printf out; printf err >&2; exit 7"])
    expect(ran).toMatchObject({ code: 7, out: "out", err: "err" })
    const env = await cli(["run", "--fleet-dir", FLEET, "--cluster", "env", "--", "sh", "-c", "echo ok"], { NATIVE_RUNNER_DATABASE_URL: pg.url })
    expect(env).toMatchObject({ code: 0, out: "ok\n" })
  })

  it("run --cluster --timeout: exit 124 and the timeout notice, the remote tree killed", async () => {
    const marker = path.join(tmp, "timeout-marker")
    const ran = await cli([
      "run", "--fleet-dir", FLEET, "--cluster", pg.url, "--timeout", "500ms", "--kill-grace", "200ms", "--",
      "sh", "-c", `echo $$ > ${marker}; sleep 30`
    ])
    expect(ran.code).toBe(124)
    expect(ran.err).toMatch(/timed out after 500ms/)
    const [pid] = lines(marker).map(Number)
    expect(pid).toBeGreaterThan(1)
    expect(isAlive(pid!)).toBe(false)
  })

  it("a password on the command line is refused before anything is sent (exit 2), and never echoed", async () => {
    const ran = await cli(["run", "--fleet-dir", FLEET, "--cluster", "postgres://runner:hunter2@127.0.0.1:1/x", "--", "true"])
    expect(ran.code).toBe(2)
    expect(ran.err).toMatch(/password on the command line/)
    expect(ran.err).not.toMatch(/hunter2/)
  })

  it("50 concurrent library execs spread over the workers, each with its own output", async () => {
    const results = await Effect.runPromise(
      Effect.forEach(
        Array.from({ length: 50 }, (_, i) => i),
        (i) => NativeRunner.exec({ argv: ["sh", "-c", `sleep 0.2; echo run-${i}`] }),
        { concurrency: 50 }
      ).pipe(Effect.provide(client("spread")))
    )
    expect(results.map((r) => text(r.stdout))).toEqual(Array.from({ length: 50 }, (_, i) => `run-${i}\n`))
    expect(results.every((r) => r.exitCode === 0)).toBe(true)
    // Each worker wrote an audit line per run it ran (--audit-log on the worker).
    const audited = readdirSync(tmp).filter((f) => f.startsWith("audit-")).flatMap((f) => lines(path.join(tmp, f)))
    const runIds = new Set(results.map((r) => r.audits[0]?.runId))
    expect(audited.filter((line) => runIds.has(JSON.parse(line).runId))).toHaveLength(50)
    const used = new Set(results.map((r) => r.worker))
    expect(used.size).toBeGreaterThanOrEqual(2)
    for (const worker of used) expect(workers.some((w) => worker?.endsWith(`:${w.pid}`))).toBe(true)
  })

  it("a repeated request id returns the stored result; the command ran once", async () => {
    const marker = path.join(tmp, "repeat-marker")
    const once = NativeRunnerCluster.withRequestId(
      "repeat-1",
      NativeRunner.exec({ argv: ["sh", "-c", `echo ran >> ${marker}; echo $$`] })
    )
    const [a, b] = await Effect.runPromise(Effect.all([once, once]).pipe(Effect.provide(client("repeat"))))
    expect(text(a!.stdout)).toBe(text(b!.stdout))
    expect(lines(marker)).toEqual(["ran"])
    const cliRepeat = await cli(["run", "--fleet-dir", FLEET, "--cluster", pg.url, "--tenant", "repeat", "--request-id", "repeat-1", "--", "false"])
    expect(cliRepeat).toMatchObject({ code: 0, out: a ? text(a.stdout) : "" })
    expect(lines(marker)).toEqual(["ran"])
  })

  it("each worker serves its metrics in Prometheus format", async () => {
    const bodies = await Promise.all(workers.map(async (w) => (await fetch(`http://127.0.0.1:${w.health}/metrics`)).text()))
    const all = bodies.join("\n")
    expect(all).toMatch(/^native_runner_fleet_requests_total\{outcome="ran"\} \d+$/m)
    expect(all).toMatch(/^native_runner_fleet_requests_total\{outcome="repeat"\} \d+$/m)
    expect(all).toMatch(/^native_runner_execs_total\{outcome="ok"\} \d+$/m)
    expect(all).toMatch(/^# TYPE native_runner_exec_duration_ms histogram$/m)
  })

  it("the runner-RPC attack: without a certificate from the fleet's CA, nothing on any worker port runs or answers", async () => {
    // The attacker's own "fleet": a CA and a certificate that are not the fleet's.
    const other = path.join(tmp, "other-fleet")
    execFileSync(process.execPath, [BIN, "fleet", "init", other], { stdio: "ignore" })
    const material = (dir: string) => ({
      ca: readFileSync(path.join(dir, "ca.crt")),
      cert: readFileSync(path.join(dir, "worker.crt")),
      key: readFileSync(path.join(dir, "worker.key"))
    })
    const foreign = material(other)
    const transports: ReadonlyArray<readonly [string, Transport]> = [
      ["plain TCP", { _tag: "plain" }],
      ["TLS without a certificate", { _tag: "tls" }],
      ["TLS with a certificate from another CA", { _tag: "tls", cert: foreign.cert, key: foreign.key }],
      ["TLS with another CA's certificate, trusting that CA", { _tag: "tls", ...foreign }]
    ]
    const marker = path.join(tmp, "attack-marker")
    const live = workers.filter((w) => w.process.exitCode === null && w.process.signalCode === null)
    expect(live.length).toBe(3)
    for (const worker of live) {
      for (const port of [worker.listen, worker.health]) {
        for (const [name, transport] of transports) {
          const outcome = await Effect.runPromise(attack(transport, "127.0.0.1", port, ["sh", "-c", `echo ${name.replace(/ /g, "_")} >> ${marker}`]))
          expect({ name, port, ...outcome }).toMatchObject({ name, port, answered: 0, ran: 0, pinged: false })
          // Refused by the transport, not by a worker that read the request.
          expect(outcome.failures).toEqual(["connection"])
        }
      }
    }
    expect(lines(marker)).toEqual([])
    // The control: the same attack code with the fleet's own certificate is a member, and its Exec runs.
    const fleet = material(FLEET)
    const member = await Effect.runPromise(
      attack({ _tag: "tls", ...fleet }, "127.0.0.1", live[0]!.listen, ["sh", "-c", `echo member >> ${marker}`])
    )
    expect(member.pinged).toBe(true)
    expect(member.answered).toBeGreaterThan(0)
    expect(lines(marker).length).toBeGreaterThan(0)
    expect(new Set(lines(marker))).toEqual(new Set(["member"]))
  }, 120_000)

  it("a worker without its certificate does not start, and run --cluster needs --fleet-dir (exit 2)", async () => {
    const empty = mkdtempSync(path.join(tmp, "no-fleet-"))
    const port = await freePort()
    const worker = await new Promise<{ code: number | null; err: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, "worker", "--listen", `127.0.0.1:${port}`, "--fleet-dir", empty], {
        env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", NATIVE_RUNNER_DATABASE_URL: pg.url },
        stdio: ["ignore", "ignore", "pipe"]
      })
      let err = ""
      child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()))
      child.on("close", (code) => resolve({ code, err }))
    })
    expect(worker.code).toBe(125)
    expect(worker.err).toMatch(/fleet init/)
    const noFlag = await cli(["worker", "--listen", `127.0.0.1:${port}`], { NATIVE_RUNNER_DATABASE_URL: pg.url })
    expect(noFlag.code).toBe(2)
    expect(noFlag.err).toMatch(/fleet-dir/)
    const client = await cli(["run", "--cluster", pg.url, "--", "true"])
    expect(client.code).toBe(2)
    expect(client.err).toMatch(/--fleet-dir/)
  }, 60_000)

  it("SIGTERM: the worker stops taking work and lets a run in flight finish within the grace", async () => {
    const marker = path.join(tmp, "term-marker")
    const run = Effect.runPromise(
      NativeRunner.exec({ argv: ["sh", "-c", `echo $$ > ${marker}; sleep 2; echo finished`] }).pipe(
        Effect.provide(client("term", 1))
      )
    )
    await until("the run to start", () => lines(marker).length === 1, 20_000)
    const owner = workerOf(Number(lines(marker)[0]))
    expect(owner).toBeDefined()
    owner!.process.kill("SIGTERM")
    await until("the worker to report draining (503)", async () => (await healthOf(owner!)) === 503, 10_000)
    // Sent while it drains, to the same pinned tenant: taken by another worker.
    const later = await Effect.runPromise(
      NativeRunner.exec({ argv: ["sh", "-c", "echo later"] }).pipe(Effect.provide(client("term", 1)))
    )
    expect(text(later.stdout)).toBe("later\n")
    expect(later.worker?.endsWith(`:${owner!.pid}`)).toBe(false)
    const result = await run
    expect(result).toMatchObject({ exitCode: 0, timedOut: false })
    expect(text(result.stdout)).toBe("finished\n")
    await until("the worker to exit", () => owner!.process.exitCode !== null || owner!.process.signalCode !== null, 30_000)
  })

  it("a worker SIGKILLed mid-run: the run fails with WorkerLost, ran once, its process is gone; a repeat fails the same", async () => {
    const marker = path.join(tmp, "kill-marker")
    const lostRun = NativeRunnerCluster.withRequestId(
      "lost-1",
      NativeRunner.exec({ argv: ["sh", "-c", `echo $$ >> ${marker}; sleep 60`] })
    ).pipe(Effect.provide(client("lost", 1)))
    const pending = Effect.runPromiseExit(lostRun)
    await until("the run to start", () => lines(marker).length === 1, 20_000)
    const pid = Number(lines(marker)[0])
    const owner = workerOf(pid)
    expect(owner).toBeDefined()
    const killedAt = Date.now()
    owner!.process.kill("SIGKILL")
    const exit = await pending
    const tookMs = Date.now() - killedAt
    expect(Exit.isFailure(exit)).toBe(true)
    if (Exit.isFailure(exit)) {
      expect(JSON.stringify(exit.cause)).toMatch(/"reason":"WorkerLost"/)
    }
    expect(tookMs).toBeLessThan(40_000)
    expect(isAlive(pid)).toBe(false)
    const again = await Effect.runPromiseExit(lostRun)
    expect(Exit.isFailure(again) && JSON.stringify(again.cause)).toMatch(/"reason":"WorkerLost"/)
    const viaCli = await cli(["run", "--fleet-dir", FLEET, "--cluster", pg.url, "--tenant", "lost", "--request-id", "lost-1", "--", "true"])
    expect(viaCli.code).toBe(125)
    expect(viaCli.err.trim().split("\n")).toHaveLength(1)
    expect(viaCli.err).toMatch(/lost-1 did not finish/)
    expect(lines(marker)).toHaveLength(1)
  }, 90_000)
  it("PostgreSQL gone: a run fails at once with FleetError Storage and nothing runs; a new client cannot join", async () => {
    const marker = path.join(tmp, "db-marker")
    const runtime = ManagedRuntime.make(client("db"))
    try {
      const before = await runtime.runPromise(NativeRunner.exec({ argv: ["echo", "up"] }))
      expect(text(before.stdout)).toBe("up\n")
      pg.stop()
      pgStopped = true
      const started = Date.now()
      const exit = await runtime.runPromiseExit(NativeRunner.exec({ argv: ["sh", "-c", `echo ran > ${marker}`] }))
      expect(Exit.isFailure(exit) && JSON.stringify(exit.cause)).toMatch(/"reason":"Storage"/)
      expect(Date.now() - started).toBeLessThan(10_000)
      expect(existsSync(marker)).toBe(false)
      const fresh = await Effect.runPromiseExit(NativeRunner.exec({ argv: ["true"] }).pipe(Effect.provide(client("db"))))
      expect(Exit.isFailure(fresh) && JSON.stringify(fresh.cause)).toMatch(/"reason":"Unavailable"/)
      expect(JSON.stringify(Exit.isFailure(fresh) ? fresh.cause : "")).not.toContain(pg.url)
      // A worker told to stop cannot release its shards without the database: it exits by its deadline (grace 5 s
      // + 15 s), with its commands.
      const alive = workers.filter((w) => w.process.exitCode === null && w.process.signalCode === null)
      expect(alive.length).toBeGreaterThan(0)
      const stopping = alive[0]!
      const signalled = Date.now()
      stopping.process.kill("SIGTERM")
      await until("the worker to exit", () => stopping.process.exitCode !== null || stopping.process.signalCode !== null, 40_000)
      expect(stopping.process.exitCode).toBe(143)
      expect(Date.now() - signalled).toBeLessThan(30_000)
    } finally {
      await runtime.dispose()
    }
  }, 60_000)
})
